"""Open a generator checkpoint with everything needed to sample from it.

A checkpoint folder (see :mod:`musicdistill.storage.checkpoint`) holds ``model.safetensors``, the resolved
``config.yaml`` and ``provenance.json``. ``config.model.backbone`` says what the weights are:

- ``native``: our :class:`musicdistill.model.generator.Generator`. Its shape is read from the weights
  themselves (``embed [K, V + 1, D]``, ``text_proj.weight`` or ``text_sum.weight [D, text_dim]``) and
  from ``config.model``; the text encoder from ``config.text``.
- ``musicgen``: the state dict of a :class:`musicdistill.model.musicgen.MusicgenBackbone` (decoder and
  text projection of a transformers MusicGen). The architecture, the T5 text encoder and its
  tokenizer come from the pretrained MusicGen directory, which provenance records as ``pretrained``
  (an absolute path, or a hub id); when that path no longer exists, ``config.model.pretrained`` is
  tried, so a moved model directory is found again by editing ``config.yaml``.
  :func:`save_musicgen_base` writes such a checkpoint from ``model.pretrained``.

The codec comes from ``provenance["codec_dir"]`` (a relative path resolves inside the checkpoint
folder, as an export keeps it, else against the nearest ancestor where it exists, so training snapshots under
``<out>/checkpoints/`` find it too); a MusicGen checkpoint that records none uses the EnCodec inside
its MusicGen directory. Finetunes and merges copy :data:`BACKBONE_PROVENANCE` from the checkpoint
they start from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml

from musicdistill.codec.factory import load_codec
from musicdistill.config import Config, ModelConfig, config_to_dict, section_from_dict
from musicdistill.model.dial import dial_hidden_of
from musicdistill.model.generator import Generator, build_generator
from musicdistill.model.musicgen import MusicgenBackbone, load_backbone, resolve_pretrained
from musicdistill.model.text import TextEncoder, build_text_encoder
from musicdistill.storage.checkpoint import (
    CONFIG_FILE,
    PROVENANCE_FILE,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)

MUSICGEN = "musicgen"
#: provenance keys naming what the weights are; finetunes and merges copy them from their source
BACKBONE_PROVENANCE = ("backbone", "pretrained")


class LoadedGenerator(NamedTuple):
    """What :func:`load_generator` returns; unpacks as ``model, text_encoder, codec, cfg``.

    ``model`` is a :class:`Generator`, or a :class:`musicdistill.model.musicgen.MusicgenBackbone` for
    checkpoints with ``model.backbone: musicgen``; both have the ``TokenGenerator`` interface.
    """

    model: Generator
    text_encoder: TextEncoder
    codec: Any | None
    cfg: Config


def generator_from_state_dict(model_cfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> Generator:
    """Build a :class:`Generator` shaped like ``state_dict`` and load it (strict)."""
    text_key = next((k for k in ("text_proj.weight", "text_sum.weight") if k in state_dict), None)
    if "embed" not in state_dict or text_key is None:
        raise CheckpointError(
            "the weights have no 'embed' and 'text_proj.weight' (or 'text_sum.weight'); this is not "
            "a musicdistill generator checkpoint"
        )
    num_codebooks, entries, dim = state_dict["embed"].shape
    text_dim = state_dict[text_key].shape[1]
    if dim != model_cfg.dim:
        raise CheckpointError(f"the weights have width {dim} but config model.dim={model_cfg.dim}")
    model = build_generator(model_cfg, num_codebooks, entries - 1, text_dim)
    if hidden := dial_hidden_of(state_dict):  # a conditioned student
        model.attach_dial(hidden)
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
    for base in (ckpt_dir.resolve(), *ckpt_dir.resolve().parents):  # inside first: an export holds its codec
        if (base / path).is_dir():
            return base / path
    return ckpt_dir.resolve().parent / path


def load_generator(
    ckpt_dir: str | Path,
    device: torch.device | str = "cpu",
    with_codec: bool = True,
    text_encoder: TextEncoder | None = None,
) -> LoadedGenerator:
    """Model (eval mode, on ``device``), frozen text encoder, codec (or None) and config of a checkpoint.

    Pass ``text_encoder`` to reuse one already loaded (e.g. when several checkpoints of one run are
    compared); its ``name`` must be :func:`text_encoder_name` of the checkpoint.

    Raises CheckpointError (a ValueError) or FileNotFoundError naming the missing piece.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt = load_checkpoint(ckpt_dir)
    cfg = section_from_dict(Config, ckpt.config)
    if cfg.model.backbone == MUSICGEN:
        return _load_musicgen_generator(ckpt, cfg, device, with_codec, text_encoder)
    model = generator_from_state_dict(cfg.model, ckpt.state_dict).to(device).eval()
    if text_encoder is not None and text_encoder.name != cfg.text.encoder:
        raise CheckpointError(
            f"{ckpt_dir} was trained with text.encoder={cfg.text.encoder!r}, not {text_encoder.name!r}"
        )
    encoder = text_encoder or build_text_encoder(cfg.text, device)
    if encoder.dim != model.text_dim:
        raise CheckpointError(
            f"text encoder {cfg.text.encoder!r} has width {encoder.dim} but the generator in {ckpt_dir} was trained "
            f"on width {model.text_dim}; set text.encoder to the encoder it was trained with"
        )
    codec = recorded_codec(ckpt, model) if with_codec else None
    log.info("loaded generator %s (%.2fM parameters)", ckpt_dir, model.num_parameters() / 1e6)
    return LoadedGenerator(model=model, text_encoder=encoder, codec=codec, cfg=cfg)


