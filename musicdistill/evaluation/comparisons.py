"""The building blocks of the claims: the evidence they read and the comparisons they decide on.

:class:`Evidence` holds the per-prompt values of every evaluated system
(:class:`musicdistill.evaluation.paired.PromptTable`), the systems' descriptions (``metrics.json``
``systems``), their roles (:mod:`musicdistill.evaluation.roles`), the fronts
(:mod:`musicdistill.evaluation.fronts`), the joint bootstrap draws and the measures, chosen by what the
run measured, never by its results: quality (:data:`QUALITY_METRICS`: attribute adherence, the oracle,
when every evaluated system has it, else text adherence) and the primary independent diversity measure
(:data:`PRIMARY_DIVERSITY`: attribute diversity where an oracle exists, else the second learned
embedder; a run that has neither falls back to the hand-made features, :data:`FALLBACK_DIVERSITY`, and
says so). A :class:`Comparison` is one tested quantity with its 95 % interval, a margin, a side and a
three-way verdict (:func:`musicdistill.evaluation.paired.verdict`): a paired :func:`difference`, a
:func:`non_inferiority` (the interval of ``q_A - q_B`` above ``-delta``, one absolute margin
``delta = min(5 % of the teacher's mean quality, 25 % of the teacher's mean quality gain over the
base)`` from the point estimates, :func:`noninferiority_margin`; 5 % of the reference when the teacher
or the base is missing or CFG gains nothing), a :func:`gain_comparison` at matched quality over a
front, or a :func:`cost_comparison` of model rows per frame. :data:`VALIDATED_VIEWS` names the
diversity views validated on real clips. The claims built from them are in
:mod:`musicdistill.evaluation.claims`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from musicdistill.evaluation.fronts import (
    MIN_DEFINED_FRACTION,
    Front,
    Gain,
    find_fronts,
    matched_quality_gain,
)
from musicdistill.evaluation.metrics import metric_label
from musicdistill.evaluation.paired import (
    FAILS,
    HOLDS,
    LEVEL,
    NOT_RUN,
    PromptTable,
    complete,
    masked_mean,
    paired_replicates,
    percentile_interval,
    verdict,
)
from musicdistill.evaluation.roles import Roles, find_roles, rows_per_frame

QUALITY_METRICS = ("attribute_adherence", "text_adherence")
PRIMARY_DIVERSITY = ("attribute_diversity", "diversity_second")
FALLBACK_DIVERSITY = "diversity_independent"
#: the diversity views validated on real clips (docs/method.md section 6); the reward embedder is not one
VALIDATED_VIEWS = ("attribute_diversity", "diversity_second", "diversity_independent")
#: the non-inferiority margin: min(this share of the teacher's quality, CFG_GAIN_SHARE of CFG's gain)
NON_INFERIORITY_MARGIN = 0.05
CFG_GAIN_SHARE = 0.25


def is_diversity(measure: str) -> bool:
    """Whether a per-prompt measure is a diversity measure (``diversity_*`` or ``*_diversity``)."""
    return measure.startswith("diversity_") or measure.endswith("_diversity")


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One tested quantity: a paired difference, a gain at matched quality or a cost ratio, with its verdict.

    ``mean [low, high]`` is the quantity and its 95 % interval over ``n`` prompts; the claim is that
    it lies ``side`` (above / below) ``margin``. ``decides`` is False for numbers shown beside a claim.
    ``mc_error`` is the larger Monte-Carlo error of the two bounds; ``corrected_low``, when set, is the
    simultaneous lower bound (C4) that decided in place of ``low``.
    """

    label: str
    metric: str
    kind: str
    mean: float
    low: float
    high: float
    n: int
    margin: float
    side: str
    verdict: str
    decides: bool = True
    defined_fraction: float | None = None
    note: str = ""
    mc_error: float | None = None
    corrected_low: float | None = None

    def text(self) -> str:
        """One line: ``label: +0.115 [+0.080, +0.150] (n=48, MC ±0.0004), claimed above 0 -> holds``."""
        if self.kind == "cost":
            value = f"{self.mean:.3g}"
        elif not math.isfinite(self.mean):
            value = "not defined"
        elif math.isfinite(self.low) and math.isfinite(self.high):
            finite_mc = self.mc_error is not None and math.isfinite(self.mc_error)
            mc = f", MC ±{self.mc_error:.4f}" if finite_mc else ""
            value = f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] (n={self.n}{mc})"
        else:
            value = f"{self.mean:+.4f} (no interval; n={self.n})"
        if self.corrected_low is not None and math.isfinite(self.corrected_low):
            value += f", simultaneous lower bound {self.corrected_low:+.4f}"
        elif self.corrected_low is not None:
            value += ", no simultaneous lower bound"
        if self.defined_fraction is not None:
            value += f", defined in {100 * self.defined_fraction:.0f} % of resamples"
        claim = f"{'at most' if self.kind == 'cost' else self.side} {self.margin:.4g}"
        beside = "" if self.decides else " (beside, does not decide)"
        note = f"; {self.note}" if self.note else ""
        return f"{self.label}: {value}, claimed {claim} -> {self.verdict}{beside}{note}"

    def contradicts(self, other: Comparison) -> bool:
        """Whether this comparison's interval lies entirely on the other side of the margin from
        ``other``'s verdict (holds or fails) on the same quantity (a gain must be resolved to count)."""
        if other.verdict not in (HOLDS, FAILS) or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return False
        if self.kind == "gain" and not (
            math.isfinite(self.mean) and (self.defined_fraction or 0.0) >= MIN_DEFINED_FRACTION
        ):
            return False
        opposite = {HOLDS: FAILS, FAILS: HOLDS}[other.verdict]
        return verdict(self.low, self.high, self.margin, self.side) == opposite

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Comparison:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


