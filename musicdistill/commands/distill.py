"""``musicdistill distill``: diversity-rewarded CFG distillation of a base checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from musicdistill.commands.common import ConfigReads, add_config_args, add_report_to, config_from_args
from musicdistill.config import Config
from musicdistill.data.tokens import load_token_set
from musicdistill.model.dial import check_dial_lr_scale
from musicdistill.runtime import resolve_device, seed_everything
from musicdistill.training.distill import distill
from musicdistill.training.distill_setup import assemble
from musicdistill.training.distributed import DistInfo, init_distributed, shutdown_distributed

_FROM_BASE = (
    "`musicdistill distill` takes the model, its text encoder and its codec from the base checkpoint "
    "(--base); of the model section it reads only model.backbone"
)

#: one model, with beta = distill.beta; the generate section is recorded as the checkpoint's sampling
#: defaults; model.backbone is checked against the base checkpoint (which supplies model, text, codec)
READS = ConfigReads(
    "musicdistill distill",
    ("name", "runs_dir", "device", "report_to", "distill", "generate", "model.backbone"),
    instead=(
        (
            "run.students",
            "`musicdistill distill` trains one model, whose beta is distill.beta and whose settings are "
            "the distill section's: write distill.beta=..., distill.lr=... directly",
        ),
        (
            "run.merges",
            "`musicdistill distill` trains one model; merge two with `musicdistill merge --a A --b B --lam 0.5`",
        ),
        (
            "run.compare_offline",
            "`musicdistill distill` trains one model; distil offline with distill.mode=teacher",
        ),
        *((section, _FROM_BASE) for section in ("model", "text", "codec")),
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill the CFG teacher into a student that samples without CFG (+ beta * diversity reward)",
        description=(
            "Finetune a base checkpoint so that it samples without CFG: each step the student draws G "
            "rollouts per prompt, the frozen base with CFG (distill.gamma) scores them teacher-forced, and the "
            "student minimises the per-token divergence to it; with distill.beta > 0 a REINFORCE term rewards "
            "rollouts that differ from their siblings under the reward embedder. distill.beta=0 gives the "
            "quality model. Several processes: torchrun --nproc_per_node N -m musicdistill distill ..."
        ),
    )
    add_config_args(p, READS)
    add_report_to(p)
    p.add_argument("--base", metavar="DIR", help="base checkpoint (default: <run_dir>/base)")
    p.add_argument(
        "--tokens",
        metavar="DIR",
        help="encoded dataset for prompts (default: <run_dir>/tokens, else BASE/tokens)",
    )
    p.add_argument(
        "--embedder",
        metavar="DIR",
        help="reward embedder (default: <run_dir>/embedder when present; required when distill.beta > 0)",
    )
    p.add_argument(
        "--oracle",
        metavar="DIR",
        help="attribute oracle for the golden metric (default: <run_dir>/oracle when present)",
    )
    p.add_argument(
        "--init",
        metavar="DIR",
        help="start the student from this finetune of the same base (e.g. the beta = 0 student) instead of "
        "the base; the teacher stays the base with CFG",
    )
    p.add_argument(
        "--dial-hidden",
        type=int,
        default=0,
        metavar="N",
        help="train a conditioned student (docs/method.md 4.1): a diversity dial of N hidden units, w ~ U[0, 1] "
        "per prompt group, the reward weighted by w * distill.beta (default: 0, an ordinary student)",
    )
    p.add_argument(
        "--dial-lr-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="with --dial-hidden: the dial trains at X * distill.lr (default: 1, the student's own)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default: <run_dir>/distill_beta<beta>)")
    p.add_argument("--resume", action="store_true", help="continue from the last snapshot in OUT/checkpoints")
    p.set_defaults(func=_run)


def _existing(path: Path) -> Path | None:
    return path if path.is_dir() else None


def _distill(
    args: argparse.Namespace,
    cfg: Config,
    base: Path,
    tokens_dir: Path,
    out: Path,
    embedder: Path | None,
    oracle: Path | None,
    info: DistInfo,
    device: torch.device,
) -> None:
    """Assemble the parts and distil (the parts live only here, so they are freed before the process
    group is left)."""
    seed_everything(cfg.distill.seed)
    init = Path(args.init) if args.init else None
    parts = assemble(cfg, base, load_token_set(tokens_dir), out, device, embedder, oracle, init)
    distill(
        cfg,
        parts.parts,
        out,
        parts.provenance,
        device,
        info,
        resume=args.resume,
        dial_hidden=args.dial_hidden,
        dial_lr_scale=args.dial_lr_scale,
    )


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    run_dir = cfg.run_dir
    base = Path(args.base or run_dir / "base")
    tokens_dir = Path(args.tokens) if args.tokens else (_existing(run_dir / "tokens") or base / "tokens")
    embedder = Path(args.embedder) if args.embedder else _existing(run_dir / "embedder")
    oracle = Path(args.oracle) if args.oracle else _existing(run_dir / "oracle")
    if not 0 <= args.dial_hidden <= 4096:
        raise ValueError(f"--dial-hidden {args.dial_hidden} must lie in [0, 4096] (0 = an ordinary student)")
    try:
        check_dial_lr_scale(args.dial_lr_scale)
    except ValueError as err:
        raise ValueError(f"--dial-lr-scale: {err}") from None
    out = Path(args.out or run_dir / f"distill_beta{cfg.distill.beta:g}")
    info, device = init_distributed(resolve_device(cfg.device))
    try:
        _distill(args, cfg, base, tokens_dir, out, embedder, oracle, info, device)
    finally:
        shutdown_distributed()  # after _distill returned: its models (which hold the group) are gone
    if info.is_main:
        print(f"distilled model: {out}")
    return 0
