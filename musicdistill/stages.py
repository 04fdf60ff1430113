"""The stages of the main job (``musicdistill run``), each a thin call into the library.

Layout of a run folder ``<runs_dir>/<name>/``::

    data/       the built-in synthesised clips and manifest (or a check of the user's manifest)
    codec/      the fitted codec
    tokens/     every usable clip encoded by the codec
    base/       the pretrained base generator (the CFG teacher)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from musicdistill.config import Config
from musicdistill.pipeline import Stage

log = logging.getLogger(__name__)


def manifest_path(cfg: Config, run_dir: Path) -> Path:
    """The user's manifest when ``data.manifest`` is set, else the built-in data's."""
    return Path(cfg.data.manifest) if cfg.data.manifest else run_dir / "data" / "manifest.jsonl"


def stage_data(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Synthesise the built-in data, or check the user's manifest; report what is usable."""
    from musicdistill.data import check_entries, read_manifest
    from musicdistill.synth import synthesize_dataset

    d = cfg.data
    if not d.manifest:
        synthesize_dataset(out, d.num_clips, d.seed, d.sample_rate, d.duration, d.workers)
    manifest = manifest_path(cfg, run_dir)
    report = check_entries(read_manifest(manifest), d.sample_rate, d.duration, workers=d.workers)
    log.info("data: %s", report.summary())
    if report.usable == 0:
        raise ValueError(f"{manifest}: no usable clip; run 'musicdistill data check {manifest}' for the reasons")
    if d.strict and report.bad:
        raise ValueError(f"{manifest}: {report.bad} bad clips with data.strict=true: {report.summary()}")
    return {"manifest": str(manifest), "clips": report.total, "usable": report.usable,
            "seconds": round(report.seconds, 1)}


def stage_codec(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Fit the offline codec on the train split (or load EnCodec) and save it."""
    from musicdistill.codec import fit_codec
    from musicdistill.data import load_dataset

    audio = None
    if cfg.codec.kind == "melrvq":
        _, clips = load_dataset(manifest_path(cfg, run_dir), cfg.data.sample_rate, cfg.data.duration,
                                split="train", workers=cfg.data.workers)
        audio = torch.from_numpy(clips)
    codec = fit_codec(cfg.codec, audio, cfg.data.sample_rate)
    codec.save(out)
    return {"frame_rate": codec.frame_rate, "num_codebooks": codec.num_codebooks, "cardinality": codec.cardinality}


def stage_tokens(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Encode every usable clip with the codec."""
    from musicdistill.codec import load_codec
    from musicdistill.tokens import encode_manifest, save_token_set

    codec = load_codec(run_dir / "codec")
    tokens = encode_manifest(manifest_path(cfg, run_dir), codec, cfg.data.sample_rate, cfg.data.duration,
                             cfg.data.workers, cfg.data.strict)
    save_token_set(tokens, out)
    return {"clips": len(tokens), "frames": tokens.num_frames,
            "splits": {s: tokens.splits.count(s) for s in sorted(set(tokens.splits))}}


def stage_pretrain(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
    """Pretrain the base generator (the CFG teacher)."""
    from musicdistill.pretrain import pretrain
    from musicdistill.tokens import load_token_set

    tokens = load_token_set(run_dir / "tokens")
    pretrain(cfg, tokens.select("train"), tokens.select("valid"), out, resume=resume,
             provenance={"codec_dir": os.path.relpath(run_dir / "codec", out.parent)})
    last = _last_history_row(out / "history.jsonl")
    return {k: last[k] for k in ("step", "loss", "val_loss", "val_loss_null") if k in last}


def _last_history_row(path: Path) -> dict[str, Any]:
    import json

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluated = [r for r in rows if "val_loss" in r]
    return evaluated[-1] if evaluated else (rows[-1] if rows else {})


def main_job_stages() -> list[Stage]:
    """Every stage of the main job, in order."""
    return [
        Stage("data", stage_data, reads=("data",), estimate_s=60,
              doc="synthesise the built-in captioned music (or check the user's manifest)"),
        Stage("codec", stage_codec, reads=("data", "codec"), after=("data",), estimate_s=40,
              doc="fit the offline codec on the training audio"),
        Stage("tokens", stage_tokens, reads=("data", "codec"), after=("codec",), estimate_s=40,
              doc="encode every clip to codec tokens"),
        Stage("base", stage_pretrain, reads=("text", "model", "pretrain", "device"), after=("tokens",),
              estimate_s=300, doc="pretrain the base generator with condition dropout"),
    ]
