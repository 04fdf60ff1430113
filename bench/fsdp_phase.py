"""The FSDP phase of ``bench/gpu.py``: a few steps of ``musicdistill.training.distill.distill`` on the
native generator in the benchmark's shape, whole and FSDP-sharded (on a one-process group: the lent
machine has one GPU), each with its wall time per step, its peak memory and the memory plan's peak.

On a GPU the peak is ``torch.cuda.max_memory_allocated``; with ``--smoke`` on the CPU it is counted
by ``TensorMemoryProbe``. The ratio measured / planned is what ``bench/RESULTS.md`` quotes.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from musicdistill.config import load_config
from musicdistill.model.text import TextCondition
from musicdistill.training.distill import DistillParts, PromptSet, distill, frozen_copy
from musicdistill.training.fsdp import shard
from musicdistill.training.memory_plan import GIB, distill_memory, model_size_of
from musicdistill.training.memory_probe import TensorMemoryProbe

STEPS = 3


def _config(shape: Any, prompts: int, out: Path):
    return load_config(
        None,
        [
            f"runs_dir={out}",
            "name=fsdp",
            f"distill.steps={STEPS}",
            f"distill.prompts_per_step={prompts}",
            "distill.group_size=2",
            "distill.beta=15",
            "distill.eval_prompts=1",
            f"distill.eval_every={STEPS}",
            f"distill.ckpt_every={STEPS}",
            "distill.warmup_steps=0",
        ],
    )


def _parts(build_native, shape: Any, prompts_cond, prompts: int, device: torch.device) -> DistillParts:
    student = build_native(shape, device).train()
    names = [f"prompt {i}" for i in range(prompts)]
    table = {name: i for i, name in enumerate(names)}
    full = prompts_cond(prompts, torch.float32)

    def encode(batch: list[str]) -> TextCondition:
        rows = torch.tensor([table[p] for p in batch], device=device)
        return TextCondition(full.states[rows], full.mask[rows])

    def reward(codes: torch.Tensor) -> torch.Tensor:  # token histograms: no codec needed
        return F.normalize(F.one_hot(codes[:, 0], shape.cardinality).float().sum(1), dim=-1)

    prompt_set = PromptSet(names, [None] * prompts)
    return DistillParts(student, frozen_copy(student), encode, prompt_set, prompt_set, shape.frames, reward)


def _one_process_group(device: torch.device) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29561")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def run_setting(
    build_native, shape: Any, prompts_cond, device: torch.device, sharded: bool
) -> dict[str, Any]:
    """``STEPS`` distillation steps, whole or sharded: seconds per step, peak and planned GiB."""
    prompts = shape.distill_prompts
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(shape, prompts, Path(tmp))
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        parts = _parts(build_native, shape, prompts_cond, prompts, device)
        size = model_size_of(parts.student, shape.text_tokens)
        plan = distill_memory(
            size, cfg.distill, shape.frames, 1, "fsdp" if sharded else "ddp", teacher="shard"
        )
        if sharded:
            _one_process_group(device)
            shard(parts.student, device, cfg.distill.bf16)
            shard(parts.teacher, device, cfg.distill.bf16)
        probe = TensorMemoryProbe() if device.type != "cuda" else None
        if probe is not None:
            probe.hold(parts.student, parts.teacher)
        t0 = time.perf_counter()
        with probe if probe is not None else _nothing():
            distill(cfg, parts, Path(tmp) / "d", {}, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - t0) / STEPS
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = probe.peak if probe is not None else None
    return {
        "setting": "fsdp (one process)" if sharded else "whole",
        "s_per_step": seconds,
        "peak_gib": None if peak is None else peak / GIB,
        "planned_gib": plan.peak / GIB,
        "measured_over_planned": None if peak is None else peak / plan.peak,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def fsdp_section(build_native, shape: Any, prompts_cond, device: torch.device) -> dict[str, Any]:
    """Both settings; the sharded one's slowdown (the all-gathers and DCP snapshots of FSDP)."""
    whole = run_setting(build_native, shape, prompts_cond, device, sharded=False)
    sharded = run_setting(build_native, shape, prompts_cond, device, sharded=True)
    return {
        "steps": STEPS,
        "prompts": shape.distill_prompts,
        "frames": shape.frames,
        "runs": [whole, sharded],
        "fsdp_time_ratio": sharded["s_per_step"] / whole["s_per_step"],
    }