# --------------------------------------------------------------------------------------------
# What the claims read
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """Per-prompt values, the systems' descriptions and roles, the fronts and the joint draws ``[R, N]``."""

    table: PromptTable
    systems: dict[str, dict[str, Any]]
    roles: Roles
    fronts: dict[str, Front]
    indices: np.ndarray
    quality: str | None
    primary: str | None
    primary_note: str
    level: float = LEVEL

    def measures(self) -> dict[str, str]:
        return {k: v for k, v in (("quality", self.quality), ("diversity", self.primary)) if v is not None}

    @property
    def control(self) -> str | None:
        """The diversity student's control (its settings with beta = 0), when one was evaluated."""
        return getattr(self.roles, "control", None)


def choose_quality(table: PromptTable) -> str | None:
    """The first of :data:`QUALITY_METRICS` that every evaluated system has."""
    for key in QUALITY_METRICS:
        if table.systems and all(table.has(s, key) for s in table.systems):
            return key
    return None


def choose_primary(table: PromptTable) -> tuple[str | None, str]:
    """The primary independent diversity measure and a sentence saying which it is and why."""
    for key in PRIMARY_DIVERSITY:
        if table.systems and all(table.has(s, key) for s in table.systems):
            return key, f"primary independent diversity measure: {metric_label(key)} ({key})"
    if table.systems and all(table.has(s, FALLBACK_DIVERSITY) for s in table.systems):
        return FALLBACK_DIVERSITY, (
            f"primary independent diversity measure: {metric_label(FALLBACK_DIVERSITY)} "
            f"({FALLBACK_DIVERSITY}), a FALLBACK: this run measured neither attribute diversity nor "
            "the second learned embedder"
        )
    return None, "no independent diversity measure was evaluated"


def build_evidence(
    table: PromptTable, systems: dict[str, dict[str, Any]], gamma: float, indices: np.ndarray
) -> Evidence:
    """Everything the claims read, from the per-prompt table and ``metrics.json``-style system entries.

    ``indices`` ``[R, N]`` index the table's prompts: the joint draws of one run, or hierarchical
    draws over a concatenation of several seeds' tables.
    """
    roles = find_roles(systems, gamma)
    primary, note = choose_primary(table)
    return Evidence(
        table, systems, roles, find_fronts(systems, roles), indices, choose_quality(table), primary, note
    )


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def has_all(ev: Evidence, metric: str | None, *names: str) -> bool:
    """Whether every one of ``names`` has ``metric`` (False when ``metric`` is None)."""
    return metric is not None and all(ev.table.has(n, metric) for n in names)


def difference(
    ev: Evidence,
    first: str,
    second: str,
    metric: str,
    side: str,
    margin: float = 0.0,
    decides: bool = True,
) -> Comparison:
    """``first - second`` of ``metric`` per prompt, claimed to lie ``side`` ``margin``."""
    point, reps, n = paired_replicates(
        ev.table.column(first, metric), ev.table.column(second, metric), ev.indices
    )
    est = percentile_interval(point, reps, n, ev.level)
    return Comparison(
        f"{metric_label(metric)}: {first} - {second}",
        metric,
        "difference",
        est.mean,
        est.low,
        est.high,
        est.n,
        margin,
        side,
        verdict(est.low, est.high, margin, side),
        decides,
        mc_error=est.mc_error,
    )


@dataclass(frozen=True)
class Margin:
    """The non-inferiority margin ``delta`` (> 0 when usable; the claim is ``q_A - q_B > -delta``) and why."""

    delta: float
    note: str


