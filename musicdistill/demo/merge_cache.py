"""Merged weights per slider position: an LRU cache of ``merge_state_dicts(quality, diversity, λ)``.

The demo keeps ONE student model and loads the merged weights of the λ the user picked into it
(``model.load_state_dict(cache.get(λ))``). Each λ is merged at most once while it stays cached;
λ is keyed after rounding to ``decimals`` places, so slider values such as 0.30000000000000004 and
0.3 share an entry. The cached state dicts are shared: callers must not modify them in place
(``load_state_dict`` copies them into the model's parameters, which is what the demo does).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import torch

from musicdistill.merging import MERGE_METHODS, check_compatible, check_lambda, merge_state_dicts

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


class MergeCache:
    """Merged state dicts of a quality (λ = 0) and a diversity (λ = 1) finetune, least recently used evicted.

    Args:
        quality, diversity: state dicts with the same keys, shapes and dtypes (checked here).
        method: ``"lerp"`` or ``"slerp"`` (see :mod:`musicdistill.merging`).
        base: the shared base weights; required by SLERP.
        capacity: merged state dicts kept (e.g. 11 covers a slider with step 0.1).
        decimals: λ is rounded to this many decimals before it is used and cached.

    Thread-safe: concurrent ``get`` calls for the same λ merge it once.
    """

    def __init__(
        self,
        quality: StateDict,
        diversity: StateDict,
        method: str = "lerp",
        base: StateDict | None = None,
        capacity: int = 11,
        decimals: int = 6,
    ) -> None:
        if method not in MERGE_METHODS:
            raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
        if method == "slerp" and base is None:
            raise ValueError(
                "method='slerp' interpolates task vectors, so it needs the base state dict (base=...)"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity={capacity!r} must be an integer >= 1 (merged state dicts kept)")
        check_compatible(quality, diversity, "quality", "diversity")
        if base is not None:
            check_compatible(quality, base, "quality", "base")
        self.quality, self.diversity, self.base = quality, diversity, base
        self.method, self.capacity, self.decimals = method, capacity, decimals
        self.merges = 0  # merges computed so far (cache misses)
        self._entries: OrderedDict[float, StateDict] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, lam: float) -> float:
        """The cache key of ``lam``: validated to lie in [0, 1], rounded to ``decimals`` places."""
        return round(check_lambda(lam), self.decimals)

    def get(self, lam: float) -> StateDict:
        """The merged state dict at ``lam`` (shared; do not modify), merging it on a cache miss."""
        key = self.key(lam)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            merged = merge_state_dicts(self.quality, self.diversity, key, self.method, self.base)
            self.merges += 1
            self._entries[key] = merged
            while len(self._entries) > self.capacity:
                evicted, _ = self._entries.popitem(last=False)
                log.debug("merge cache: evicted λ=%g", evicted)
            return merged

    def cached(self) -> list[float]:
        """The λ values currently cached, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, lam: float) -> bool:
        key = self.key(lam)
        with self._lock:
            return key in self._entries
