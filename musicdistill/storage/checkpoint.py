"""Checkpoints: safetensors weights + YAML config + JSON provenance, written atomically.

A checkpoint is a folder::

    model.safetensors    the weights (never pickled)
    config.yaml          the resolved configuration that built the model
    provenance.json      where it came from (kind, base hash, beta, gamma, step, parents, ...)
                         plus ``model_sha256``, the hash of model.safetensors

Every file is written atomically and ``provenance.json`` is written last, so a checkpoint whose
recorded hash matches its weights is complete. Training runs keep resumable snapshots under
``<out>/checkpoints/step_XXXXXXX`` (adding ``trainer.safetensors`` + ``trainer.json`` with the
optimizer and scheduler state, the step and counters; no RNG state is needed, since every random
draw is seeded by its step, see :func:`musicdistill.loop_kit.step_generator`) and publish the
newest complete one in ``<out>/checkpoints/latest``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from musicdistill.storage.atomic import atomic_write_text, atomic_write_with
from musicdistill.storage.environment import environment

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
LATEST_FILE = "latest"


class CheckpointError(ValueError):
    """A checkpoint folder is missing files or is inconsistent; the message names the file."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights, the config dict that built them, and provenance."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    provenance: dict[str, Any]
    path: Path

    @property
    def model_hash(self) -> str:
        return str(self.provenance.get("model_sha256", ""))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _contiguous(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared or non-contiguous storage: give each tensor its own copy."""
    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def save_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    provenance: dict[str, Any],
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (weights, config, then provenance with the weights' hash
    and the environment that wrote it: package versions, CUDA, git commit).

    ``extra_json`` maps file names (e.g. ``"metrics.json"``) to JSON-serialisable objects.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _contiguous(state_dict)
    atomic_write_with(directory / MODEL_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(directory / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    for name, obj in (extra_json or {}).items():
        atomic_write_text(directory / name, json.dumps(obj, indent=2, sort_keys=True))
    prov = dict(provenance)
    prov["model_sha256"] = file_sha256(directory / MODEL_FILE)
    prov["environment"] = environment()
    atomic_write_text(directory / PROVENANCE_FILE, json.dumps(prov, indent=2, sort_keys=True))
    log.debug("saved checkpoint %s", directory)
    return directory


def _require(directory: Path, name: str, hint: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {name} is missing; {hint}")
    return path


def load_checkpoint(directory: str | Path, verify: bool = True) -> Checkpoint:
    """Read a checkpoint folder; with ``verify`` check the weights against the recorded hash."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"checkpoint folder {directory} does not exist; pass a folder written by musicdistill"
        )
    hint = "the folder is not a musicdistill checkpoint, or it was copied incompletely"
    model_path = _require(directory, MODEL_FILE, hint)
    config_path = _require(directory, CONFIG_FILE, hint)
    prov_path = _require(directory, PROVENANCE_FILE, hint + " (provenance.json is written last)")
    try:
        provenance = json.loads(prov_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{prov_path}: not valid JSON ({exc})") from exc
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{config_path}: not valid YAML ({exc})") from exc
    if verify and provenance.get("model_sha256") and file_sha256(model_path) != provenance["model_sha256"]:
        raise CheckpointError(
            f"{model_path}: its sha256 does not match provenance.json; the checkpoint is incomplete or was "
            "modified. Use another checkpoint (e.g. the previous step) or re-export it."
        )
    try:
        state_dict = load_file(str(model_path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{model_path}: cannot read safetensors ({exc})") from exc
    return Checkpoint(state_dict=state_dict, config=config, provenance=provenance, path=directory)


# --------------------------------------------------------------------------------------------
# Training state (resume)
# --------------------------------------------------------------------------------------------


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by ``{"__tensor__": key}`` and collect them."""
    if isinstance(obj, torch.Tensor):
        key = prefix.rstrip(".")
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _split_tensors(v, f"{prefix}{k}.", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_split_tensors(v, f"{prefix}{i}.", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_join_tensors(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return obj


def save_training_state(directory: str | Path, state: dict[str, Any]) -> None:
    """Save a nested dict of optimizer/scheduler state and counters without pickling.

    Tensors go to ``trainer.safetensors``; the structure and plain values to ``trainer.json``.
    """
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    structure = _split_tensors(state, "", tensors)
    atomic_write_with(directory / TRAINER_TENSORS, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(directory / TRAINER_JSON, json.dumps(structure))


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_training_state`."""
    directory = Path(directory)
    hint = "this checkpoint has no training state; resume needs a snapshot written during training"
    tensors = load_file(str(_require(directory, TRAINER_TENSORS, hint)))
    structure = json.loads(_require(directory, TRAINER_JSON, hint).read_text(encoding="utf-8"))
    return _join_tensors(structure, tensors)


def snapshot_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step_{step:07d}"


def publish_latest(out: str | Path, snapshot: Path, keep_last: int = 2) -> None:
    """Point ``<out>/checkpoints/latest`` at a complete snapshot and delete older ones."""
    root = Path(out) / "checkpoints"
    atomic_write_text(root / LATEST_FILE, snapshot.name + "\n")
    snapshots = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in snapshots[:-keep_last] if keep_last > 0 else []:
        if old != snapshot:
            shutil.rmtree(old, ignore_errors=True)


def latest_snapshot(out: str | Path) -> Path | None:
    """The newest published snapshot of a training run, or None."""
    pointer = Path(out) / "checkpoints" / LATEST_FILE
    if not pointer.is_file():
        return None
    snap = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    if not (snap / PROVENANCE_FILE).is_file():
        raise CheckpointError(f"{pointer} points at {snap}, which is not a complete checkpoint")
    return snap


def save_snapshot(
    out: str | Path,
    step: int,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    provenance: dict[str, Any],
    training_state: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write a resumable snapshot ``<out>/checkpoints/step_XXXXXXX`` and publish it as the latest."""
    snap = snapshot_dir(out, step)
    save_checkpoint(snap, state_dict, config, {**provenance, "step": step})
    save_training_state(snap, {**training_state, "step": step})
    publish_latest(out, snap, keep_last=keep_last)
    return snap
