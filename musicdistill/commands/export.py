"""``musicdistill export``: a model out of the package, into the folder its own library loads."""

from __future__ import annotations

import argparse
from pathlib import Path

from musicdistill.api.export import export
from musicdistill.api.loading import ROLES

DESCRIPTION = """\
Write one model where its own library loads it, with a README.md model card (base model and
licence, beta, gamma, lambda, divergence, steps, data, the run's claims and verdicts):

  a MusicGen finetune -> a transformers MusicgenForConditionalGeneration folder (config,
      safetensors weights, tokenizer, processor) whose generation_config needs no CFG
      (guidance_scale 1 for a student or a merge) and samples with the checkpoint's settings;
  a native model      -> a checkpoint folder holding its codec, read by musicdistill.load."""

EPILOG = """\
examples:
  musicdistill export --run runs/default --role merge --lam 0.5 --out exported/merge-0.5
  musicdistill export --ckpt runs/default/quality --out exported/quality"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model for its own library (transformers MusicGen, or a self-contained folder) with a model card",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", metavar="DIR", help="a checkpoint folder")
    source.add_argument("--run", metavar="DIR", help="a run folder ('musicdistill run'); needs --role")
    p.add_argument("--role", choices=ROLES, help="which of the run's models (with --run)")
    p.add_argument(
        "--lam", type=float, metavar="L", help="the merge coefficient in [0, 1] (with --role merge)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (replaced once complete)")
    p.add_argument("--device", default="cpu", help="where to load the model (default: cpu)")
    p.add_argument(
        "--w",
        type=float,
        metavar="W",
        help="a conditioned MusicGen student: the diversity weight in [0, 1] to write it at for transformers",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.run and not args.role:
        raise ValueError("--run needs --role (one of " + ", ".join(ROLES) + ")")
    if args.ckpt and (args.role or args.lam is not None):
        raise ValueError("--role and --lam pick a model of a run folder; pass --run instead of --ckpt")
    source = Path(args.run or args.ckpt)
    out = export(source, Path(args.out), args.role, lam=args.lam, device=args.device, w=args.w)
    print(f"exported: {out}\nmodel card: {out / 'README.md'}")
    return 0
