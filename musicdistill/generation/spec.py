"""One sampling spec: the CFG scale, temperature, top-k and top-p, checked once when it is made.

The command line, the Python API, the demo's requests and the evaluation's systems all describe
sampling with these four numbers; :class:`SamplingSpec` is where their ranges are checked and
their meaning is written (:data:`musicdistill.config.MAX_CFG_SCALE` bounds the scale everywhere).
The decode loops receive a checked spec and check nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicdistill.config import MAX_CFG_SCALE, GenerateConfig

#: how a token is drawn (see :class:`SamplingSpec`)
DRAWS = ("race", "multinomial")


def _number(name: str, value: Any, low: float, high: float, note: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} is out of range; it must lie in [{low:g}, {high:g}]{note}")
    return float(value)


@dataclass(frozen=True)
class SamplingSpec:
    """How tokens are drawn.

    ``cfg_scale``: classifier-free guidance, in [0, MAX_CFG_SCALE] (1 = none: one model row per
    sample; any other scale runs a null row beside each). ``temperature`` in [0, 10] (0 = greedy).
    ``top_k`` >= 0 (0 = all entries) and ``top_p`` in [0, 1] (0 = off; it takes precedence over
    ``top_k``, as in audiocraft). ``draw`` is how a token is drawn from the truncated
    distribution: ``race`` (the exponential race, the default and the fast decoder's) or
    ``multinomial`` (``torch.multinomial`` on every row and codebook at once, as transformers'
    ``generate`` draws, so a seeded generator gives its tokens). Raises ValueError naming the
    setting and its range.
    """

    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    draw: str = "race"

    def __post_init__(self) -> None:
        if self.draw not in DRAWS:
            raise ValueError(f"draw={self.draw!r}: it must be one of {', '.join(DRAWS)}")
        object.__setattr__(
            self, "cfg_scale", _number("cfg_scale", self.cfg_scale, 0.0, MAX_CFG_SCALE, " (1 = no guidance)")
        )
        object.__setattr__(
            self, "temperature", _number("temperature", self.temperature, 0.0, 10.0, " (0 = greedy)")
        )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} is out of range; it must be an integer >= 0 (0 = all)")
        object.__setattr__(self, "top_p", _number("top_p", self.top_p, 0.0, 1.0, " (0 = off)"))

    @property
    def guided(self) -> bool:
        """Whether sampling needs the null rows (any scale but exactly 1)."""
        return self.cfg_scale != 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def rows_per_sample(self) -> int:
        return 2 if self.guided else 1

    def for_cardinality(self, cardinality: int) -> SamplingSpec:
        """This spec, after checking ``top_k`` against a codebook of ``cardinality`` entries."""
        if self.top_k > cardinality:
            raise ValueError(
                f"top_k={self.top_k} is out of range; it must be an integer in [0, {cardinality}] (0 = all)"
            )
        return self

    @classmethod
    def from_config(cls, gc: GenerateConfig, cfg_scale: float | None = None) -> SamplingSpec:
        """The ``generate`` section's sampling (its CFG scale unless ``cfg_scale`` is given)."""
        scale = gc.cfg_scale if cfg_scale is None else cfg_scale
        return cls(cfg_scale=scale, temperature=gc.temperature, top_k=gc.top_k, top_p=gc.top_p)
