"""``musicdistill pretrain``: train the base generator with condition dropout."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from musicdistill.codec.factory import load_codec
from musicdistill.commands.common import ConfigReads, add_config_args, add_report_to, config_from_args
from musicdistill.config import save_config
from musicdistill.data.tokens import encode_manifest_as_configured, load_token_set, save_token_set
from musicdistill.training.pretrain import pretrain

log = logging.getLogger(__name__)

#: codec: validated against model.delays and data.sample_rate; generate: recorded in the checkpoint as
#: its sampling defaults (read by 'musicdistill generate')
READS = ConfigReads(
    "musicdistill pretrain",
    ("name", "runs_dir", "device", "report_to", "data", "codec", "text", "model", "pretrain", "generate"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain the base text-to-token generator (cross-entropy + condition dropout)",
        description=(
            "Pretrain the base generator on codec tokens of a captioned-audio manifest. The clips are "
            "encoded once with the codec (cached in OUT/tokens), then trained teacher-forced with "
            "condition dropout so that the model also learns the unconditional (null) branch CFG needs. "
            "Writes a safetensors checkpoint with its resolved config to OUT; snapshots in OUT/checkpoints."
        ),
    )
    add_config_args(p, READS)
    add_report_to(p)
    p.add_argument(
        "--data",
        metavar="MANIFEST",
        help="manifest or audio folder (default: data.manifest, else <run_dir>/data/manifest.jsonl)",
    )
    p.add_argument("--codec", metavar="DIR", help="codec directory (default: <run_dir>/codec)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: <run_dir>/base)")
    p.add_argument("--resume", action="store_true", help="continue from the last snapshot in OUT/checkpoints")
    p.set_defaults(func=_run)


def relative_to(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (how checkpoints record their codec and data, so a shipped folder
    names no machine's paths), absolute if impossible."""
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path.resolve())


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.model.backbone == "musicgen":
        raise ValueError(
            "model.backbone=musicgen: MusicGen is already pretrained and 'musicdistill pretrain' trains "
            "the native generator; export the base checkpoint with 'musicdistill run CONFIG --only "
            "codec --only base' instead"
        )
    run_dir = cfg.run_dir
    manifest = Path(args.data or cfg.data.manifest or run_dir / "data" / "manifest.jsonl")
    codec_dir = Path(args.codec or run_dir / "codec")
    out = Path(args.out or run_dir / "base")
    if not manifest.exists():
        raise FileNotFoundError(
            f"manifest {manifest} does not exist; pass --data or run 'musicdistill data synth'"
        )
    codec = load_codec(codec_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "resolved_config.yaml")
    token_dir = out / "tokens"
    try:
        tokens = load_token_set(token_dir)
    except FileNotFoundError:
        tokens = encode_manifest_as_configured(manifest, codec, cfg.data)
        save_token_set(tokens, token_dir)
    pretrain(
        cfg,
        tokens.select("train"),
        tokens.select("valid"),
        out,
        resume=args.resume,
        provenance={
            "codec_dir": relative_to(codec_dir, out.parent),
            "manifest": relative_to(manifest, out.parent),
        },
    )
    print(f"base model: {out}")
    return 0
