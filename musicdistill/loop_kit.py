"""The training-loop kit: the pieces every gradient loop of the package shares, as plain functions.

Pretraining (:mod:`musicdistill.training.pretrain`), distillation (:mod:`musicdistill.training.distill`)
and the judges' contrastive training (:mod:`musicdistill.judges.embedder`, :mod:`musicdistill.judges.scorer`)
each write their own loop, top to bottom, and call these:

- :func:`make_optimizer`: AdamW with weight decay on weight matrices only: never on norms, biases
  or embeddings (:func:`decays`);
- :func:`make_scheduler` / :func:`lr_factor`: linear warm-up, then cosine decay to a floor
  (``min_ratio = 1`` keeps the rate constant after warm-up);
- :func:`optimizer_step`: zero the gradients, backpropagate, clip the gradient norm, step the
  optimizer and the schedule;
- :func:`step_generator`: the random draws of a step are a pure function of (seed, step, stream, rank),
  so a resumed run draws exactly what an uninterrupted one would have;
- :func:`save_training_snapshot` / :func:`resume_training`: resumable snapshots (model, optimizer,
  schedule, step and counters) and resuming from the newest, trimming the history rows written
  after it (:mod:`musicdistill.storage.history`);
- :func:`deadline` / :func:`past`: the ``max_minutes`` time budget.

Progress reporting lives in :mod:`musicdistill.progress`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from musicdistill.storage.checkpoint import (
    CheckpointError,
    latest_snapshot,
    load_checkpoint,
    load_training_state,
    save_snapshot,
)
from musicdistill.storage.history import trim_rows
from musicdistill.storage.sharded_snapshot import is_sharded_snapshot, load_sharded_snapshot

log = logging.getLogger(__name__)

#: AdamW betas of the generators (pretraining, distillation): β2 = 0.95 as in audiocraft's MusicGen
GENERATOR_BETAS = (0.9, 0.95)
#: AdamW betas of the judges' small contrastive models (PyTorch's defaults)
JUDGE_BETAS = (0.9, 0.999)


# --------------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule
# --------------------------------------------------------------------------------------------


def decays(name: str, param: nn.Parameter, module: nn.Module) -> bool:
    """Whether weight decay applies to a parameter: weight matrices yes; norms, biases, embeddings no.

    Norm gains and biases are the parameters with fewer than two dimensions (scalars such as a learned
    temperature included); embeddings are the weights of :class:`torch.nn.Embedding` modules and raw
    parameters whose dotted name has a part containing ``embed`` (e.g. the generator's ``embed``
    table ``[K, V + 1, D]``).
    """
    if param.dim() < 2 or isinstance(module, nn.Embedding):
        return False
    return not any("embed" in part for part in name.split("."))


def parameter_groups(
    model: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, in model order: ``[decayed, not decayed]``, then one
    pair per entry of ``lr_scales`` (a submodule's name -> a multiple of the peak learning rate) whose
    parameters it takes, each group marked with its ``lr_scale`` (empty groups are left out)."""
    scales = dict(lr_scales or {})
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{module_name}.{name}" if module_name else name
            scale = next((v for k, v in scales.items() if k in full.split(".")), 1.0)
            groups.setdefault((scale, decays(full, param, module)), []).append(param)
    if not seen:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimise")
    out = [{"params": groups.pop((1.0, True)), "weight_decay": weight_decay, "lr_scale": 1.0}]
    out.append({"params": groups.pop((1.0, False)), "weight_decay": 0.0, "lr_scale": 1.0})
    for (scale, decayed), params in groups.items():
        out.append({"params": params, "weight_decay": weight_decay if decayed else 0.0, "lr_scale": scale})
    return out


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = GENERATOR_BETAS,
    lr_scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters, decaying only what :func:`decays` says; the submodules
    named in ``lr_scales`` (e.g. ``{"dial": 10.0}``) train at that multiple of ``lr``."""
    groups = parameter_groups(model, weight_decay, lr_scales)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_factor(step: int, steps: int, warmup_steps: int, min_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of the peak.

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then cosine
    decay from 1 to ``min_ratio`` at step ``steps``; ``min_ratio = 1`` holds the peak after warm-up.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The :func:`lr_factor` schedule; step it once per optimizer step (:func:`optimizer_step` does)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps, warmup_steps, min_ratio)
    )


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0 disables clipping); returns the norm before it.
    With FSDP-sharded parameters the norm is a distributed tensor: its value is the whole model's."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else math.inf)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def optimizer_step(
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    max_norm: float,
) -> float:
    """Zero the gradients, backpropagate ``loss``, clip ``model``'s gradients, step; returns the grad norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_gradients(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return grad_norm


