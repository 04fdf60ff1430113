"""musicdistill: diversity-rewarded CFG distillation for text-to-music token generators.

The Python API (imported on first use, so ``import musicdistill`` stays light)::

    import musicdistill

    model = musicdistill.load("runs/default", "merge", lam=0.5)
    audio, sample_rate = model.generate(["calm piano in C major, slow tempo"], seed=0)
    musicdistill.save_wav("calm.wav", audio[0], sample_rate)

- ``load(path, role=None, *, lam=None, device="auto")``: a checkpoint, a run folder and a role
  (base, teacher, quality, diversity, control, offline, merge), or a transformers MusicGen folder
  (:mod:`musicdistill.api.loading`); returns a ``Model`` with ``generate`` (:mod:`musicdistill.api.model`).
- ``distill``, ``merge``, ``evaluate``: what the command line runs (:mod:`musicdistill.api.workflows`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "load": "musicdistill.api.loading",
    "Model": "musicdistill.api.model",
    "Generation": "musicdistill.api.model",
    "save_wav": "musicdistill.api.model",
    "distill": "musicdistill.api.workflows",
    "merge": "musicdistill.api.workflows",
    "evaluate": "musicdistill.api.workflows",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'musicdistill' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
