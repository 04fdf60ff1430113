"""The paper's claims (C1-C5), decided on paired per-prompt statistics: the report's first table.

The rules are fixed here before any run (and in ``docs/method.md`` section 7); a run changes the
numbers, never the rules. Every claim is a pure function of an :class:`Evidence`: the per-prompt
values of every evaluated system (:class:`musicdistill.evaluation.paired.PromptTable`), the systems'
descriptions (``metrics.json`` ``systems``), their roles (:mod:`musicdistill.evaluation.roles`), the
fronts (:mod:`musicdistill.evaluation.fronts`) and the joint bootstrap draws.

Each claim is a set of :class:`Comparison` s, each a paired difference (or a gain at matched
quality) with its 95 % interval, a margin and a side, and a three-way verdict
(:func:`musicdistill.evaluation.paired.verdict`): **holds** when the interval clears the margin on the
claimed side, **fails** when it lies entirely on the other side, **unresolved** otherwise. A claim
holds when every deciding comparison holds and fails when any fails (:func:`paired.all_of`); C4, a
claim about *some* candidate, holds when one candidate holds and fails when every one fails
(:func:`paired.any_of`). Comparisons shown "beside" a claim do not decide it. A claim whose systems
or measures were not evaluated is **not run**, with the reason.

Measures, chosen by what the run measured, never by its results:

- **quality**: attribute adherence (the oracle) when every evaluated system has it, else text
  adherence;
- **the primary independent diversity measure**: attribute diversity where an oracle exists, else
  the second learned embedder (:data:`PRIMARY_DIVERSITY`); a run that has neither falls back to the
  hand-made features (``diversity_independent``), and every claim says so;
- **the reward embedder's diversity** (``diversity_reward``): what the diversity model was trained
  to raise, so it can be gamed; C3 requires it as well as the primary measure.

Non-inferiority (C2, C4, C5): the interval of ``q_A - q_B`` lies above ``-5 %`` of ``q_B``, the
reference's mean quality over the prompts both have.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from musicdistill.evaluation.fronts import Front, Gain, find_fronts, matched_quality_gain
from musicdistill.evaluation.metrics import metric_label
from musicdistill.evaluation.paired import (
    FAILS,
    HOLDS,
    LEVEL,
    NOT_RUN,
    UNRESOLVED,
    PromptTable,
    all_of,
    any_of,
    complete,
    masked_mean,
    paired_difference,
    verdict,
)
from musicdistill.evaluation.roles import Roles, find_roles, rows_per_frame

QUALITY_METRICS = ("attribute_adherence", "text_adherence")
PRIMARY_DIVERSITY = ("attribute_diversity", "diversity_second")
FALLBACK_DIVERSITY = "diversity_independent"
DIVERSITY_REWARD = "diversity_reward"
GOLDEN = "attribute_adherence"
NON_INFERIORITY_MARGIN = 0.05
CLAIM_IDS = ("C1", "C2", "C3", "C4", "C5")

STATEMENTS = {
    "C1": "CFG (the teacher, gamma = distill.gamma) raises quality and lowers diversity over the base "
    "model without CFG (paired).",
    "C2": "The beta = 0 student is non-inferior to the teacher (quality difference above -5 % of the "
    "teacher's quality) at 1 model row per frame against 2.",
    "C3": "The beta > 0 student is more diverse than the beta = 0 student and than the teacher, under "
    "the primary independent measure and under the reward embedder (paired).",
    "C4": "Some merge (or the beta > 0 student) is non-inferior to the teacher in quality (within 5 %) "
    "and has a positive diversity gain at matched quality over the CFG front, under the primary "
    "independent measure.",
    "C5": "On-policy distillation's golden metric (held-out attribute adherence) is non-inferior to "
    "offline distillation's (within 5 %, paired).",
}


def is_diversity(measure: str) -> bool:
    """Whether a per-prompt measure is a diversity measure (``diversity_*`` or ``*_diversity``)."""
    return measure.startswith("diversity_") or measure.endswith("_diversity")


# --------------------------------------------------------------------------------------------
# Comparisons and claims
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One tested quantity: a paired difference, a gain at matched quality or a cost ratio, with its verdict.

    ``mean [low, high]`` is the quantity and its 95 % interval over ``n`` prompts; the claim is that
    it lies ``side`` (above / below) ``margin``. ``decides`` is False for numbers shown beside a claim.
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

    def text(self) -> str:
        """One line: ``label: +0.115 [+0.080, +0.150] (n=48), claimed above 0 -> holds``."""
        if self.kind == "cost":
            value = f"{self.mean:.3g}"
        elif not math.isfinite(self.mean):
            value = "not defined"
        elif math.isfinite(self.low) and math.isfinite(self.high):
            value = f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] (n={self.n})"
        else:
            value = f"{self.mean:+.4f} (no interval; n={self.n})"
        if self.defined_fraction is not None:
            value += f", defined in {100 * self.defined_fraction:.0f} % of resamples"
        claim = f"{'at most' if self.kind == 'cost' else self.side} {self.margin:.4g}"
        beside = "" if self.decides else " (beside, does not decide)"
        note = f"; {self.note}" if self.note else ""
        return f"{self.label}: {value}, claimed {claim} -> {self.verdict}{beside}{note}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Comparison:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class Claim:
    """One claim's verdict (holds / fails / unresolved / not run), its comparisons and the measures it used."""

    id: str
    statement: str
    verdict: str
    comparisons: tuple[Comparison, ...]
    explanation: str
    measures: dict[str, str] = field(default_factory=dict)

    @property
    def holds(self) -> bool | None:
        """True when it holds, False when it fails, None when unresolved or not run."""
        return {HOLDS: True, FAILS: False}.get(self.verdict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "statement": self.statement,
            "verdict": self.verdict,
            "explanation": self.explanation,
            "measures": dict(self.measures),
            "comparisons": [c.as_dict() for c in self.comparisons],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Claim:
        cid = str(raw.get("id", "?"))
        return cls(
            cid,
            str(raw.get("statement", STATEMENTS.get(cid, ""))),
            str(raw.get("verdict", NOT_RUN)),
            tuple(Comparison.from_dict(c) for c in raw.get("comparisons") or []),
            str(raw.get("explanation", "")),
            dict(raw.get("measures") or {}),
        )


def not_run(cid: str, why: str, measures: dict[str, str] | None = None) -> Claim:
    return Claim(cid, STATEMENTS[cid], NOT_RUN, (), why, dict(measures or {}))


# --------------------------------------------------------------------------------------------
# What the claims read
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """Per-prompt values, the systems' descriptions and roles, the fronts and the joint draws ``[R, B]``."""

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
    """Everything the claims read, from the per-prompt table and ``metrics.json``-style system entries."""
    roles = find_roles(systems, gamma)
    primary, note = choose_primary(table)
    return Evidence(
        table, systems, roles, find_fronts(systems, roles), indices, choose_quality(table), primary, note
    )


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


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
    est = paired_difference(
        ev.table.column(first, metric), ev.table.column(second, metric), ev.indices, ev.level
    )
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
    )


