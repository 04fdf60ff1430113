"""Paired statistics over prompts: one joint bootstrap for every system and measure, the verdicts.

Every system is judged on the same ``B`` held-out prompts with the same sampling seeds, so the
per-prompt values of two systems pair up prompt by prompt. A :class:`PromptTable` holds them: one
``[B]`` array per system and measure, NaN where the measure is undefined (adherence of a prompt that
states no attribute, say).

**Joint bootstrap.** :func:`resample_indices` draws the prompt indices once per resample (``[R, B]``)
and every statistic (a system's mean, a paired difference, a front and a gain at matched quality,
:mod:`musicdistill.evaluation.fronts`) is recomputed on those same draws, for all systems and
measures together. Pooled over seeds, :func:`musicdistill.evaluation.pooled.hierarchical_indices`
draws seeds, then prompts within each drawn seed, into the concatenated table (``[R, S·B]``);
nothing here assumes a uniform draw.
Internally a draw becomes its count matrix (:func:`resample_weights`, ``[R, B]``) and every
resampled mean is one matrix product. The interval is the percentile interval (2.5th and 97.5th
percentiles at ``level = 0.95``) of the resampled statistic; the estimate is the statistic on the
prompts as drawn; each bound carries its Monte-Carlo error from the finite R
(:func:`bound_mc_error`, carried as ``Estimate.mc_error``: the larger of the two bounds').

**NaN, pairwise-complete.** A statistic over several systems uses the prompts where every one of
them has a finite value of the measure; a resample uses its copies of those prompts; a resample in
which none is left gives NaN and is left out of the interval.

**Verdicts** (:func:`verdict`): a claim says a difference lies above (or below) a margin. It
**holds** when the interval clears the margin on the claimed side, **fails** when it lies entirely on
the other side, and is **unresolved** when it straddles the margin (or touches it). The claims add
**contested** (:data:`CONTESTED`, :mod:`musicdistill.evaluation.claims`).

**Several comparisons at once** (:func:`simultaneous_lower_bounds`): a max-statistic over the
studentised replicates of K components gives lower bounds that hold together at the one-sided level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from musicdistill.evaluation.metrics import Estimate

LEVEL = 0.95
HOLDS, FAILS, UNRESOLVED, NOT_RUN = "holds", "fails", "unresolved", "not run"
#: a claim that holds or fails on the primary measure but that another validated view contradicts
CONTESTED = "contested"
VERDICTS = (HOLDS, FAILS, UNRESOLVED, CONTESTED, NOT_RUN)
#: z of the Monte-Carlo error's order statistics (one binomial standard deviation of the rank)
MC_Z = 1.0
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


#: the last draws' count matrices: (indices, their checksum, num_prompts, weights), newest first
_WEIGHTS: list[tuple[np.ndarray, int, int, np.ndarray]] = []
_WEIGHTS_KEPT = 2


def resample_weights(indices: np.ndarray, num_prompts: int) -> np.ndarray:
    """How often each prompt appears in each resample: ``[R, N]`` indices -> ``[R, B]`` float64 counts.

    Any draw works (uniform, hierarchical, a subset): a resampled mean of a column ``[B]`` is then
    ``weights @ column / weights.sum(1)``. The last two draws' matrices are kept (read-only), keyed
    by the very ``indices`` array and its checksum, since every statistic of a run reuses one draw.
    """
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(f"bootstrap indices must be [R, N]; got shape {indices.shape}")
    checksum = int(indices.sum())
    for kept, kept_sum, kept_prompts, weights in _WEIGHTS:
        if kept is indices and kept_sum == checksum and kept_prompts == num_prompts:
            return weights
    if indices.size and (indices.min() < 0 or indices.max() >= num_prompts):
        raise ValueError(
            f"bootstrap indices must lie in [0, {num_prompts}) (the table's prompts); "
            f"got [{indices.min()}, {indices.max()}]"
        )
    rows = indices.shape[0]
    flat = (indices + num_prompts * np.arange(rows)[:, None]).ravel()
    weights = np.bincount(flat, minlength=rows * num_prompts).reshape(rows, num_prompts).astype(np.float64)
    weights.flags.writeable = False
    _WEIGHTS.insert(0, (indices, checksum, num_prompts, weights))
    del _WEIGHTS[_WEIGHTS_KEPT:]
    return weights


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
    """Mean over each resample's copies of the masked prompts: ``[B], [B], [R, N] -> [R]`` (NaN when none)."""
    return resampled_column_means(np.asarray(values)[:, None], mask, indices)[:, 0]