def noninferiority_margin(ev: Evidence, metric: str, reference: str) -> Margin:
    """``delta = min(5 % of q_T, 25 % of (q_T - q_0))`` from the teacher's and the base's means of ``metric``
    over the prompts where both have it; 5 % of ``reference``'s mean (over the prompts the reference
    has) when the teacher or the base is missing or ``q_T - q_0`` is not positive."""
    teacher, base = ev.roles.teacher, ev.roles.base
    share, gain_share = NON_INFERIORITY_MARGIN, CFG_GAIN_SHARE
    why = None
    if teacher is None or base is None or not has_all(ev, metric, teacher, base):
        why = "the teacher or the base was not evaluated"
    else:
        t, b = ev.table.column(teacher, metric), ev.table.column(base, metric)
        mask = complete((t, b))
        q_t, q_0 = masked_mean(t, mask), masked_mean(b, mask)
        cfg_gain = q_t - q_0
        if cfg_gain > 0:
            by_teacher, by_gain = share * q_t, gain_share * cfg_gain
            if by_teacher <= by_gain:
                return Margin(
                    by_teacher,
                    f"margin -{by_teacher:.4f}: {100 * share:.0f} % of the teacher {teacher}'s mean "
                    f"{q_t:.4f} (below {100 * gain_share:.0f} % of CFG's gain {cfg_gain:.4f} "
                    f"= {by_gain:.4f})",
                )
            return Margin(
                by_gain,
                f"margin -{by_gain:.4f}: {100 * gain_share:.0f} % of CFG's gain {cfg_gain:.4f} "
                f"({teacher} {q_t:.4f} - {base} {q_0:.4f}; below {100 * share:.0f} % of the teacher's "
                f"mean = {by_teacher:.4f})",
            )
        why = f"CFG's gain over the base ({cfg_gain:.4f}) is not positive"
    ref = ev.table.column(reference, metric)
    ref_mean = masked_mean(ref, np.isfinite(ref))
    return Margin(
        share * ref_mean,
        f"margin -{share * ref_mean:.4f}: {100 * share:.0f} % of {reference}'s mean {ref_mean:.4f}, "
        f"a FALLBACK because {why}",
    )


def diversity_margin(ev: Evidence, metric: str) -> Margin:
    """``delta_d = 25 % of (d_0 - d_T)``: a quarter of the diversity CFG costs (the base's mean minus the
    teacher's, over the prompts where both have ``metric``); not positive when CFG costs none (C6)."""
    teacher, base = ev.roles.teacher, ev.roles.base
    if teacher is None or base is None or not has_all(ev, metric, teacher, base):
        return Margin(math.nan, "the teacher or the base was not evaluated")
    t, b = ev.table.column(teacher, metric), ev.table.column(base, metric)
    mask = complete((t, b))
    cost = masked_mean(b, mask) - masked_mean(t, mask)
    delta = CFG_GAIN_SHARE * cost
    return Margin(
        delta,
        f"diversity margin -{delta:.4f}: {100 * CFG_GAIN_SHARE:.0f} % of the diversity CFG costs, {cost:.4f} "
        f"({base} - {teacher})",
    )


def non_inferiority(
    ev: Evidence, first: str, reference: str, metric: str, margin: Margin | None = None
) -> Comparison:
    """``first - reference`` claimed above ``-delta`` (:func:`noninferiority_margin` unless given)."""
    margin = margin or noninferiority_margin(ev, metric, reference)
    if not margin.delta > 0:
        return replace(
            difference(ev, first, reference, metric, "above", margin=math.nan),
            verdict=NOT_RUN,
            note=f"{margin.note}: not positive, so no margin",
        )
    return replace(difference(ev, first, reference, metric, "above", margin=-margin.delta), note=margin.note)


def front_gain(ev: Evidence, system: str, front: Front, metric: str) -> Gain:
    """``system``'s gain in ``metric`` at matched quality over ``front``, on the evidence's draws."""
    return matched_quality_gain(ev.table, system, front, ev.quality or "", metric, ev.indices, ev.level)


def gain_comparison(
    ev: Evidence,
    gain: Gain | str,
    front: Front | None = None,
    metric: str | None = None,
    decides: bool = True,
    corrected_low: float | None = None,
    margin: float = 0.0,
) -> Comparison:
    """A gain at matched quality (``gain``, or the system's gain over ``front`` under ``metric``), claimed
    above ``margin`` (0: more diverse; a negative margin: at least as diverse, up to it);
    ``corrected_low`` decides in place of the interval's lower bound when given."""
    if isinstance(gain, str):
        if front is None or metric is None:
            raise ValueError("gain_comparison needs front and metric when given a system name")
        gain = front_gain(ev, gain, front, metric)
    front = front or ev.fronts[gain.front]
    e = gain.estimate
    note = "; ".join(x for x in (gain.why_unresolved(), gain.conservative_note()) if x)
    return Comparison(
        f"gain in {metric_label(gain.diversity)} at matched quality over the {front.label} front: "
        f"{gain.system}",
        gain.diversity,
        "gain",
        e.mean,
        e.low,
        e.high,
        e.n,
        margin,
        "above",
        gain.verdict(margin, low=corrected_low),
        decides,
        gain.defined_fraction,
        note,
        e.mc_error,
        corrected_low,
    )


def cost_comparison(ev: Evidence, student: str, teacher: str) -> Comparison | None:
    """Model rows per frame, student / teacher, claimed at most 1/2 (None when a cost is not recorded)."""
    rs, rt = rows_per_frame(ev.systems.get(student, {})), rows_per_frame(ev.systems.get(teacher, {}))
    if rs is None or not rt:
        return None
    ratio = rs / rt
    return Comparison(
        f"model rows per frame, {student} / {teacher} ({rs} / {rt})",
        "rows_per_frame",
        "cost",
        ratio,
        ratio,
        ratio,
        0,
        0.5,
        "below",
        HOLDS if 2 * rs <= rt else FAILS,
    )
