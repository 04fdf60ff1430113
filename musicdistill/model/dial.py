"""The diversity dial: a scalar weight w in [0, 1] as a condition of the generator (docs/method.md 4.1).

A conditioned student serves the whole quality-diversity range with one set of weights: its reward
weight during distillation is β(w) = w · β_max, and at inference w is an input, like the caption.
:class:`DiversityDial` maps w ``[B]`` to a vector ``[B, 1, D]`` that the native generator adds to every
input step (as the sentence-embedding term of ``text_fusion: sum`` is). Its output layer starts at
zero, so a freshly attached dial leaves the generator's outputs unchanged for every w: w can change
samples only through the dial's own parameters. A checkpoint holds it as ``dial.inp.*`` and
``dial.out.*`` weights; the loaders attach a dial of their width (:func:`dial_hidden_of`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the range of the diversity weight w (recorded in a conditioned checkpoint)
W_RANGE = (0.0, 1.0)
#: the largest learning rate the dial may train at, as a multiple of the student's (distill.lr)
MAX_DIAL_LR_SCALE = 1000.0
#: the state-dict key that marks a conditioned student (its dial's input layer, ``[hidden, 1]``)
DIAL_WEIGHT = "dial.inp.weight"


class DiversityDial(nn.Module):
    """``w [B] -> [B, 1, D]``: a GELU network with ``hidden`` units whose output layer starts at zero."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"the dial needs hidden >= 1 units, got {hidden}")
        self.inp = nn.Linear(1, hidden)
        self.out = nn.Linear(hidden, dim)
        self.reset_parameters()

    @property
    def hidden(self) -> int:
        return self.inp.out_features

    def reset_parameters(self) -> None:
        """Input layer: unit-scale weights and biases spread over w's range, so the hidden units see
        different slopes and kinks of w; output layer: zero (the dial adds nothing yet)."""
        nn.init.normal_(self.inp.weight, std=2.0)
        nn.init.uniform_(self.inp.bias, -2.0, 2.0)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(w.to(self.inp.weight.dtype).reshape(-1, 1)))
        return self.out(h).unsqueeze(1)


def dial_hidden_of(state_dict: dict[str, torch.Tensor]) -> int:
    """The width of the dial a checkpoint's weights hold (0: none, not a conditioned student)."""
    weight = state_dict.get(DIAL_WEIGHT)
    return int(weight.shape[0]) if weight is not None else 0


def check_dial(w: torch.Tensor, rows: int) -> torch.Tensor:
    """``w`` as ``[rows]`` floats inside :data:`W_RANGE`; raises naming the problem otherwise."""
    if not isinstance(w, torch.Tensor) or w.dim() != 1 or w.shape[0] != rows:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"the diversity weight w must be a [{rows}] tensor (one per row), got {shape}")
    low, high = W_RANGE
    if not bool(torch.isfinite(w).all()) or float(w.min()) < low or float(w.max()) > high:
        raise ValueError(f"the diversity weight w must lie in [{low:g}, {high:g}], got {w.tolist()[:8]}")
    return w


def check_w(w: float) -> float:
    """One diversity weight (a command's or the API's ``w``) checked against :data:`W_RANGE`."""
    low, high = W_RANGE
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not low <= w <= high:
        raise ValueError(
            f"w={w!r} must be a number in [{low:g}, {high:g}] (0 = quality end, 1 = diversity end)"
        )
    return float(w)


def check_dial_lr_scale(scale: float) -> float:
    """The dial's learning rate as a multiple of ``distill.lr``, checked: in (0, :data:`MAX_DIAL_LR_SCALE`]."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"the dial's learning-rate scale must be a number, got {scale!r}")
    if not 0 < scale <= MAX_DIAL_LR_SCALE:
        raise ValueError(
            f"the dial's learning-rate scale {scale:g} must lie in (0, {MAX_DIAL_LR_SCALE:g}] "
            "(a multiple of distill.lr; 1 = the student's own)"
        )
    return float(scale)