def non_inferiority(ev: Evidence, first: str, reference: str, metric: str) -> Comparison:
    """``first - reference`` claimed above ``-5 %`` of the reference's mean over the prompts both have."""
    a, b = ev.table.column(first, metric), ev.table.column(reference, metric)
    ref = masked_mean(b, complete((a, b)))
    if not ref > 0:
        return replace(
            difference(ev, first, reference, metric, "above", margin=math.nan),
            verdict=NOT_RUN,
            note=f"the reference's mean {ref:.4g} is not positive, so 5 % of it is no margin",
        )
    comparison = difference(ev, first, reference, metric, "above", margin=-NON_INFERIORITY_MARGIN * ref)
    return Comparison(
        **{
            **comparison.as_dict(),
            "note": f"margin = -{100 * NON_INFERIORITY_MARGIN:.0f} % of {reference}'s mean {ref:.4f}",
        }
    )


def gain_comparison(ev: Evidence, system: str, front: Front, metric: str, decides: bool = True) -> Comparison:
    """``system``'s diversity gain at matched quality over ``front``, claimed above 0."""
    gain: Gain = matched_quality_gain(ev.table, system, front, ev.quality or "", metric, ev.indices, ev.level)
    e = gain.estimate
    return Comparison(
        f"gain in {metric_label(metric)} at matched quality over the {front.label} front: {system}",
        metric,
        "gain",
        e.mean,
        e.low,
        e.high,
        e.n,
        0.0,
        "above",
        gain.verdict(),
        decides,
        gain.defined_fraction,
        gain.why_unresolved() or "",
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


def _missing(**needed: str | None) -> str | None:
    gone = [role for role, name in needed.items() if name is None]
    if not gone:
        return None
    return (
        f"not evaluated: no {' / '.join(gone)} system in evaluate/metrics.json (the main job evaluates "
        "them unless evaluate.systems replaces its list)"
    )


def _has_all(ev: Evidence, metric: str | None, *names: str) -> bool:
    return metric is not None and all(ev.table.has(n, metric) for n in names)


def _claim(cid: str, ev: Evidence, parts: list[Comparison], words: str, combined: str | None = None) -> Claim:
    deciding = [c.verdict for c in parts if c.decides]
    result = combined if combined is not None else all_of(deciding)
    return Claim(cid, STATEMENTS[cid], result, tuple(parts), f"{words} {ev.primary_note}.", ev.measures())


def _beside_diversity(ev: Evidence, first: str, second: str, side: str) -> list[Comparison]:
    """The same difference under every other diversity measure both systems have (not deciding)."""
    return [
        difference(ev, first, second, m, side, decides=False)
        for m in ev.table.measures()
        if is_diversity(m) and m != ev.primary and _has_all(ev, m, first, second)
    ]


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------


def claim_c1(ev: Evidence) -> Claim:
    """C1: teacher - base quality above 0 and teacher - base diversity (primary) below 0."""
    r = ev.roles
    if why := _missing(teacher=r.teacher, base=r.base):
        return not_run("C1", why, ev.measures())
    if not _has_all(ev, ev.quality, r.teacher, r.base) or not _has_all(ev, ev.primary, r.teacher, r.base):
        return not_run(
            "C1", "not measured: quality or the primary diversity measure is missing", ev.measures()
        )
    parts = [
        difference(ev, r.teacher, r.base, ev.quality, "above"),
        difference(ev, r.teacher, r.base, ev.primary, "below"),
        *_beside_diversity(ev, r.teacher, r.base, "below"),
    ]
    q, d = parts[0], parts[1]
    words = f"CFG's effect on quality {q.verdict}, on diversity {d.verdict} (both must hold)."
    return _claim("C1", ev, parts, words)


def claim_c2(ev: Evidence) -> Claim:
    """C2: β = 0 student - teacher quality above -5 % of the teacher's, at most half the rows per frame."""
    r = ev.roles
    if why := _missing(teacher=r.teacher, **{"quality (beta=0)": r.quality}):
        return not_run("C2", why, ev.measures())
    if not _has_all(ev, ev.quality, r.teacher, r.quality):
        return not_run("C2", "not measured: quality is missing", ev.measures())
    cost = cost_comparison(ev, r.quality, r.teacher)
    if cost is None:
        return not_run("C2", "not measured: the inference cost (model rows per frame) is missing")
    ni = non_inferiority(ev, r.quality, r.teacher, ev.quality)
    words = f"non-inferiority {ni.verdict}; half the cost {cost.verdict} (both must hold)."
    return _claim("C2", ev, [ni, cost], words)


def claim_c3(ev: Evidence) -> Claim:
    """C3: β > 0 student - β = 0 student and - teacher, under the primary measure and the reward embedder, above 0."""
    r = ev.roles
    if why := _missing(
        teacher=r.teacher, **{"quality (beta=0)": r.quality, "diversity (beta>0)": r.diversity}
    ):
        return not_run("C3", why, ev.measures())
    measures = [m for m in dict.fromkeys((ev.primary, DIVERSITY_REWARD)) if m is not None]
    lacking = [
        m for m in (ev.primary, DIVERSITY_REWARD) if not _has_all(ev, m, r.teacher, r.quality, r.diversity)
    ]
    if lacking:
        missing = ", ".join(m or "the primary diversity measure" for m in lacking)
        return not_run("C3", f"not measured: {missing} is missing (no reward embedder?)", ev.measures())
    parts = [
        difference(ev, r.diversity, other, m, "above") for m in measures for other in (r.quality, r.teacher)
    ]
    counts = {v: sum(p.verdict == v for p in parts) for v in (HOLDS, FAILS, UNRESOLVED)}
    words = (
        f"of {len(parts)} paired comparisons (2 measures x the beta = 0 student and the teacher), "
        f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[UNRESOLVED]} are unresolved (all must hold)."
    )
    return _claim("C3", ev, parts, words)


