"""Quality-diversity fronts and the diversity gain of a system at matched quality.

A **front** is a sweep of one setting, drawn as the polyline through its points (mean quality,
mean diversity) in the order of that setting:

- the **CFG front**: the base checkpoint at temperature 1 over the CFG scale γ (γ = 1 costs one
  model row per frame, any other γ two);
- the **temperature front**: the base without CFG over the temperature T (one row per frame);
- the **merge front**: the β = 0 student (λ = 0), the merges over λ, the β > 0 student (λ = 1).

**Gain at matched quality** of a system S against a front F::

    gain_F(S) = d_S - d_F(q_S)

with ``d_F(q)`` the front's diversity at quality q by piecewise-linear interpolation along the
polyline (:func:`front_diversity_at`). Where q meets several segments (a front that bends back in
quality), ``d_F(q)`` is the highest of them: the best the sweep can do at that quality. **Above the
front's highest quality**, ``d_F(q)`` is the diversity of the front's highest-quality point: a
conservative gain (to beat S there the sweep would need more quality and more diversity at once).
**Below the front's lowest quality** the gain is not defined (NaN), never extrapolated.

Its interval comes from the joint bootstrap (:mod:`musicdistill.evaluation.paired`): each resample
rebuilds the front from that resample's means of every front system and of S, and recomputes the
gain (above or below the front as that resample falls). ``defined_fraction`` is the share of
resamples where the gain is defined, ``above_fraction`` the share where S lies above the front's
highest quality; an interval from fewer than :data:`MIN_DEFINED_FRACTION` defined resamples is
unresolved (the missing resamples could lie anywhere). Every mean is over the prompts where S and
every front system have the measure (pairwise-complete, per measure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicdistill.evaluation.metrics import Estimate
from musicdistill.evaluation.paired import (
    LEVEL,
    UNRESOLVED,
    PromptTable,
    complete,
    masked_mean,
    percentile_interval,
    resampled_column_means,
    verdict,
)
from musicdistill.evaluation.roles import Roles, dial_weight, merge_lambda, on_base, rows_per_frame, settings

#: an interval from fewer defined resamples than this share is unresolved
MIN_DEFINED_FRACTION = 0.95
FRONT_NAMES = {"cfg": "CFG", "temperature": "temperature", "merge": "merge", "conditioned": "conditioned"}


@dataclass(frozen=True)
class Front:
    """One sweep: its members in the order of their setting, the setting's values and each one's cost."""

    key: str
    label: str
    setting: str
    members: tuple[str, ...]
    values: tuple[float, ...]
    rows: tuple[int | None, ...]

    def cost_text(self) -> str:
        """Model rows per frame along the front, e.g. ``"1-2 model rows per frame"``."""
        rows = sorted({r for r in self.rows if r is not None})
        if not rows:
            return "cost not recorded"
        span = f"{rows[0]}" if len(rows) == 1 else f"{rows[0]}-{rows[-1]}"
        return f"{span} model row{'s' if rows[-1] > 1 else ''} per frame"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "setting": self.setting,
            "members": list(self.members),
            "values": list(self.values),
            "rows_per_frame": list(self.rows),
            "cost": self.cost_text(),
        }


def _front(
    key: str, label: str, setting: str, points: list[tuple[float, str]], systems: dict[str, dict[str, Any]]
) -> Front:
    """A front from (setting value, system name) points: sorted by value, the first system per value kept."""
    kept: dict[float, str] = {}
    for value, name in sorted(points, key=lambda p: p[0]):
        kept.setdefault(value, name)
    return Front(
        key,
        label,
        setting,
        tuple(kept.values()),
        tuple(kept),
        tuple(rows_per_frame(systems[n]) for n in kept.values()),
    )


def find_fronts(systems: dict[str, dict[str, Any]], roles: Roles) -> dict[str, Front]:
    """The CFG, temperature and merge fronts among ``metrics["systems"]`` (those with at least one member)."""
    base = [(n, s) for n, s in systems.items() if on_base(s)]
    fronts = [
        _front(
            "cfg",
            "base, CFG scale",
            "γ",
            [(settings(s)[0], n) for n, s in base if settings(s)[1] == 1.0],
            systems,
        ),
        _front(
            "temperature",
            "base, temperature",
            "T",
            [(settings(s)[1], n) for n, s in base if settings(s)[0] == 1.0],
            systems,
        ),
    ]
    merge_points = [(merge_lambda(systems[n]), n) for n in roles.merges]
    merge_points = [(lam, n) for lam, n in merge_points if not math.isnan(lam)]
    if roles.quality:
        merge_points.append((0.0, roles.quality))
    if roles.diversity:
        merge_points.append((1.0, roles.diversity))
    fronts.append(_front("merge", "merges of the students", "λ", merge_points, systems))
    dial_points = [(dial_weight(systems[n]), n) for n in roles.conditioned]
    fronts.append(_front("conditioned", "the conditioned student", "w", dial_points, systems))
    return {f.key: f for f in fronts if f.members}


# --------------------------------------------------------------------------------------------
# Interpolation and the gain
# --------------------------------------------------------------------------------------------


def front_diversity_at(front_q: np.ndarray, front_d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The front's diversity at quality ``q``: ``[R, n], [R, n], [R] -> [R]``.

    The front is the polyline through its n points in setting order; each segment that spans ``q``
    gives a linearly interpolated diversity (a segment of equal qualities gives its larger
    diversity); the result is the largest of them. Above the front's highest quality it is the
    diversity of its highest-quality point (the best of them when several tie); below its lowest
    quality it is NaN. A one-point front is defined at and above its quality.
    """
    front_q, front_d = np.atleast_2d(front_q), np.atleast_2d(front_d)
    q = np.asarray(q, dtype=np.float64).reshape(-1, 1)
    top = front_q.max(axis=1, keepdims=True)  # [R, 1], NaN when a point is NaN
    with np.errstate(invalid="ignore"):
        above = (q > top)[:, 0]
        at_top = np.where(front_q == top, front_d, -np.inf).max(axis=1)
    if front_q.shape[1] == 1:
        inner = np.where(front_q[:, 0] == q[:, 0], front_d[:, 0], np.nan)
        return np.where(above, at_top, inner)
    q0, q1, d0, d1 = front_q[:, :-1], front_q[:, 1:], front_d[:, :-1], front_d[:, 1:]
    with np.errstate(invalid="ignore"):
        inside = (np.minimum(q0, q1) <= q) & (q <= np.maximum(q0, q1))
    span = q1 - q0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(span != 0, (q - q0) / np.where(span != 0, span, 1.0), 0.0)
    value = np.where(span != 0, d0 + t * (d1 - d0), np.maximum(d0, d1))
    best = np.where(inside & np.isfinite(value), value, -np.inf).max(axis=1)
    best = np.where(above, at_top, best)
    return np.where(np.isfinite(best), best, np.nan)


