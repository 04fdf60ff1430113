"""Open a generator checkpoint with everything needed to sample from it.

A checkpoint folder (see :mod:`musicdistill.checkpoint`) holds ``model.safetensors``, the resolved
``config.yaml`` and ``provenance.json``. The generator's shape is read from the weights themselves
(``embed [K, V + 1, D]``, ``text_proj.weight [D, text_dim]``) and from ``config.model``; the text
encoder from ``config.text``; the codec from ``provenance["codec_dir"]`` (a relative path resolves
against the checkpoint folder's parent, or failing that the nearest ancestor where it exists, so
training snapshots under ``<out>/checkpoints/`` find it too).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch

from musicdistill.checkpoint import CheckpointError, load_checkpoint
from musicdistill.config import Config, ModelConfig, section_from_dict
from musicdistill.generator import Generator, build_generator
from musicdistill.text import TextEncoder, build_text_encoder

log = logging.getLogger(__name__)


class LoadedGenerator(NamedTuple):
    """What :func:`load_generator` returns; unpacks as ``model, text_encoder, codec, cfg``."""

    model: Generator
    text_encoder: TextEncoder
    codec: Any | None
    cfg: Config


def generator_from_state_dict(model_cfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Generator:
    """Build a :class:`Generator` shaped like ``state_dict`` and load it (strict)."""
    for key in ("embed", "text_proj.weight"):
        if key not in state_dict:
            raise CheckpointError(f"the weights have no '{key}'; this is not a musicdistill generator checkpoint")
    num_codebooks, entries, dim = state_dict["embed"].shape
    text_dim = state_dict["text_proj.weight"].shape[1]
    if dim != model_cfg.dim:
        raise CheckpointError(f"the weights have width {dim} but config model.dim={model_cfg.dim}")
    model = build_generator(model_cfg, num_codebooks, entries - 1, text_dim)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"the weights do not match config.model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model


def resolve_codec_dir(ckpt_dir: Path, provenance: dict[str, Any]) -> Path | None:
    """The codec folder a checkpoint records, or None when it records none."""
    recorded = provenance.get("codec_dir")
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_absolute():
        return path
    for base in ckpt_dir.resolve().parents:
        if (base / path).is_dir():
            return base / path
    return ckpt_dir.resolve().parent / path


def load_generator(
    ckpt_dir: str | Path, device: torch.device | str = "cpu", with_codec: bool = True,
    text_encoder: TextEncoder | None = None,
) -> LoadedGenerator:
    """Model (eval mode, on ``device``), frozen text encoder, codec (or None) and config of a checkpoint.

    Pass ``text_encoder`` to reuse one already loaded (e.g. when several checkpoints of one run are
    compared); it must be the encoder the checkpoint's config names.

    Raises CheckpointError (a ValueError) or FileNotFoundError naming the missing piece.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt = load_checkpoint(ckpt_dir)
    cfg = section_from_dict(Config, ckpt.config)
    model = generator_from_state_dict(cfg.model, ckpt.state_dict).to(device).eval()
    if text_encoder is not None and text_encoder.name != cfg.text.encoder:
        raise CheckpointError(f"{ckpt_dir} was trained with text.encoder={cfg.text.encoder!r}, not {text_encoder.name!r}")
    encoder = text_encoder or build_text_encoder(cfg.text, device)
    if encoder.dim != model.text_dim:
        raise CheckpointError(
            f"text encoder {cfg.text.encoder!r} has width {encoder.dim} but the generator in {ckpt_dir} was trained "
            f"on width {model.text_dim}; set text.encoder to the encoder it was trained with"
        )
    codec = None
    codec_dir = resolve_codec_dir(ckpt_dir, ckpt.provenance) if with_codec else None
    if codec_dir is not None:
        if not codec_dir.is_dir():
            raise FileNotFoundError(
                f"checkpoint {ckpt_dir} records codec_dir={ckpt.provenance['codec_dir']!r}, but {codec_dir} does not "
                "exist; restore the codec folder next to the checkpoint"
            )
        from musicdistill.codec import load_codec

        codec = load_codec(codec_dir)
        if (codec.num_codebooks, codec.cardinality) != (model.num_codebooks, model.cardinality):
            raise CheckpointError(
                f"codec {codec_dir} has {codec.num_codebooks} codebooks of {codec.cardinality} entries but the "
                f"generator expects {model.num_codebooks} of {model.cardinality}"
            )
    log.info("loaded generator %s (%.2fM parameters)", ckpt_dir, model.num_parameters() / 1e6)
    return LoadedGenerator(model=model, text_encoder=encoder, codec=codec, cfg=cfg)
