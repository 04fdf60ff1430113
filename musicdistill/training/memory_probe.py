"""Measured tensor memory on any device: the peak bytes of live tensor storage while code runs.

On a GPU ``torch.cuda.max_memory_allocated`` says this; a CPU has no such counter, so
:class:`TensorMemoryProbe` counts it itself: a dispatch mode sees every tensor an operator creates
and adds its storage's bytes once; a storage resized in place (FSDP frees and refills its gathered
parameters that way) is counted at its new size; a storage's bytes leave the count when it is
freed. Storages that existed before (the models' parameters) are added with
:meth:`TensorMemoryProbe.hold`. The memory plan's tests compare its figures with this peak
(:mod:`musicdistill.training.memory_plan`).

A DTensor (FSDP's sharded parameters, gradients and AdamW moments) is counted by its shard on this
rank; the temporaries inside a DTensor operator run below the dispatch mode and are not seen.
"""

from __future__ import annotations

import traceback
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemoryProbe(TorchDispatchMode):
    """``with TensorMemoryProbe() as probe: ...``; then ``probe.peak`` (bytes) and ``probe.live``.

    ``trace``: remember the package's call frames at the peak (``peak_at``), to see which phase it is.
    """

    def __init__(self, trace: bool = False) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.trace = trace
        self.peak_at: list[str] = []
        self._sizes: dict[int, int] = {}  # storage implementation -> bytes counted
        self._refs: dict[int, Any] = {}
        self._resize = None

    # -- counting -----------------------------------------------------------------------------

    def _count(self, key: int, size: int) -> None:
        self.live += size - self._sizes.get(key, 0)
        self._sizes[key] = size
        if self.live > self.peak:
            self.peak = self.live
            if self.trace:
                self.peak_at = [
                    f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                    for f in traceback.extract_stack()
                    if "musicdistill" in f.filename
                ]

    def _add(self, storage: torch.UntypedStorage) -> None:
        key, size = storage._cdata, storage.nbytes()
        if key in self._sizes:  # seen before: an in-place op (aten.resize_, set_) may have resized it
            if self._sizes[key] != size:
                self._count(key, size)
            return
        self._count(key, size)
        self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)

    def hold(self, *modules: nn.Module) -> None:
        """Count the parameters and buffers of ``modules`` (they existed before the probe)."""
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                local = t.to_local() if hasattr(t, "to_local") else t
                self._add(local.untyped_storage())

    # -- hooks --------------------------------------------------------------------------------

    def __enter__(self) -> TensorMemoryProbe:
        original = torch.UntypedStorage.resize_
        probe = self

        def resize_(storage: torch.UntypedStorage, size: int) -> Any:
            out = original(storage, size)
            probe._count(storage._cdata, storage.nbytes())
            if storage._cdata not in probe._refs:
                key = storage._cdata
                probe._refs[key] = weakref.ref(storage, lambda _ref, key=key: probe._free(key))
            return out

        self._resize = original
        torch.UntypedStorage.resize_ = resize_
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((out, args))[0]:
            t = getattr(t, "_local_tensor", t)  # a DTensor: its shard on this rank
            if isinstance(t, torch.Tensor) and not t.is_meta:
                try:
                    self._add(t.untyped_storage())
                except (RuntimeError, NotImplementedError):  # wrapper tensors without storage
                    pass
        return out
