"""Evaluated systems on disk: an evaluation resumes from them, and the main job's front stage hands
the base's systems to the evaluation.

One folder per system, ``<evaluation>/systems/<slug>/``:

- ``result.safetensors``: the per-prompt values ``[B]`` (float64, one tensor per metric) and the
  embeddings ``[B·G, E]`` of its samples under each diversity judge (for the Fréchet distances);
- ``result.json``: the key, the system's name, generation seconds and frames.

The key is a hash of everything the result depends on: the system's settings, the checkpoint's
weights, the prompts, the number of samples, the seed, the decoding batch, the duration, the
judges' files and the source of the code that samples, decodes and judges (:func:`code_digest`). A stored result is used only when its key matches, so a changed checkpoint, judge
or setting is evaluated again. Its decoded samples live in ``<evaluation>/samples/<slug>/`` as
:func:`musicdistill.evaluation.evaluate.write_samples` writes them; a result taken from another
folder brings its samples along.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from musicdistill.evaluation.systems import SystemSpec
from musicdistill.storage.atomic import atomic_write_text, atomic_write_with
from musicdistill.storage.checkpoint import file_sha256

log = logging.getLogger(__name__)

SYSTEMS = "systems"
SAMPLES = "samples"
RESULT_TENSORS = "result.safetensors"
RESULT_JSON = "result.json"
FORMAT = "musicdistill.evaluated_system"
VERSION = 1


@dataclass(frozen=True)
class StoredSystem:
    """A system's per-prompt values (``[B]`` each), embeddings (``[B·G, E]`` each) and cost."""

    per_prompt: dict[str, list[float]]
    embeddings: dict[str, torch.Tensor]
    seconds: float
    frames: int


def files_digest(folders: list[Path | None]) -> str:
    """A hash of every file under ``folders`` (names and contents; None and missing folders count as absent)."""
    h = hashlib.sha256()
    for folder in folders:
        h.update(b"|" + (str(folder.name).encode() if folder else b"-"))
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()


def checkpoint_digest(checkpoint: str) -> str:
    """The hash of a checkpoint folder's weights (``*.safetensors``), or of its path when it has none."""
    folder = Path(checkpoint)
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not weights:
        return hashlib.sha256(checkpoint.encode()).hexdigest()
    return hashlib.sha256("".join(file_sha256(p) for p in weights).encode()).hexdigest()


def system_key(spec: SystemSpec, context: str) -> str:
    """The key of ``spec``'s result in an evaluation whose prompts, seeds and judges hash to ``context``."""
    record = {
        "context": context,
        "settings": spec.settings(),
        "weights": checkpoint_digest(spec.checkpoint),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


#: the package folders and modules whose source decides a system's samples and scores
CODE = ("generation", "model", "codec", "dsp", "judges", "evaluation/evaluate.py", "evaluation/metrics.py")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """A hash of the source of :data:`CODE` (read once per process): a stored result from other
    code is evaluated again."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for entry in CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            h.update(file.relative_to(root).as_posix().encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def evaluation_context(
    prompts: list[str], group: int, duration: float, seed: int, batch_size: int, judges_digest: str
) -> str:
    """What every system's result in one evaluation shares, hashed (see :func:`system_key`)."""
    record = {
        "prompts": prompts,
        "group": group,
        "duration": duration,
        "seed": seed,
        "batch_size": batch_size,
        "judges": judges_digest,
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class SystemStore:
    """Writes evaluated systems under ``out`` and finds them there or under the ``reuse`` folders."""

    def __init__(self, out: Path, context: str, reuse: tuple[Path, ...] = ()) -> None:
        self.out, self.context, self.reuse = Path(out), context, tuple(Path(p) for p in reuse)

    def key(self, spec: SystemSpec) -> str:
        return system_key(spec, self.context)

    def load(self, spec: SystemSpec) -> StoredSystem | None:
        """The stored result of ``spec`` with a matching key (its samples copied into ``out``), else None."""
        key = self.key(spec)
        for root in (self.out, *self.reuse):
            stored = _read(root / SYSTEMS / spec.slug, key)
            if stored is None:
                continue
            if root != self.out:
                _copy_samples(root, self.out, spec.slug)
                self.save(spec, stored)
            log.info("%s: evaluated before (%s), reused", spec.name, root / SYSTEMS / spec.slug)
            return stored
        return None

    def save(self, spec: SystemSpec, stored: StoredSystem) -> Path:
        """Write ``stored`` as ``spec``'s result under ``out`` (the tensors first, the JSON that validates them last)."""
        folder = self.out / SYSTEMS / spec.slug
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"per_prompt.{k}": torch.tensor(v, dtype=torch.float64) for k, v in stored.per_prompt.items()
        }
        tensors.update(
            {f"embedding.{k}": v.detach().cpu().contiguous() for k, v in stored.embeddings.items()}
        )
        atomic_write_with(folder / RESULT_TENSORS, lambda p: save_file(tensors, str(p)))
        record = {
            "format": FORMAT,
            "version": VERSION,
            "key": self.key(spec),
            "name": spec.name,
            "seconds": stored.seconds,
            "frames": stored.frames,
            "tensors_sha256": file_sha256(folder / RESULT_TENSORS),
        }
        atomic_write_text(folder / RESULT_JSON, json.dumps(record, indent=2))
        return folder


def _read(folder: Path, key: str) -> StoredSystem | None:
    """The result in ``folder`` if its JSON names ``key`` and its tensors are the ones it hashed."""
    try:
        record: dict[str, Any] = json.loads((folder / RESULT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tensors_path = folder / RESULT_TENSORS
    if (
        record.get("format") != FORMAT
        or record.get("version") != VERSION
        or record.get("key") != key
        or not tensors_path.is_file()
        or file_sha256(tensors_path) != record.get("tensors_sha256")
    ):
        return None
    tensors = load_file(str(tensors_path))
    per_prompt = {
        k.split(".", 1)[1]: np.asarray(v, dtype=np.float64).tolist()
        for k, v in tensors.items()
        if k.startswith("per_prompt.")
    }
    embeddings = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("embedding.")}
    return StoredSystem(per_prompt, embeddings, float(record["seconds"]), int(record["frames"]))


def _copy_samples(src_root: Path, dst_root: Path, slug: str) -> None:
    src = src_root / SAMPLES / slug
    if src.is_dir():
        shutil.copytree(src, dst_root / SAMPLES / slug, dirs_exist_ok=True)
