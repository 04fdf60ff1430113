"""Assemble the parts of a distillation run from folders: base checkpoint, tokens, reward embedder.

Kept apart from :mod:`musicdistill.training.distill` so the loop stays readable and tests can hand it
tiny in-memory parts instead.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musicdistill.config import Config, ConfigError
from musicdistill.data.tokens import TokenSet
from musicdistill.judges.judging import golden_metric_fn, reward_embed_fn
from musicdistill.model.loading import BACKBONE_PROVENANCE, load_generator, resolve_codec_dir
from musicdistill.model.text import TextCondition
from musicdistill.storage.checkpoint import PROVENANCE_FILE, Checkpoint, file_sha256, load_checkpoint
from musicdistill.training.distill import DistillParts, PromptSet, frozen_copy

log = logging.getLogger(__name__)


def prompt_set(tokens: TokenSet) -> PromptSet:
    """Distinct captions of a token set, in first-seen order, with the attributes of their first clip."""
    seen: dict[str, dict[str, Any] | None] = {}
    for caption, attrs in zip(tokens.captions, tokens.attributes):
        seen.setdefault(caption, attrs)
    return PromptSet(prompts=list(seen), attributes=list(seen.values()))


def cached_encoder(text_encoder, device: torch.device):
    """``prompts -> TextCondition`` on ``device`` (the encoder caches per prompt)."""

    def encode(prompts: list[str]) -> TextCondition:
        with torch.inference_mode():
            cond = text_encoder.encode(list(prompts))
        return TextCondition(cond.states.clone().to(device), cond.mask.clone().to(device))

    return encode


@dataclass
class Assembled:
    parts: DistillParts
    provenance: dict[str, Any]
    codec: Any


def finetune_of(init_dir: Path, base_dir: Path) -> Checkpoint:
    """The checkpoint ``init_dir``, refused unless it was distilled from the base ``base_dir``."""
    ckpt = load_checkpoint(init_dir)
    base_hash = file_sha256(base_dir / "model.safetensors")
    if ckpt.provenance.get("base_hash") != base_hash:
        raise ConfigError(
            f"--init {init_dir} was not distilled from the base {base_dir} (its provenance.json names base_hash "
            f"{ckpt.provenance.get('base_hash')!r}, the base's weights hash {base_hash!r}); start from a "
            "finetune of the same base, or leave --init out"
        )
    return ckpt


def assemble(
    cfg: Config,
    base_dir: Path,
    tokens: TokenSet,
    out: Path,
    device: torch.device,
    embedder_dir: Path | None = None,
    oracle_dir: Path | None = None,
    init_dir: Path | None = None,
) -> Assembled:
    """Student and frozen teacher from the base checkpoint, prompts from the token set, reward and golden.

    The base may be a native generator or a MusicGen (``model.backbone`` in its config); the
    provenance returned for the distilled checkpoints names the base and inherits its backbone.
    ``init_dir`` starts the student from another finetune of the same base (e.g. the β = 0 student)
    instead of the base; the teacher stays the base with CFG.
    """
    loaded = load_generator(base_dir, device=device)
    if loaded.cfg.model.backbone != cfg.model.backbone:  # the distilled checkpoints are saved with cfg
        raise ConfigError(
            f"the base checkpoint {base_dir} has model.backbone={loaded.cfg.model.backbone!r} but "
            f"the config says {cfg.model.backbone!r}; use the config the base was made with"
        )
    teacher = frozen_copy(loaded.model)
    student = loaded.model.train()
    if init_dir is not None:
        student.load_state_dict(finetune_of(init_dir, base_dir).state_dict)
    codec = loaded.codec
    if codec is None:
        raise FileNotFoundError(
            f"the base checkpoint {base_dir} records no codec; distillation decodes rollouts"
        )
    trust = cfg.embed.trust_remote_code
    reward = reward_embed_fn(embedder_dir, codec, device, trust) if embedder_dir else None
    golden = golden_metric_fn(oracle_dir, codec) if oracle_dir else None
    train = tokens.select("train")
    parts = DistillParts(
        student=student,
        teacher=teacher,
        encode=cached_encoder(loaded.text_encoder, device),
        train=prompt_set(train),
        held_out=prompt_set(tokens.select("valid")),
        num_frames=tokens.num_frames,
        reward_embed=reward,
        golden=golden,
        dataset_codes=train.codes,
        dataset_prompts=train.captions,
    )
    base_prov = json.loads((base_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    codec_dir = resolve_codec_dir(base_dir, base_prov)
    provenance = {
        "base_hash": file_sha256(base_dir / "model.safetensors"),
        "base_dir": os.path.relpath(base_dir.resolve(), out.resolve().parent),
        "codec_dir": os.path.relpath(codec_dir.resolve(), out.resolve().parent) if codec_dir else None,
        "embedder_dir": str(embedder_dir) if embedder_dir else None,
        "init_dir": os.path.relpath(init_dir.resolve(), out.resolve().parent) if init_dir else None,
        **{key: base_prov[key] for key in BACKBONE_PROVENANCE if key in base_prov},
    }
    return Assembled(parts=parts, provenance=provenance, codec=codec)
