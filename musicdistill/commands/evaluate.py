"""``musicdistill evaluate``: compare systems on held-out prompts; metrics with intervals and a Pareto plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args
from musicdistill.evaluation.setup import run_evaluation
from musicdistill.evaluation.systems import parse_systems

_SWEEP_HINT = (
    "`musicdistill evaluate` compares the systems listed in evaluate.systems, each with its own "
    "cfg_scale and temperature: list one system per setting there"
)
READS = ConfigReads(
    "musicdistill evaluate",
    ("name", "runs_dir", "device", "evaluate", "generate"),
    instead=(("run.cfg_scales", _SWEEP_HINT), ("run.temperatures", _SWEEP_HINT)),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score systems (checkpoint + sampling settings) on the same held-out prompts and seeds",
        description=(
            "Generate evaluate.samples_per_prompt samples for each of evaluate.num_prompts held-out prompts with "
            "every system in evaluate.systems (the same prompts and seed for all), then report attribute "
            "adherence (oracle), text adherence (scorer), attribute diversity (oracle: how often two samples "
            "differ on the attributes the prompt leaves open), pairwise diversity under the reward embedder, "
            "the second embedder and the hand-made features, Vendi score and Frechet distance, each with a "
            "bootstrap 95%% "
            "interval over prompts, and each system's inference cost (model rows per sample). Writes "
            "metrics.json, per_prompt.csv, samples/ and pareto.png to OUT."
        ),
    )
    add_config_args(p, READS)
    p.add_argument(
        "--tokens",
        metavar="DIR",
        help="encoded dataset with the held-out prompts (default: <run_dir>/tokens)",
    )
    p.add_argument(
        "--embedder", metavar="DIR", help="reward embedder (default: <run_dir>/embedder when present)"
    )
    p.add_argument(
        "--oracle", metavar="DIR", help="attribute oracle (default: <run_dir>/oracle when present)"
    )
    p.add_argument(
        "--scorer", metavar="DIR", help="text-audio scorer (default: <run_dir>/scorer when present)"
    )
    p.add_argument(
        "--second-embedder",
        metavar="DIR",
        help="second embedder, independent of the reward (default: <run_dir>/second_embedder when present)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default: <run_dir>/evaluate)")
    p.set_defaults(func=_run)


def _existing(path: str | None, default: Path) -> Path | None:
    if path:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
        return Path(path)
    return default if default.is_dir() else None


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    run_dir = cfg.run_dir
    systems = parse_systems(cfg.evaluate.systems, cfg.generate, section="evaluate.systems")
    out = Path(args.out or run_dir / "evaluate")
    report = run_evaluation(
        cfg,
        systems,
        Path(args.tokens or run_dir / "tokens"),
        out,
        embedder=_existing(args.embedder, run_dir / "embedder"),
        oracle=_existing(args.oracle, run_dir / "oracle"),
        scorer=_existing(args.scorer, run_dir / "scorer"),
        second_embedder=_existing(args.second_embedder, run_dir / "second_embedder"),
    )
    for name, sys in report["systems"].items():
        cells = ", ".join(f"{k} {v['mean']:.3f}" for k, v in sys["metrics"].items() if "low" in v)
        print(f"{name:24s} rows/sample {sys['cost']['rows_per_sample']}  {cells}")
    print(f"metrics: {out / 'metrics.json'}\nplot:    {out / 'pareto.png'}")
    return 0
