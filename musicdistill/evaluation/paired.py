"""Paired statistics over prompts: one joint bootstrap for every system and measure, three verdicts.

Every system is judged on the same ``B`` held-out prompts with the same sampling seeds, so the
per-prompt values of two systems pair up prompt by prompt. A :class:`PromptTable` holds them: one
``[B]`` array per system and measure, NaN where the measure is undefined (adherence of a prompt that
states no attribute, say).

**Joint bootstrap.** :func:`resample_indices` draws the prompt indices once per resample (``[R, B]``)
and every statistic (a system's mean, a paired difference, a front and a gain at matched quality,
:mod:`musicdistill.evaluation.fronts`) is recomputed on those same draws, for all systems and
measures together. The interval is the percentile interval (2.5th and 97.5th percentiles at
``level = 0.95``) of the resampled statistic; the estimate is the statistic on the prompts as drawn.

**NaN, pairwise-complete.** A statistic over several systems uses the prompts where every one of
them has a finite value of the measure; a resample uses its copies of those prompts; a resample in
which none is left gives NaN and is left out of the interval.

**Verdicts** (:func:`verdict`): a claim says a difference lies above (or below) a margin. It
**holds** when the interval clears the margin on the claimed side, **fails** when it lies entirely on
the other side, and is **unresolved** when it straddles the margin (or touches it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from musicdistill.evaluation.metrics import Estimate

LEVEL = 0.95
HOLDS, FAILS, UNRESOLVED, NOT_RUN = "holds", "fails", "unresolved", "not run"
SIDES = ("above", "below")


@dataclass(frozen=True)
class PromptTable:
    """Per-prompt values ``values[system][measure]``, each a float64 array ``[B]`` (NaN where undefined)."""

    values: dict[str, dict[str, np.ndarray]]
    num_prompts: int

    @classmethod
    def from_lists(cls, per_system: Mapping[str, Mapping[str, Sequence[float]]]) -> PromptTable:
        """Build a table from ``{system: {measure: B values}}``; every list must have the same length B."""
        values: dict[str, dict[str, np.ndarray]] = {}
        lengths: dict[str, int] = {}
        for system, measures in per_system.items():
            values[system] = {}
            for measure, column in measures.items():
                array = np.asarray(column, dtype=np.float64).ravel()
                values[system][measure] = array
                lengths[f"{system}/{measure}"] = array.size
        sizes = set(lengths.values())
        if len(sizes) > 1:
            raise ValueError(
                "per-prompt values must have one value per prompt for every system and measure; got "
                + ", ".join(f"{k}: {n}" for k, n in lengths.items())
            )
        return cls(values, sizes.pop() if sizes else 0)

    @property
    def systems(self) -> list[str]:
        return list(self.values)

    def measures(self) -> list[str]:
        """Every measure some system has, in first-seen order."""
        seen: dict[str, None] = {}
        for measures in self.values.values():
            seen.update(dict.fromkeys(measures))
        return list(seen)

    def has(self, system: str | None, measure: str | None) -> bool:
        """Whether ``system`` has ``measure`` with at least one finite per-prompt value."""
        if system is None or measure is None:
            return False
        column = self.values.get(system, {}).get(measure)
        return column is not None and bool(np.isfinite(column).any())

    def column(self, system: str, measure: str) -> np.ndarray:
        """``[B]`` values of ``measure`` for ``system`` (raises KeyError naming what is missing)."""
        try:
            return self.values[system][measure]
        except KeyError:
            raise KeyError(f"no per-prompt {measure!r} for system {system!r}") from None


def resample_indices(num_prompts: int, num_resamples: int, seed: int) -> np.ndarray:
    """Prompt indices of the joint bootstrap: ``[R, B]``, drawn with replacement, one row per resample."""
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1 (evaluate.bootstrap)")
    if num_prompts < 1:
        raise ValueError(f"num_prompts={num_prompts} must be >= 1 to bootstrap over prompts")
    return np.random.default_rng(seed).integers(0, num_prompts, size=(num_resamples, num_prompts))


def complete(columns: Iterable[np.ndarray]) -> np.ndarray:
    """``[B]`` mask of the prompts where every column is finite (pairwise-complete cases)."""
    columns = list(columns)
    if not columns:
        raise ValueError("complete() needs at least one column")
    mask = np.ones_like(columns[0], dtype=bool)
    for c in columns:
        mask &= np.isfinite(c)
    return mask


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` [B] over ``mask`` [B]; NaN when the mask is empty."""
    return float(values[mask].mean()) if mask.any() else math.nan


def resampled_means(values: np.ndarray, mask: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Mean over each resample's copies of the masked prompts: ``[B], [B], [R, B] -> [R]`` (NaN when none)."""
    keep = mask[indices]  # [R, B]
    sums = np.where(keep, values[indices], 0.0).sum(axis=1)
    counts = keep.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def percentile_interval(point: float, replicates: np.ndarray, n: int, level: float = LEVEL) -> Estimate:
    """``point`` with the percentile interval of the finite ``replicates`` [R] (NaN bounds when none)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.95)")
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or not math.isfinite(point):
        return Estimate(point, math.nan, math.nan, n)
    low, high = np.quantile(finite, [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0])
    return Estimate(point, float(low), float(high), n)


def mean_estimate(values: np.ndarray, indices: np.ndarray, level: float = LEVEL) -> Estimate:
    """One system's mean over its finite prompts, with its interval under the joint draws ``[R, B]``."""
    mask = np.isfinite(values)
    point = masked_mean(values, mask)
    return percentile_interval(point, resampled_means(values, mask, indices), int(mask.sum()), level)


def paired_difference(
    first: np.ndarray, second: np.ndarray, indices: np.ndarray, level: float = LEVEL
) -> Estimate:
    """Mean per-prompt difference ``first - second`` over the prompts where both are finite, with its
    interval under the joint draws ``[R, B]``; ``n`` counts the pairs."""
    mask = complete((first, second))
    diff = np.where(mask, first - second, 0.0)
    point = masked_mean(diff, mask)
    return percentile_interval(point, resampled_means(diff, mask, indices), int(mask.sum()), level)


def verdict(low: float, high: float, margin: float, side: str) -> str:
    """Three-way verdict of "the difference lies ``side`` (above / below) ``margin``" from its interval.

    holds: the interval clears the margin on the claimed side; fails: it lies entirely on the other
    side; unresolved: it straddles or touches the margin, or it is not finite.
    """
    if side not in SIDES:
        raise ValueError(f"side={side!r} must be one of {SIDES}")
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(margin)):
        return UNRESOLVED
    above, below = low > margin, high < margin
    if side == "above":
        return HOLDS if above else (FAILS if below else UNRESOLVED)
    return HOLDS if below else (FAILS if above else UNRESOLVED)


def all_of(verdicts: Iterable[str]) -> str:
    """A claim made of parts: holds when every part holds, fails when any fails, else unresolved."""
    verdicts = list(verdicts)
    if not verdicts or NOT_RUN in verdicts:
        return NOT_RUN
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else UNRESOLVED


def any_of(verdicts: Iterable[str]) -> str:
    """A claim about some candidate: holds when one holds, fails when every one fails, else unresolved.

    Candidates that were not run are left out; with none left the claim is not run.
    """
    verdicts = [v for v in verdicts if v != NOT_RUN]
    if not verdicts:
        return NOT_RUN
    if HOLDS in verdicts:
        return HOLDS
    return FAILS if all(v == FAILS for v in verdicts) else UNRESOLVED