def claim_c4(ev: Evidence) -> Claim:
    """C4: some candidate (merge or β > 0 student) is non-inferior to the teacher and gains over the CFG front."""
    r = ev.roles
    candidates = [*r.merges, *([r.diversity] if r.diversity else [])]
    candidates = [c for c in candidates if c not in (r.quality,)]
    if why := _missing(
        teacher=r.teacher, **{"merged or diversity (beta>0)": candidates[0] if candidates else None}
    ):
        return not_run("C4", why, ev.measures())
    cfg = ev.fronts.get("cfg")
    if cfg is None or len(cfg.members) < 2:
        return not_run("C4", "not evaluated: the CFG front needs at least two CFG scales", ev.measures())
    front_names = (r.teacher, *cfg.members)
    if not _has_all(ev, ev.quality, *front_names) or not _has_all(ev, ev.primary, *cfg.members):
        return not_run(
            "C4", "not measured: quality or the primary diversity measure is missing", ev.measures()
        )
    temperature = ev.fronts.get("temperature")
    parts: list[Comparison] = []
    outcome, lines = [], []
    for name in candidates:
        if not _has_all(ev, ev.quality, name) or not _has_all(ev, ev.primary, name):
            lines.append(f"{name}: not measured")
            continue
        ni = non_inferiority(ev, name, r.teacher, ev.quality)
        gain = gain_comparison(ev, name, cfg, ev.primary)
        parts += [ni, gain]
        if (
            temperature is not None
            and len(temperature.members) >= 2
            and _has_all(ev, ev.primary, *temperature.members)
        ):
            parts.append(gain_comparison(ev, name, temperature, ev.primary, decides=False))
        outcome.append(all_of([ni.verdict, gain.verdict]))
        lines.append(f"{name}: {outcome[-1]} (non-inferior: {ni.verdict}; gain over CFG: {gain.verdict})")
    result = any_of(outcome)
    words = (
        f"best of {len(candidates)} candidates: C4 holds when any one is both non-inferior and above "
        "0 in gain, with no correction for picking the best of several; " + "; ".join(lines) + "."
    )
    return _claim("C4", ev, parts, words, combined=result)


