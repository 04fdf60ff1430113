"""``musicdistill run``: the main job, every stage in order, skipping what is up to date."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from musicdistill.commands.common import (
    ConfigReads,
    add_positional_config_args,
    add_report_to,
    positional_config,
)
from musicdistill.pipeline.main_job import main_job_stages
from musicdistill.pipeline.report import REPORT_FILE
from musicdistill.pipeline.report_inputs import demo_command
from musicdistill.pipeline.runner import run_stages

#: every section but listening; the quality and diversity stages set distill.beta and distill.mode
READS = ConfigReads(
    "musicdistill run",
    ("*",),
    ignores=("listening", "distill.beta", "distill.mode"),
    instead=(
        (
            "distill.beta",
            "the main job trains every student of run.students with its own beta: write "
            "run.students.diversity.beta={value}",
        ),
        (
            "distill.mode",
            "the main job distils on-policy, and also offline (distill.mode=teacher, beta 0) into "
            "<run>/offline with run.compare_offline=true: write run.compare_offline=true",
        ),
        (
            "listening",
            "the main job exports no listening test: run `musicdistill listening export` with this override",
        ),
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the main job (every stage in order; up-to-date stages are skipped)",
        description=(
            "Run every stage of the main job into <runs_dir>/<name>/. A stage whose outputs exist and "
            "whose config (and upstream stages) are unchanged is skipped; an interrupted stage resumes."
        ),
    )
    p.add_argument(
        "--force", action="append", default=[], metavar="STAGE", help="rerun this stage (repeatable)"
    )
    p.add_argument(
        "--only", action="append", default=[], metavar="STAGE", help="run only this stage (repeatable)"
    )
    p.add_argument("--list", action="store_true", help="list the stages and exit")
    p.set_defaults(func=_run)
    add_positional_config_args(p, READS)
    add_report_to(p)


def _run(args: argparse.Namespace) -> int:
    cfg, _, _ = positional_config(args, READS)
    stages = main_job_stages(cfg)
    if args.list:
        for s in stages:
            print(f"{s.name:12s} {s.doc}")
        return 0
    results = run_stages(cfg, stages, force=tuple(args.force), only=tuple(args.only))
    print(f"\nrun folder: {cfg.run_dir}")
    for r in results:
        state = f"skipped ({r.reason})" if r.skipped else f"{r.seconds:7.1f} s"
        print(f"  {r.name:12s} {state}")
    _print_next_steps(cfg.run_dir)
    return 0


def _print_next_steps(run_dir: Path) -> None:
    """Where the report is and how to open the demo on this run's checkpoints (what exists so far)."""
    report = run_dir / REPORT_FILE
    if report.is_file():
        print(f"\nreport: {report}  (rewrite it with: musicdistill report {shlex.quote(str(run_dir))})")
    demo = demo_command(run_dir)
    if demo:
        print(f"demo:   {demo}")