@dataclass(frozen=True)
class Gain:
    """``system``'s diversity minus ``front``'s at its quality; ``estimate.mean`` NaN when undefined.

    ``above`` says whether the system's quality lies above the front's highest quality on the
    prompts as drawn, ``above_fraction`` in how many resamples (there the gain is conservative,
    against the front's highest-quality point); ``replicates`` ``[R]`` are the resampled gains (NaN
    where undefined), for corrections over several gains.
    """

    system: str
    front: str
    quality: str
    diversity: str
    estimate: Estimate
    front_diversity: float
    defined_fraction: float
    above: bool = False
    above_fraction: float = 0.0
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def defined(self) -> bool:
        return math.isfinite(self.estimate.mean)

    @property
    def resolved(self) -> bool:
        """Defined on the prompts as drawn and in at least :data:`MIN_DEFINED_FRACTION` of the resamples."""
        return self.defined and self.defined_fraction >= MIN_DEFINED_FRACTION

    def verdict(self, margin: float = 0.0, low: float | None = None) -> str:
        """Verdict of "the gain lies above ``margin``" (with ``low`` in place of the interval's lower
        bound when given, e.g. a simultaneous bound); unresolved when not :attr:`resolved`."""
        if not self.resolved:
            return UNRESOLVED
        return verdict(self.estimate.low if low is None else low, self.estimate.high, margin, "above")

    def why_unresolved(self) -> str | None:
        """Why the gain cannot decide (None when it can)."""
        front = FRONT_NAMES.get(self.front, self.front)
        if not self.defined:
            return (
                f"not defined: {self.system}'s {self.quality} lies outside the {front} front's range, "
                "below its lowest quality (never extrapolated)"
            )
        if self.defined_fraction < MIN_DEFINED_FRACTION:
            return (
                f"defined in only {100 * self.defined_fraction:.0f} % of the resamples "
                f"(< {100 * MIN_DEFINED_FRACTION:.0f} %): {self.system}'s quality is near the {front} "
                "front's lowest quality"
            )
        return None

    def conservative_note(self) -> str:
        """Where the gain was taken against the front's highest-quality point ("" when nowhere)."""
        if not self.above and self.above_fraction == 0.0:
            return ""
        where = "as drawn and " if self.above else ""
        return (
            f"above the front's highest quality {where}in {100 * self.above_fraction:.0f} % of the "
            "resamples: there the gain is against its highest-quality point (conservative)"
        )

    def as_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "system": self.system,
            "front": self.front,
            "quality": self.quality,
            "diversity": self.diversity,
            "mean": e.mean,
            "low": e.low,
            "high": e.high,
            "n": e.n,
            "mc_error": e.mc_error,
            "front_diversity": self.front_diversity,
            "defined": self.defined,
            "defined_fraction": self.defined_fraction,
            "above": self.above,
            "above_fraction": self.above_fraction,
            "verdict": self.verdict(),
        }