def recorded_codec(ckpt: Checkpoint, model: Any) -> Any | None:
    """The codec ``ckpt`` records (``codec_dir``), checked against the model's K and V; None when none is recorded."""
    codec_dir = resolve_codec_dir(ckpt.path, ckpt.provenance)
    if codec_dir is None:
        return None
    if not codec_dir.is_dir():
        raise FileNotFoundError(
            f"checkpoint {ckpt.path} records codec_dir={ckpt.provenance['codec_dir']!r}, but {codec_dir} does not "
            "exist; restore the codec folder next to the checkpoint"
        )

    codec = load_codec(codec_dir)
    if (codec.num_codebooks, codec.cardinality) != (model.num_codebooks, model.cardinality):
        raise CheckpointError(
            f"codec {codec_dir} has {codec.num_codebooks} codebooks of {codec.cardinality} entries but the "
            f"generator expects {model.num_codebooks} of {model.cardinality}"
        )
    return codec


# --------------------------------------------------------------------------------------------
# MusicGen checkpoints
# --------------------------------------------------------------------------------------------


def pretrained_source(path_or_id: str | Path) -> str:
    """A MusicGen directory as an absolute path (a hub id is kept); raises with the fix when it is missing."""
    source = resolve_pretrained(path_or_id)
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else source


def musicgen_source(ckpt_dir: Path, provenance: dict[str, Any], model_cfg: ModelConfig) -> str:
    """The MusicGen directory a ``backbone: musicgen`` checkpoint is built on (see the module docstring)."""
    recorded = str(provenance.get("pretrained") or "")
    configured = model_cfg.pretrained
    for candidate in (recorded, configured):
        if candidate and Path(candidate).expanduser().is_dir():
            return pretrained_source(candidate)
    try:
        return pretrained_source(recorded or configured)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(
            f"checkpoint {ckpt_dir} is a finetune of the MusicGen {recorded or configured!r}, which cannot be found "
            f"({exc}); put the model directory back, or set model.pretrained in {ckpt_dir / 'config.yaml'} to "
            "where it is now"
        ) from None


def text_encoder_name(ckpt_dir: str | Path) -> str:
    """The ``name`` of the text encoder :func:`load_generator` gives this checkpoint, without loading it.

    ``config.text.encoder`` for native checkpoints; the MusicGen directory (whose T5 it uses) for
    MusicGen ones. Checkpoints with equal names can share one loaded encoder.
    """
    ckpt_dir = Path(ckpt_dir)
    try:
        config = yaml.safe_load((ckpt_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        provenance = json.loads((ckpt_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CheckpointError(
            f"checkpoint {ckpt_dir}: cannot read {CONFIG_FILE} and {PROVENANCE_FILE} ({exc})"
        ) from exc
    cfg = section_from_dict(Config, config)
    if cfg.model.backbone == MUSICGEN:
        return musicgen_source(ckpt_dir, provenance, cfg.model)
    return cfg.text.encoder


def _load_musicgen_generator(
    ckpt: Checkpoint,
    cfg: Config,
    device: torch.device | str,
    with_codec: bool,
    text_encoder: TextEncoder | None,
) -> LoadedGenerator:
    """A MusicGen checkpoint: the pretrained model with the checkpoint's decoder weights, its T5 and a codec."""
    source = musicgen_source(ckpt.path, ckpt.provenance, cfg.model)
    if text_encoder is not None and text_encoder.name != source:
        raise CheckpointError(
            f"{ckpt.path} is a MusicGen finetune that uses the T5 of {source}, "
            f"not the text encoder {text_encoder.name!r}"
        )
    t = cfg.text
    backbone, own_encoder, own_codec = load_backbone(
        source, device, max_tokens=t.max_tokens, max_prompt_chars=t.max_prompt_chars, cache_size=t.cache_size
    )
    if hidden := dial_hidden_of(ckpt.state_dict):  # a conditioned student
        backbone.attach_dial(hidden)
    missing, unexpected = backbone.load_state_dict(ckpt.state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"the weights in {ckpt.path} do not fit the MusicGen in {source}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; point model.pretrained at the model it was finetuned from"
        )
    backbone.eval()
    codec = recorded_codec(ckpt, backbone) if with_codec else None
    if with_codec and codec is None:
        codec = own_codec
    log.info(
        "loaded MusicGen checkpoint %s on %s (%.1fM decoder parameters)",
        ckpt.path,
        source,
        backbone.num_parameters() / 1e6,
    )
    return LoadedGenerator(model=backbone, text_encoder=text_encoder or own_encoder, codec=codec, cfg=cfg)


def save_musicgen_base(cfg: Config, out: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write the decoder of ``cfg.model.pretrained`` as a base checkpoint (step 0) in ``out``; returns ``out``.

    The checkpoint holds the backbone's state dict, ``cfg`` and a provenance of kind ``"base"`` that
    records the backbone and the MusicGen directory (plus ``provenance``, e.g. the codec folder).
    """
    if cfg.model.backbone != MUSICGEN:
        raise ValueError(
            f"model.backbone={cfg.model.backbone!r}: only a musicgen backbone is exported as it is"
        )
    source = pretrained_source(cfg.model.pretrained)
    backbone = MusicgenBackbone.from_pretrained(source)
    prov = {"kind": "base", "step": 0, "backbone": MUSICGEN, "pretrained": source, **(provenance or {})}
    save_checkpoint(out, backbone.state_dict(), config_to_dict(cfg), prov)
    log.info(
        "base checkpoint %s: the pretrained MusicGen %s (%.1fM decoder parameters)",
        out,
        source,
        backbone.num_parameters() / 1e6,
    )
    return Path(out)
