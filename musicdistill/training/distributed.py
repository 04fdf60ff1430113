"""torch.distributed in one place: init from torchrun's environment, rank helpers, reductions.

Launch with ``torchrun --nproc_per_node N -m musicdistill distill ...``: each process reads RANK,
WORLD_SIZE and LOCAL_RANK, joins the group (NCCL on GPUs, gloo on CPUs) and takes its share of
the prompts. A single process without those variables runs undistributed.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any); returns the rank info and this rank's device."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo(), device
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    log.info("rank %d of %d on %s", info.rank, info.world_size, device)
    return info, device


def shutdown_distributed() -> None:
    """Leave the process group once every rank is done (a rank that leaves while another still
    talks to it can abort at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        gc.collect()  # models and tensors that hold the group (DTensors' device mesh) go first
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the identity when undistributed)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` holds on any rank (so every rank takes the same branch)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
