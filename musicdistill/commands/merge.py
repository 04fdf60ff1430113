"""``musicdistill merge``: interpolate the weights of two finetunes of the same base model."""

from __future__ import annotations

import argparse

from musicdistill.merging import merge_checkpoints

#: kept in sync with musicdistill.merging.MERGE_METHODS (imported lazily: torch is slow to import)
METHODS = ("lerp", "slerp")

DESCRIPTION = """\
Interpolate two checkpoints finetuned from the same base model, tensor by tensor:

  lerp   θ = (1 - λ)·θ_A + λ·θ_B   (the paper's merge; λ = 0.5 is its best model)
  slerp  θ = θ_base + SLERP(θ_A - θ_base, θ_B - θ_base; λ)   (task vectors, as in WARP/mergekit)

λ = 0 gives A (the quality model, distilled with β = 0) and λ = 1 gives B (the diversity model);
sweeping λ traces the quality-diversity front. The result is a normal checkpoint (A's config) whose
provenance.json names both parents, λ and the method. The two models must have the same tensors,
shapes and dtypes, and their provenance must show the same base model (--force skips only that
last check); differences between their model/codec/text configs are reported as warnings."""

EPILOG = """\
examples:
  musicdistill merge --a runs/quality/final --b runs/diversity/final --lam 0.5 --out runs/merged_0.5
  musicdistill merge --a runs/quality/final --b runs/diversity/final --lam 0.5 --method slerp \\
      --base runs/base/final --out runs/slerp_0.5"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="interpolate two finetunes of the same base (LERP or SLERP) into a new checkpoint",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--a", required=True, metavar="DIR", help="checkpoint folder at λ = 0 (e.g. the quality model)"
    )
    p.add_argument(
        "--b", required=True, metavar="DIR", help="checkpoint folder at λ = 1 (e.g. the diversity model)"
    )
    p.add_argument(
        "--lam", type=float, default=0.5, metavar="λ", help="merge coefficient in [0, 1] (default: 0.5)"
    )
    p.add_argument("--method", choices=METHODS, default="lerp", help="interpolation (default: lerp)")
    p.add_argument(
        "--base",
        metavar="DIR",
        help="base checkpoint both models were finetuned from; slerp only (default: base_dir in A's provenance)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the merged checkpoint to")
    p.add_argument(
        "--force",
        action="store_true",
        help="merge even if the provenance shows different base models; tensors, shapes and dtypes are "
        "still checked",
    )
    p.add_argument("--extrapolate", action="store_true", help="allow λ outside [0, 1] (beyond either model)")
    p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    out = merge_checkpoints(
        args.a,
        args.b,
        args.lam,
        method=args.method,
        base=args.base,
        out=args.out,
        force=args.force,
        extrapolate=args.extrapolate,
    )
    print(out)
    return 0
