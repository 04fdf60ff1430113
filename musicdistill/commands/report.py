"""``musicdistill report``: (re)write a run's self-contained HTML report, ``<run>/report.html``."""

from __future__ import annotations

import argparse
from pathlib import Path

from musicdistill.pipeline.report import write_report
from musicdistill.pipeline.report_inputs import demo_command, run_claims

DESCRIPTION = """\
Write RUN_DIR/report.html from what the main job left in RUN_DIR: the claims table (C1-C5 checked
against evaluate/metrics.json), the quality-diversity plot, every system's metrics with 95 %
intervals and inference cost, training curves, audio players (the same prompts across systems) and
stage timings. Images and audio are embedded, so the file stands alone. Stages that have not run
show as "not run". The main job writes the report itself (its last stage); this command rewrites it,
e.g. after an upgrade of musicdistill or for a run folder copied from another machine."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's self-contained HTML report (claims, metrics, curves, audio)",
        description=DESCRIPTION,
        epilog="example:\n  musicdistill report runs/default",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a 'musicdistill run' (e.g. runs/default)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    path = write_report(run_dir)
    for claim in run_claims(run_dir):
        print(f"  {claim.id}: {claim.verdict}")
    print(f"report: {path}")
    demo = demo_command(run_dir)
    if demo:
        print(f"demo:   {demo}")
    return 0