def claim_c5(ev: Evidence) -> Claim:
    """C5: on-policy (β = 0) - offline golden metric above -5 % of the offline student's."""
    r = ev.roles
    if r.offline is None:
        return not_run(
            "C5",
            "not run: no offline distillation run was evaluated (the main job's offline stage, "
            "run.compare_offline, writes <run>/offline)",
            ev.measures(),
        )
    if why := _missing(**{"quality (beta=0)": r.quality}):
        return not_run("C5", why, ev.measures())
    if not _has_all(ev, GOLDEN, r.quality, r.offline):
        return not_run(
            "C5", "not measured: the golden metric (attribute adherence) needs an oracle", ev.measures()
        )
    ni = non_inferiority(ev, r.quality, r.offline, GOLDEN)
    return Claim(
        "C5",
        STATEMENTS["C5"],
        ni.verdict,
        (ni,),
        f"on-policy against offline: {ni.verdict}; the golden metric is attribute adherence of the "
        "students' samples on the evaluation's held-out prompts.",
        {"quality": GOLDEN},
    )


def all_claims(ev: Evidence) -> list[Claim]:
    """C1-C5 on one run's evidence."""
    return [claim_c1(ev), claim_c2(ev), claim_c3(ev), claim_c4(ev), claim_c5(ev)]


def claims_from_metrics(metrics: dict[str, Any] | None) -> list[Claim]:
    """The claims stored in ``evaluate/metrics.json``; every one not run when there are none (an older file)."""
    if metrics is None:
        why = "not run: the evaluate stage has not written evaluate/metrics.json"
        return [not_run(cid, why) for cid in CLAIM_IDS]
    stored = metrics.get("claims")
    if not isinstance(stored, list) or not stored:
        why = (
            "not run: evaluate/metrics.json predates the paired statistics (it has no claims); rerun "
            "the evaluate stage (musicdistill run <config> --force evaluate)"
        )
        return [not_run(cid, why) for cid in CLAIM_IDS]
    by_id = {str(c.get("id")): Claim.from_dict(c) for c in stored if isinstance(c, dict)}
    return [
        by_id.get(cid) or not_run(cid, "not run: missing from evaluate/metrics.json") for cid in CLAIM_IDS
    ]
