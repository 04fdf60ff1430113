"""The demo's dial for a conditioned student: the slider's value is the diversity weight w itself.

A conditioned student (docs/method.md 4.1) takes w as an input, so moving the slider changes no weight:
the dial only remembers w, and every request samples the one model at it. Nothing is merged or
cached, so the demo holds one decoder's weights whatever the slider does. It has the interface of
:class:`musicdistill.demo.weight_dial.WeightDial` that the engine uses (``model``, ``lam``, ``set``,
``w``, ``describe``, ``endpoint_bytes``).
"""

from __future__ import annotations

import threading

import torch

from musicdistill.model.dial import check_w


class ConditionedDial:
    """The slider of a conditioned student: w in [0, 1], with β(w) = w · ``beta_max`` shown beside it."""

    symbol = "w"

    def __init__(self, model: torch.nn.Module, beta_max: float, decimals: int = 6) -> None:
        if getattr(model, "dial", None) is None:
            raise ValueError(
                "the model has no diversity dial (it is not a conditioned student); serve it with the "
                "merge slider (--quality/--diversity) instead"
            )
        self.model, self.beta_max, self.decimals = model, float(beta_max), decimals
        self.moves = 0  # the weights are never rewritten; kept for the engine's read-out
        self._w: float | None = None
        self._lock = threading.Lock()

    @property
    def lam(self) -> float | None:
        """The slider's value now: w (None before the first request)."""
        return self._w

    @property
    def w(self) -> float | None:
        """The diversity weight the next request samples at."""
        return self._w

    def endpoint_bytes(self) -> int:
        """Nothing is held beside the model."""
        return 0

    def set(self, w: float) -> float:
        """Take ``w`` for the next requests (validated, rounded); no weight changes, so 0 seconds."""
        with self._lock:
            self._w = round(check_w(w), self.decimals)
        return 0.0

    def describe(self) -> str:
        """The read-out of the student's setting: w and the β it was trained with there."""
        w = self._w or 0.0
        return f"conditioned w={w:g} (beta = {w * self.beta_max:g}), no CFG"
