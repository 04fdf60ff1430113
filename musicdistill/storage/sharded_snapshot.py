"""Resumable snapshots of a sharded (FSDP) training run, through ``torch.distributed.checkpoint``.

A sharded snapshot is a folder ``<out>/checkpoints/step_XXXXXXX`` like a whole one
(:mod:`musicdistill.storage.checkpoint`), except that the weights and the AdamW moments are not
gathered: every rank writes its own shards with DCP's safetensors writer into ``shards/`` (no
pickle anywhere, the metadata included), and rank 0 writes ``trainer.json`` (the scheduler, the
optimizer's hyperparameters, counters, the step), ``config.yaml`` and, last, after every rank has
written, ``provenance.json`` (with ``"sharded": {"world_size": N}``), then publishes it as
``latest``. A run killed at any point resumes from the last published snapshot; DCP reshards on
load, so a run may resume on another number of processes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from musicdistill.storage.atomic import atomic_write_text
from musicdistill.storage.checkpoint import (
    CONFIG_FILE,
    PROVENANCE_FILE,
    CheckpointError,
    load_training_state,
    publish_latest,
    save_training_state,
    snapshot_dir,
)
from musicdistill.storage.environment import environment

log = logging.getLogger(__name__)

#: the folder of a sharded snapshot that holds every rank's shards
SHARDS = "shards"
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."


def is_sharded_snapshot(snap: Path) -> bool:
    """Whether a snapshot folder holds shards (written by an FSDP run) rather than whole weights."""
    return (snap / SHARDS).is_dir()


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[dict]]:
    """This rank's view of the model and optimizer state: a flat ``name -> tensor`` dict (DTensor
    shards) for DCP, and the optimizer's parameter groups (hyperparameters, by parameter name)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    flat: dict[str, Any] = {MODEL_PREFIX + k: v for k, v in get_model_state_dict(model).items()}
    optim = get_optimizer_state_dict(model, optimizer)
    for name, state in optim["state"].items():
        for key, value in state.items():
            flat[f"{OPTIM_PREFIX}{name}.{key}"] = value
    return flat, optim["param_groups"]


def save_sharded_snapshot(
    out: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: dict[str, Any],
    provenance: dict[str, Any],
    counters: dict[str, int],
    is_main: bool,
    world_size: int,
    keep_last: int = 2,
) -> Path:
    """Every rank calls this at the same step; returns the published snapshot folder."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    snap = snapshot_dir(out, step)
    if is_main and snap.exists():  # a half-written folder of an earlier, killed run
        shutil.rmtree(snap)
    dist.barrier()
    flat, groups = _tensors(model, optimizer)
    dcp.save(
        flat, storage_writer=dcp.HuggingFaceStorageWriter(path=str(snap / SHARDS), save_distributed=True)
    )
    dist.barrier()
    if is_main:
        state = {"scheduler": scheduler.state_dict(), "param_groups": groups, **counters, "step": step}
        save_training_state(snap, state)
        atomic_write_text(snap / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        prov = {
            **provenance,
            "step": step,
            "sharded": {"world_size": world_size},
            "environment": environment(),
        }
        atomic_write_text(snap / PROVENANCE_FILE, json.dumps(prov, indent=2, sort_keys=True))
        publish_latest(out, snap, keep_last=keep_last)
    dist.barrier()
    return snap


def load_sharded_snapshot(
    snap: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Load a sharded snapshot into a sharded model, its optimizer and schedule (every rank calls
    it); returns the training state (step, counters)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    if not is_sharded_snapshot(snap):
        raise CheckpointError(
            f"{snap} holds whole weights (written with distill.parallel=ddp or one process); resume it "
            "with distill.parallel=ddp, or start this FSDP run in a new folder"
        )
    state = load_training_state(snap)
    flat, _ = _tensors(model, optimizer)
    dcp.load(flat, storage_reader=dcp.HuggingFaceStorageReader(path=str(snap / SHARDS)))
    model_state = {k[len(MODEL_PREFIX) :]: v for k, v in flat.items() if k.startswith(MODEL_PREFIX)}
    optim_state: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith(OPTIM_PREFIX):
            name, _, field = key[len(OPTIM_PREFIX) :].rpartition(".")
            optim_state.setdefault(name, {})[field] = value
    set_model_state_dict(model, model_state)
    set_optimizer_state_dict(model, optimizer, {"state": optim_state, "param_groups": state["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from sharded snapshot %s at step %d", snap, int(state["step"]))
    return state
