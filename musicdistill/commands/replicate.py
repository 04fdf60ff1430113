"""``musicdistill replicate``: the main job once per seed (every seed changed), then the pooled report."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from musicdistill.commands.common import add_positional_config_args, add_report_to, positional_config
from musicdistill.commands.run import READS as RUN_READS
from musicdistill.config import config_keys
from musicdistill.pipeline.replicate import (
    DEVELOPMENT_SEEDS_FROM,
    MARKDOWN_FILE,
    POOLED_FILE,
    REPORT_FILE,
    SEED_KEY,
    analyze,
    missing_runs,
    parse_seeds,
    replicate,
    replicate_dir,
)

#: the seed keys replicate sets itself (every section's ``seed``)
SEED_KEYS = tuple(k for k in config_keys() if k.rpartition(".")[2] == SEED_KEY)

#: what the main job reads, less the seeds, which --seeds sets
READS = dataclasses.replace(
    RUN_READS,
    command="musicdistill replicate",
    ignores=(*RUN_READS.ignores, *SEED_KEYS),
    instead=(
        *RUN_READS.instead,
        *(
            (key, "replicate sets every seed (data's included) to each of --seeds in turn: choose them there")
            for key in SEED_KEYS
        ),
    ),
)


class UsageError(ValueError):
    """A wrong combination of options (printed without a traceback by the command line)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replicate",
        help="run the main job once per seed and pool the claims over the seeds",
        description=(
            "Run the main job once per seed into <runs_dir>/<name>-seed<seed>/, every seed of the "
            "config (the data's too) set to that seed, so prompts and judges are fresh; the shipped "
            "base stays. Then pool the claims with a hierarchical bootstrap (seeds, then prompts "
            "within each seed) into <runs_dir>/<name>-replicate-<seeds>/ (pooled.json, report.html, "
            f"pooled.md). Seeds >= {DEVELOPMENT_SEEDS_FROM} are development seeds (trials); smaller "
            "ones are reporting seeds. Finished seeds are skipped, so an interrupted replication resumes."
        ),
    )
    p.add_argument(
        "--seeds",
        required=True,
        metavar="A,B,...",
        help="comma-separated seeds (integers >= 0, at least two distinct), e.g. --seeds 2,3,4",
    )
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun this stage in every seed's run (repeatable)",
    )
    p.add_argument(
        "--analyze-only",
        action="store_true",
        help="train nothing: pool the seeds' existing runs and rewrite the report",
    )
    p.set_defaults(func=_run)
    add_positional_config_args(p, READS)
    add_report_to(p)


def _run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    if args.analyze_only and args.force:
        raise UsageError("--force reruns stages and --analyze-only runs none: give one of them")
    cfg, config, overrides = positional_config(args, READS)
    if args.analyze_only:
        missing = missing_runs(cfg, seeds)
        if missing:
            command = shlex.join(
                ["musicdistill", "replicate", *([config] if config else []), *overrides]
                + ["--seeds", ",".join(map(str, seeds))]
            )
            raise FileNotFoundError(
                "--analyze-only needs every seed's finished run; missing: "
                + ", ".join(f"{m} (no evaluate/per_prompt.csv or metrics.json)" for m in missing)
                + f". Create them with: {command}"
            )
        result = analyze(cfg, seeds)
    else:
        result = replicate(cfg, seeds, force=tuple(args.force))
    out = replicate_dir(cfg, seeds)
    print(f"\nreport: {out / REPORT_FILE}")
    print(f"        {out / POOLED_FILE}, {out / MARKDOWN_FILE}")
    print(f"pooled verdicts (seeds {', '.join(map(str, seeds))}; R = {result['statistics']['bootstrap']}):")
    for claim in result["pooled"]["claims"]:
        print(f"  {claim['id']}: {claim['verdict']}")
    return 0
