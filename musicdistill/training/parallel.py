"""How distillation spreads over torchrun's processes (``distill.parallel``): one process trains the
student as it is; DDP wraps a whole copy per process; FSDP shards the student in place
(:mod:`musicdistill.training.fsdp`) and shards or replicates the frozen teacher, as the memory plan
(:mod:`musicdistill.training.memory_plan`) says it fits."""

from __future__ import annotations

import logging

import torch
from torch import nn

from musicdistill.config import DistillConfig
from musicdistill.training.distributed import DistInfo
from musicdistill.training.fsdp import is_sharded, shard
from musicdistill.training.memory_plan import PLAN_HEADROOM, distill_memory, model_size_of

log = logging.getLogger(__name__)


def parallelize(
    student: nn.Module,
    teacher: nn.Module,
    num_frames: int,
    dc: DistillConfig,
    info: DistInfo,
    device: torch.device,
) -> tuple[nn.Module, bool]:
    """Spread the student over torchrun's processes: -> (the module the training forward calls,
    whether the student is sharded). One process: the student itself. ``distill.parallel=ddp``: a
    DDP wrapper (a whole copy per process). ``fsdp``: the student sharded in place, and the teacher
    sharded or replicated as :func:`teacher_placement` says. A student the caller sharded already (for
    instance on a one-process group) trains sharded as it is."""
    if is_sharded(student):
        return student, True
    if not info.enabled:
        return student, False
    if dc.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(student, device_ids=ids), False
    placement = teacher_placement(student, num_frames, dc, info, device)
    shard(student, device, dc.bf16, dc.activation_checkpointing)
    if placement == "shard":
        shard(teacher, device, dc.bf16)
    elif device.type == "cuda" and dc.bf16:
        teacher.to(torch.bfloat16)
    log.info(
        "FSDP over %d processes: the student sharded%s, the teacher %s",
        info.world_size,
        " with activation checkpointing" if dc.activation_checkpointing else "",
        "sharded" if placement == "shard" else "replicated",
    )
    return student, True


def teacher_placement(
    student: nn.Module, num_frames: int, dc: DistillConfig, info: DistInfo, device: torch.device
) -> str:
    """``distill.fsdp_teacher`` resolved: ``auto`` replicates the teacher on a GPU where the memory
    plan with a replicated teacher fits the card, and shards it everywhere else (the CPU included)."""
    if dc.fsdp_teacher != "auto":
        return dc.fsdp_teacher
    if device.type != "cuda":
        return "shard"
    total = torch.cuda.get_device_properties(device).total_memory
    need = distill_memory(
        model_size_of(student), dc, num_frames, info.world_size, "fsdp", teacher="replicate"
    ).peak
    return "replicate" if need <= PLAN_HEADROOM * total else "shard"
