"""The demo's quality ↔ diversity dial: one model whose weights are set to the merge at λ in place.

The two endpoints (the quality finetune at λ = 0, the diversity finetune at λ = 1) are held once,
on the CPU: the demo memory-maps them (from their checkpoints, or from copies converted to its
dtype), so they stay in the file cache, not in the process's own memory; given as ordinary
tensors, they are copied in ``store_dtype``. Moving the dial rewrites the model's floating-point tensors one at a time with
:func:`musicdistill.merging.merge_tensor` (LERP, or SLERP of the task vectors from the shared
base), so no merged state dict is ever held: memory is the model plus the endpoints, whatever
the number of slider positions. At λ = 0 and λ = 1 the model holds the endpoints' values exactly
(cast to its dtype).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from musicdistill.merging import MERGE_METHODS, check_compatible, check_lambda, merge_tensor
from musicdistill.storage.mapped_weights import map_safetensors

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def _stored(state: StateDict, dtype: torch.dtype | None, copy: bool) -> StateDict:
    """``state`` on the CPU, floating tensors in ``dtype`` (None keeps theirs): detached copies, or
    with ``copy`` off the tensors themselves wherever no conversion is needed (read-only inputs,
    such as memory-mapped endpoints)."""
    out = {}
    for k, v in state.items():
        target = dtype if (dtype is not None and v.is_floating_point()) else v.dtype
        held = v.detach().to("cpu", target)
        out[k] = held.clone() if (copy and held.data_ptr() == v.data_ptr()) else held
    return out


class WeightDial:
    """Sets ``model``'s weights to the merge of ``quality`` and ``diversity`` at λ, in place.

    Args:
        model: the live model (its ``state_dict`` keys must be the endpoints' keys).
        quality, diversity: the endpoints' state dicts (same keys, shapes and dtypes).
        method: ``"lerp"`` or ``"slerp"`` (SLERP needs ``base``, the shared base weights).
        store_dtype: dtype the endpoints are kept in on the CPU (None: as given).
        copy: keep copies of the endpoints (default); off, tensors that need no conversion are held
            as given, e.g. memory-mapped from their checkpoints (:mod:`musicdistill.storage.mapped_weights`),
            so they stay in the file cache instead of the process's memory.
        decimals: λ is rounded to this many decimals.

    Thread-safe: one dial move at a time.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        quality: StateDict,
        diversity: StateDict,
        method: str = "lerp",
        base: StateDict | None = None,
        store_dtype: torch.dtype | None = None,
        copy: bool = True,
        decimals: int = 6,
    ) -> None:
        if method not in MERGE_METHODS:
            raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
        if method == "slerp" and base is None:
            raise ValueError(
                "method='slerp' interpolates task vectors, so it needs the base state dict (base=...)"
            )
        check_compatible(quality, diversity, "quality", "diversity")
        live = model.state_dict()
        missing = sorted(set(quality) - set(live))
        if missing:
            raise ValueError(
                f"the model has no tensors named {missing[:5]}; the dial needs the endpoints' model"
            )
        self.model, self.method, self.decimals = model, method, decimals
        self.quality = _stored(quality, store_dtype, copy)
        self.diversity = _stored(diversity, store_dtype, copy)
        self.base = _stored(base, store_dtype, copy) if base is not None else None
        self.moves = 0  # times the weights were rewritten
        self._lam: float | None = None
        self._lock = threading.Lock()

    symbol = "λ"

    @property
    def lam(self) -> float | None:
        """λ of the weights in the model now (None before the first move)."""
        return self._lam

    @property
    def w(self) -> None:
        """A merge takes no diversity weight (only a conditioned student does)."""
        return None

    def describe(self) -> str:
        """The read-out of the student's setting."""
        return f"merged λ={self._lam:g}, no CFG"

    def key(self, lam: float) -> float:
        """``lam`` validated to lie in [0, 1] and rounded to ``decimals`` places."""
        return round(check_lambda(lam), self.decimals)

    def endpoint_bytes(self) -> int:
        """Bytes the endpoints (and the SLERP base) take on the CPU."""
        held = [self.quality, self.diversity, *([self.base] if self.base is not None else [])]
        return sum(t.numel() * t.element_size() for state in held for t in state.values())

    @torch.no_grad()
    def set(self, lam: float) -> float:
        """Write the merge at ``lam`` into the model (nothing when it already holds it); returns
        the seconds it took."""
        key = self.key(lam)
        with self._lock:
            if key == self._lam:
                return 0.0
            start = time.perf_counter()
            live = self.model.state_dict()
            for name, q in self.quality.items():
                target = live[name]
                if not q.is_floating_point():
                    continue  # buffers equal in both endpoints (checked), already in the model
                d = self.diversity[name]
                base = self.base[name] if self.base is not None else None
                merged = merge_tensor(q, d, key, self.method, base, compute=torch.float32)
                target.copy_(merged)
            self._lam = key
            self.moves += 1
            seconds = time.perf_counter() - start
        log.debug("dial: λ=%g written in %.3f s", key, seconds)
        return seconds


def mapped_endpoint(weights: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A checkpoint's weights memory-mapped in ``dtype``: the file itself when its floating tensors
    are in that dtype, else a converted copy written once to a temporary folder (removed at exit)
    and mapped, so the dial never holds its endpoints in the process's own memory."""
    tensors = map_safetensors(weights)
    if all(t.dtype == dtype for t in tensors.values() if t.is_floating_point()):
        return tensors
    folder = Path(tempfile.mkdtemp(prefix="musicdistill-dial-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    converted = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(converted, str(folder / weights.name))
    del converted
    return map_safetensors(folder / weights.name)


def endpoint_folders(paths: Any, method: str) -> list[tuple[str, Path]]:
    """The checkpoints the dial reads: quality, diversity, and for SLERP the base (the teacher)."""
    folders = [("quality", paths.quality), ("diversity", paths.diversity)]
    if method == "slerp" and paths.teacher is not None:
        folders.append(("base", paths.teacher))
    return folders