def matched_quality_gain(
    table: PromptTable,
    system: str,
    front: Front,
    quality: str,
    diversity: str,
    indices: np.ndarray,
    level: float = LEVEL,
) -> Gain:
    """``system``'s diversity gain over ``front`` at its quality, with its joint-bootstrap interval.

    ``indices`` ``[R, N]`` are the joint draws (any prompt indices into the table); quality and
    diversity means use the prompts where ``system`` and every front member have the measure.
    """
    names = [system, *front.members]
    q_cols = np.stack([table.column(n, quality) for n in names], axis=1)  # [B, 1 + n]
    d_cols = np.stack([table.column(n, diversity) for n in names], axis=1)
    q_mask, d_mask = complete(q_cols.T), complete(d_cols.T)
    q_point = np.array([masked_mean(c, q_mask) for c in q_cols.T])  # [1 + n]
    d_point = np.array([masked_mean(c, d_mask) for c in d_cols.T])
    q_reps = resampled_column_means(q_cols, q_mask, indices)  # [R, 1 + n]
    d_reps = resampled_column_means(d_cols, d_mask, indices)
    front_point = float(front_diversity_at(q_point[None, 1:], d_point[None, 1:], q_point[:1])[0])
    front_reps = front_diversity_at(q_reps[:, 1:], d_reps[:, 1:], q_reps[:, 0])
    gains = d_reps[:, 0] - front_reps
    defined = float(np.isfinite(gains).mean()) if gains.size else 0.0
    with np.errstate(invalid="ignore"):
        above = bool(q_point[0] > q_point[1:].max())
        above_fraction = float((q_reps[:, 0] > q_reps[:, 1:].max(axis=1)).mean()) if gains.size else 0.0
    estimate = percentile_interval(
        float(d_point[0] - front_point), gains, int(min(q_mask.sum(), d_mask.sum())), level
    )
    return Gain(
        system, front.key, quality, diversity, estimate, front_point, defined, above, above_fraction, gains
    )


def gain_table(
    table: PromptTable,
    fronts: dict[str, Front],
    quality: str,
    diversities: list[str],
    indices: np.ndarray,
    keys: tuple[str, ...] = ("cfg", "temperature"),
) -> list[Gain]:
    """Every system's gain against each of the ``keys`` fronts it is not on (fronts of >= 2 points),
    under every measure of ``diversities`` that the system and the front's members all have."""
    gains = []
    for key in keys:
        front = fronts.get(key)
        if front is None or len(front.members) < 2:
            continue
        if not all(table.has(m, quality) for m in front.members):
            continue
        for system in table.systems:
            if system in front.members or not table.has(system, quality):
                continue
            for diversity in diversities:
                if all(table.has(n, diversity) for n in (system, *front.members)):
                    gains.append(matched_quality_gain(table, system, front, quality, diversity, indices))
    return gains
