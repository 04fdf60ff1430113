"""The memory plan as a table and a recommendation (what ``musicdistill plan`` prints)."""

from __future__ import annotations

import dataclasses

import torch

from musicdistill.config import Config, DistillConfig
from musicdistill.model.generator import build_generator
from musicdistill.training.memory_plan import (
    GIB,
    MUSICGEN_SIZES,
    PLAN_HEADROOM,
    Memory,
    ModelSize,
    distill_memory,
    model_size_of,
    musicgen_folder_size,
)

#: MusicGen's codec (EnCodec 32 kHz) gives 50 frames a second
MUSICGEN_FRAME_RATE = 50.0


def size_for(cfg: Config, model: str) -> tuple[ModelSize, float]:
    """(the model's size, its frames per second): a public MusicGen (``model`` names it), the
    config's MusicGen folder, or the config's native generator (built on the meta device)."""
    if model in MUSICGEN_SIZES:
        return MUSICGEN_SIZES[model], MUSICGEN_FRAME_RATE
    if cfg.model.backbone == "musicgen":
        if not cfg.model.pretrained:
            raise ValueError(
                "model.backbone=musicgen needs model.pretrained (a local MusicGen folder), or --model"
            )
        return musicgen_folder_size(cfg.model.pretrained), MUSICGEN_FRAME_RATE
    with torch.device("meta"):
        generator = build_generator(cfg.model, cfg.codec.num_codebooks, cfg.codec.cardinality, _text_dim(cfg))
    frame_rate = cfg.data.sample_rate / cfg.codec.hop_length
    return dataclasses.replace(model_size_of(generator), name="native generator"), frame_rate


def _text_dim(cfg: Config) -> int:
    """The width of the text states (the packaged MiniLM's 384 unless the config names another)."""
    return int(getattr(cfg.text, "dim", 0) or 384)


def settings_for(size: ModelSize, dc: DistillConfig, frames: int, gpus: int) -> list[Memory]:
    """DDP; FSDP with the teacher sharded or replicated; FSDP sharded with activation checkpointing."""
    checkpointed = dataclasses.replace(dc, activation_checkpointing=True)
    out = [
        distill_memory(size, dc, frames, gpus, "ddp"),
        distill_memory(size, dc, frames, gpus, "fsdp", teacher="replicate"),
        distill_memory(size, dc, frames, gpus, "fsdp", teacher="shard"),
        distill_memory(size, checkpointed, frames, gpus, "fsdp", teacher="shard"),
    ]
    out[-1].setting += " + activation checkpointing"
    return out


def plan_table(
    size: ModelSize, dc: DistillConfig, frames: int, gpus: int, gpu_gib: float
) -> tuple[list[Memory], str]:
    """The settings and a text table of GiB per GPU (one column per setting)."""
    settings = settings_for(size, dc, frames, gpus)
    names = ["DDP", "FSDP, teacher replicated", "FSDP, teacher sharded", "FSDP sharded + act. ckpt"]
    labels = {
        "weights": "student weights (fp32)",
        "gradients": "gradients (fp32)",
        "optimizer": "AdamW moments (fp32)",
        "teacher": "frozen teacher",
        "buffers": "buffers (DDP buckets, FSDP units)",
        "rollouts": "phase: rollouts (KV cache, gathered student)",
        "teacher_pass": "phase: teacher pass (CFG, logits kept)",
        "student_pass": "phase: student pass (activations, logits)",
        "peak": "peak",
    }
    width = max(len(v) for v in labels.values())
    lines = [f"{'GiB per GPU':<{width}}  " + "  ".join(f"{n:>25}" for n in names)]
    for key, label in labels.items():
        values = [dict(m.rows())[key] / GIB for m in settings]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>25.2f}" for v in values))
    fits = ["fits" if m.fits(gpu_gib * GIB) else "does not fit" for m in settings]
    lines.append(
        f"{f'fits {PLAN_HEADROOM:.0%} of {gpu_gib:g} GiB':<{width}}  " + "  ".join(f"{f:>25}" for f in fits)
    )
    return settings, "\n".join(lines)


def recommend(settings: list[Memory], gpus: int, gpu_gib: float) -> str:
    """The cheapest setting that fits: DDP (least communication), then FSDP with a replicated
    teacher, then everything sharded, then activation checkpointing."""
    keys = [
        "distill.parallel=ddp",
        "distill.parallel=fsdp distill.fsdp_teacher=replicate",
        "distill.parallel=fsdp distill.fsdp_teacher=shard",
        "distill.parallel=fsdp distill.fsdp_teacher=shard distill.activation_checkpointing=true",
    ]
    for memory, key in zip(settings, keys, strict=True):
        if gpus == 1 and "fsdp" in key:
            break
        if memory.fits(gpu_gib * GIB):
            return f"use: {key}"
    return (
        f"nothing fits {gpus} GPU(s) of {gpu_gib:g} GiB: use more GPUs, or lower distill.prompts_per_step "
        "or the rollout length"
    )