def resampled_column_means(columns: np.ndarray, mask: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Each column's mean over each resample's copies of the masked prompts.

    ``[B, K]`` columns, ``[B]`` mask, ``[R, N]`` draws -> ``[R, K]``.

    One count matrix (:func:`resample_weights`) and one matrix product for all K columns; NaN where a
    resample holds none of the masked prompts.
    """
    columns = np.asarray(columns, dtype=np.float64)
    weights = resample_weights(indices, columns.shape[0])  # [R, B]
    stacked = np.column_stack([np.where(mask[:, None], columns, 0.0), mask.astype(np.float64)])
    product = weights @ stacked  # [R, K + 1]: the sums, then the counts
    sums, counts = product[:, :-1], product[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


def bound_mc_error(finite_sorted: np.ndarray, q: float, z: float = MC_Z) -> float:
    """Monte-Carlo standard error of the ``q`` quantile of R sorted finite replicates ``[R]``.

    Distribution-free, from order statistics: ``(x_(ceil(Rq + z s)) - x_(floor(Rq - z s))) / (2 z)``
    with ``s = sqrt(R q (1 - q))`` (1-based ranks clipped to 1..R). It shrinks as 1/sqrt(R).
    """
    size = finite_sorted.size
    if size < 2:
        return math.nan
    spread = z * math.sqrt(size * q * (1.0 - q))
    lo = min(max(math.floor(size * q - spread), 1), size)
    hi = min(max(math.ceil(size * q + spread), 1), size)
    return float(finite_sorted[hi - 1] - finite_sorted[lo - 1]) / (2.0 * z)


def percentile_interval(point: float, replicates: np.ndarray, n: int, level: float = LEVEL) -> Estimate:
    """``point`` with the percentile interval of the finite ``replicates`` [R] (NaN bounds when none)
    and the larger Monte-Carlo error of its two bounds (:func:`bound_mc_error`)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.95)")
    finite = np.sort(replicates[np.isfinite(replicates)])
    if finite.size == 0 or not math.isfinite(point):
        return Estimate(point, math.nan, math.nan, n)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    mc = max(bound_mc_error(finite, tail), bound_mc_error(finite, 1.0 - tail))
    return Estimate(point, float(low), float(high), n, mc)


def mean_estimate(values: np.ndarray, indices: np.ndarray, level: float = LEVEL) -> Estimate:
    """One system's mean over its finite prompts, with its interval under the joint draws ``[R, B]``."""
    mask = np.isfinite(values)
    point = masked_mean(values, mask)
    return percentile_interval(point, resampled_means(values, mask, indices), int(mask.sum()), level)


def paired_replicates(
    first: np.ndarray, second: np.ndarray, indices: np.ndarray
) -> tuple[float, np.ndarray, int]:
    """Mean per-prompt difference ``first - second`` over the prompts where both are finite, its
    replicates under the joint draws ``[R, N] -> [R]``, and the number of pairs."""
    mask = complete((first, second))
    diff = np.where(mask, first - second, 0.0)
    return masked_mean(diff, mask), resampled_means(diff, mask, indices), int(mask.sum())


def paired_difference(
    first: np.ndarray, second: np.ndarray, indices: np.ndarray, level: float = LEVEL
) -> Estimate:
    """Mean per-prompt difference ``first - second`` over the prompts where both are finite, with its
    interval under the joint draws ``[R, N]``; ``n`` counts the pairs."""
    point, replicates, n = paired_replicates(first, second, indices)
    return percentile_interval(point, replicates, n, level)


@dataclass(frozen=True)
class Simultaneous:
    """Simultaneous lower bounds of K components: ``lows`` [K], the critical value and the ``se`` [K]."""

    lows: np.ndarray
    critical: float
    se: np.ndarray


def simultaneous_lower_bounds(
    points: np.ndarray, replicates: np.ndarray, level: float = LEVEL
) -> Simultaneous:
    """Lower bounds of K estimates that hold together: ``[K], [R, K] -> Simultaneous``.

    Each component is studentised by its bootstrap standard error ``se_k`` (the standard deviation
    of its finite replicates); per resample ``M_r = max_k (points_k - replicates_rk) / se_k``, a NaN
    replicate counting as +inf (conservative); ``critical`` is the ``1 - (1 - level) / 2`` quantile
    of M (+inf when it falls among the infinite ones) and ``lows = points - critical * se``. A
    component whose estimate is itself undefined (NaN point) can never clear a bound and is left out
    of the max (its low is NaN). With one component and no NaN, ``lows`` is the percentile lower bound.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must lie strictly between 0 and 1 (e.g. 0.95)")
    points = np.asarray(points, dtype=np.float64).ravel()
    replicates = np.asarray(replicates, dtype=np.float64).reshape(-1, points.size)
    finite = np.isfinite(replicates)  # [R, K]
    counts = finite.sum(axis=0)
    means = np.where(finite, replicates, 0.0).sum(axis=0) / np.maximum(counts, 1)
    squares = (np.where(finite, replicates - means, 0.0) ** 2).sum(axis=0)
    se = np.sqrt(squares / np.maximum(counts - 1, 1))  # [K]
    used = np.isfinite(points)
    if replicates.shape[0] == 0 or not used.any():
        return Simultaneous(np.full(points.size, math.nan), math.inf, se)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, (points - replicates) / np.where(se > 0, se, 1.0), 0.0)  # [R, K]
    t = np.where(finite, t, np.inf)[:, used]
    with np.errstate(invalid="ignore"):
        critical = float(np.quantile(t.max(axis=1), 1.0 - (1.0 - level) / 2.0))
    if not math.isfinite(critical):
        critical = math.inf
    with np.errstate(invalid="ignore"):
        lows = np.where(se > 0, points - critical * se, points)
    return Simultaneous(lows, critical, se)


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
