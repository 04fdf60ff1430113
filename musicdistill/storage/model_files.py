"""Model folders: ``model.safetensors`` plus a ``model.json`` that names, describes and checksums them.

The embedder (:mod:`musicdistill.judges.embedder`), the scorer (:mod:`musicdistill.judges.scorer`) and the oracle
(:mod:`musicdistill.judges.oracle`) are each saved as such a folder; ``kind`` in ``model.json`` says which.
The JSON files are tagged with a format name and version (:func:`write_tagged_json`,
:func:`read_tagged_json`), the same check the codec's ``codec.json`` uses (:mod:`musicdistill.codec.interface`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from musicdistill.storage.atomic import atomic_write_text, atomic_write_with
from musicdistill.storage.checkpoint import file_sha256

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
FORMAT = "musicdistill-model"
FORMAT_VERSION = 1


def write_tagged_json(path: str | Path, format_tag: str, version: int, record: dict[str, Any]) -> Path:
    """Write ``{"format": format_tag, "version": version, **record}`` as indented JSON, atomically."""
    tagged = {"format": format_tag, "version": version, **record}
    return atomic_write_text(path, json.dumps(tagged, indent=2) + "\n")


def read_tagged_json(path: Path, format_tag: str, version: int, what: str, fix: str) -> dict[str, Any]:
    """Parse a file written by :func:`write_tagged_json` and check its format tag and version.

    ``what`` names the file in messages (``"model"``, ``"codec"``); ``fix`` says how to recreate it.
    Raises ValueError naming the file.
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != format_tag:
        raise ValueError(f'{path} is not a musicdistill {what} file (expected "format": "{format_tag}")')
    if meta.get("version") != version:
        raise ValueError(
            f"{path} has format version {meta.get('version')!r}; this musicdistill reads version {version}"
        )
    return meta


def save_model_folder(
    directory: str | Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (kind, meta, the weights' sha256) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = atomic_write_with(directory / MODEL_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    record = {"kind": kind, **meta, "weights": {"file": MODEL_WEIGHTS, "sha256": file_sha256(path)}}
    write_tagged_json(directory / MODEL_JSON, FORMAT, FORMAT_VERSION, record)
    return directory


def read_model_json(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check ``model.json``; raises FileNotFoundError / ValueError naming the file and the fix."""
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a model folder written by musicdistill "
            "(train one with 'musicdistill embed train|scorer|oracle')"
        )
    meta = read_tagged_json(path, FORMAT, FORMAT_VERSION, "model", "retrain the model")
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a '{meta.get('kind')}' model, not a '{kind}'")
    return meta


def load_model_folder(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``model.json`` and the verified tensors of a folder written by :func:`save_model_folder`."""
    directory = Path(directory)
    meta = read_model_json(directory, kind)
    path = directory / MODEL_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the folder was copied incompletely, retrain or copy it again"
        )
    if file_sha256(path) != meta["weights"]["sha256"]:
        raise ValueError(
            f"{path}: its sha256 does not match {MODEL_JSON}; the folder is incomplete or was modified"
        )
    return meta, load_file(str(path))