# --------------------------------------------------------------------------------------------
# Step seeding
# --------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, stream: int = 0, rank: int = 0) -> int:
    """The seed of one kind of draw (``stream``, below 7 919) of one step on one rank."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + stream) % (2**63 - 1)


def step_generator(
    seed: int, step: int, stream: int = 0, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A fresh generator on ``device`` seeded by :func:`step_seed`: draws depend on nothing but its arguments."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, stream, rank))


# --------------------------------------------------------------------------------------------
# Snapshots and resume
# --------------------------------------------------------------------------------------------


def save_training_snapshot(
    out: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: dict[str, Any],
    provenance: dict[str, Any],
    counters: dict[str, int] | None = None,
) -> Path:
    """Write ``out/checkpoints/step_XXXXXXX`` (weights, optimizer, schedule, step, ``counters``)."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **(counters or {})}
    return save_snapshot(out, step, model.state_dict(), config, provenance, state)


def resume_training(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    resume: bool,
    trim_history: bool = True,
    sharded: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Load the newest snapshot of ``out`` (when ``resume``) into the model, optimizer and schedule.

    ``sharded``: the model is FSDP-sharded and every rank loads its shards of a sharded snapshot
    (:mod:`musicdistill.storage.sharded_snapshot`); whole and sharded snapshots do not mix.

    Returns ``(step to start from, the snapshot's training state)``: ``(0, {})`` without a snapshot.
    With ``trim_history`` the history rows after that step are dropped (all of them from step 0), so
    the resumed run appends exactly the rows an uninterrupted run would have written.
    """
    snap = latest_snapshot(out) if resume else None
    start, state = 0, {}
    if snap is not None and sharded:
        state = load_sharded_snapshot(snap, model, optimizer, scheduler)
        start = int(state["step"])
    elif snap is not None:
        if is_sharded_snapshot(snap):
            raise CheckpointError(
                f"{snap} holds shards written by an FSDP run (distill.parallel=fsdp); resume it with "
                "distill.parallel=fsdp under torchrun, or start this run in a new folder"
            )
        model.load_state_dict(load_checkpoint(snap).state_dict)
        state = load_training_state(snap)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            raise CheckpointError(
                f"{snap}: its optimizer state does not fit this optimizer ({exc}); it was written with "
                "other parameter groups (an older musicdistill or another model). Start the run again "
                "without resuming, or into a new folder"
            ) from None
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
        log.info("resumed from %s at step %d", snap, start)
    elif resume:
        log.info("no snapshot in %s; starting from scratch", out)
    if trim_history:
        trim_rows(out, start)
    return start, state


# --------------------------------------------------------------------------------------------
# Time budget
# --------------------------------------------------------------------------------------------


def deadline(max_minutes: float) -> float:
    """The :func:`time.monotonic` time at which a ``max_minutes`` budget runs out (never when 0)."""
    return time.monotonic() + 60 * max_minutes if max_minutes > 0 else math.inf


def past(when: float) -> bool:
    """Whether the :func:`deadline` ``when`` has passed."""
    return time.monotonic() > when
