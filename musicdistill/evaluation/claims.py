"""The paper's claims (C1-C5) and the conditioned student's (C6), decided on paired per-prompt statistics: the report's first table.

The rules are fixed here before any run (and in ``docs/method.md`` section 7); a run changes the
numbers, never the rules. Every claim is a pure function of an
:class:`musicdistill.evaluation.comparisons.Evidence` and a set of
:class:`musicdistill.evaluation.comparisons.Comparison` s, each a paired difference (or a gain at
matched quality) with its 95 % interval, a margin, a side and a three-way verdict: **holds** when the
interval clears the margin on the claimed side, **fails** when it lies entirely on the other side,
**unresolved** otherwise. A claim holds when every deciding comparison holds and fails when any fails
(:func:`paired.all_of`); C4, a claim about *some* candidate, holds when one candidate holds and fails
when every one fails (:func:`paired.any_of`). Comparisons shown "beside" a claim do not decide it. A
claim whose systems or measures were not evaluated is **not run**, with the reason.

Quality and the primary independent diversity measure are chosen by what the run measured
(:func:`musicdistill.evaluation.comparisons.choose_quality`,
:func:`musicdistill.evaluation.comparisons.choose_primary`); every claim says which primary measure it
used, and when it is the hand-made fallback. C3 also requires **the reward embedder's diversity**
(:data:`DIVERSITY_REWARD`): what the diversity model was trained to raise, so it can be gamed. C2, C4
and C5 are non-inferiority claims, with the margin of
:func:`musicdistill.evaluation.comparisons.noninferiority_margin`; C5 decides on the golden metric
(:data:`GOLDEN`, held-out attribute adherence).

C3 compares the diversity student with its control (beta the only difference; the quality student
stands in when no control was evaluated). C4 decides on simultaneous lower bounds over every
candidate's components (:func:`musicdistill.evaluation.paired.simultaneous_lower_bounds`). C3 and C4
are **contested** (:data:`musicdistill.evaluation.paired.CONTESTED`) when another validated view
(:data:`musicdistill.evaluation.comparisons.VALIDATED_VIEWS`) places a primary comparison they rest on
entirely on the other side of its margin (``docs/method.md`` section 7.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from musicdistill.evaluation.comparisons import (
    VALIDATED_VIEWS,
    Comparison,
    Evidence,
    Margin,
    cost_comparison,
    difference,
    diversity_margin,
    front_gain,
    gain_comparison,
    has_all,
    is_diversity,
    non_inferiority,
    noninferiority_margin,
)
from musicdistill.evaluation.fronts import Front
from musicdistill.evaluation.metrics import metric_label
from musicdistill.evaluation.paired import (
    CONTESTED,
    FAILS,
    HOLDS,
    NOT_RUN,
    UNRESOLVED,
    all_of,
    any_of,
    paired_replicates,
    simultaneous_lower_bounds,
    verdict,
)
from musicdistill.evaluation.roles import dial_weight

DIVERSITY_REWARD = "diversity_reward"
GOLDEN = "attribute_adherence"
CLAIM_IDS = ("C1", "C2", "C3", "C4", "C5", "C6")

STATEMENTS = {
    "C1": "CFG (the teacher, gamma = distill.gamma) raises quality and lowers diversity over the base "
    "model without CFG (paired).",
    "C2": "The beta = 0 student is non-inferior to the teacher (quality difference above -delta, "
    "delta = min(5 % of the teacher's quality, 25 % of CFG's quality gain)) at 1 model row per frame "
    "against 2.",
    "C6": "One conditioned student covers the merge front: at matched quality each of its points (w in "
    "run.conditioned_w) is at least as diverse as the merges (gain above -delta_d, a quarter of the "
    "diversity CFG costs), and its w = 0 point is non-inferior to the teacher, on simultaneous bounds.",
    "C3": "The beta > 0 student is more diverse than its control (the same settings with beta = 0) and "
    "than the teacher, under the primary independent measure and under the reward embedder (paired).",
    "C4": "Some merge (or the beta > 0 student) is non-inferior to the teacher in quality (above -delta) "
    "and has a positive diversity gain at matched quality over the CFG front, under the primary "
    "independent measure, on bounds corrected for trying several candidates.",
    "C5": "On-policy distillation's golden metric (held-out attribute adherence) is non-inferior to "
    "offline distillation's (above -delta, paired).",
}

# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One claim's verdict (holds / fails / unresolved / contested / not run), comparisons and measures."""

    id: str
    statement: str
    verdict: str
    comparisons: tuple[Comparison, ...]
    explanation: str
    measures: dict[str, str] = field(default_factory=dict)

    @property
    def holds(self) -> bool | None:
        """True when it holds, False when it fails, None when unresolved, contested or not run."""
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


def _missing(**needed: str | None) -> str | None:
    gone = [role for role, name in needed.items() if name is None]
    if not gone:
        return None
    return (
        f"not evaluated: no {' / '.join(gone)} system in evaluate/metrics.json (the main job evaluates "
        "them unless evaluate.systems replaces its list)"
    )


def _views(ev: Evidence, *names: str) -> list[str]:
    """The validated diversity views other than the primary measure that every one of ``names`` has."""
    return [m for m in VALIDATED_VIEWS if m != ev.primary and has_all(ev, m, *names)]


def _claim(cid: str, ev: Evidence, parts: list[Comparison], words: str, combined: str | None = None) -> Claim:
    deciding = [c.verdict for c in parts if c.decides]
    result = combined if combined is not None else all_of(deciding)
    return Claim(cid, STATEMENTS[cid], result, tuple(parts), f"{words} {ev.primary_note}.", ev.measures())


def _beside_diversity(ev: Evidence, first: str, second: str, side: str) -> list[Comparison]:
    """The same difference under every other diversity measure both systems have (not deciding)."""
    return [
        difference(ev, first, second, m, side, decides=False)
        for m in ev.table.measures()
        if is_diversity(m) and m != ev.primary and has_all(ev, m, first, second)
    ]


def _contradiction(primary: Comparison, views: Sequence[Comparison]) -> str | None:
    """A sentence naming the first view in ``views`` that contradicts ``primary`` (None when none does)."""
    for view in views:
        if view.contradicts(primary):
            return (
                f"{metric_label(view.metric)} places it on the other side of {view.margin:.4g}: "
                f"{view.mean:+.4f} [{view.low:+.4f}, {view.high:+.4f}], where {metric_label(primary.metric)} "
                f"gives {primary.mean:+.4f} [{primary.low:+.4f}, {primary.high:+.4f}] ({primary.verdict})"
            )
    return None


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------


def claim_c1(ev: Evidence) -> Claim:
    """C1: teacher - base quality above 0 and teacher - base diversity (primary) below 0."""
    r = ev.roles
    if why := _missing(teacher=r.teacher, base=r.base):
        return not_run("C1", why, ev.measures())
    if not has_all(ev, ev.quality, r.teacher, r.base) or not has_all(ev, ev.primary, r.teacher, r.base):
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
    """C2: β = 0 student - teacher quality above -delta, at most half the rows per frame."""
    r = ev.roles
    if why := _missing(teacher=r.teacher, **{"quality (beta=0)": r.quality}):
        return not_run("C2", why, ev.measures())
    if not has_all(ev, ev.quality, r.teacher, r.quality):
        return not_run("C2", "not measured: quality is missing", ev.measures())
    cost = cost_comparison(ev, r.quality, r.teacher)
    if cost is None:
        return not_run("C2", "not measured: the inference cost (model rows per frame) is missing")
    ni = non_inferiority(ev, r.quality, r.teacher, ev.quality)
    words = f"non-inferiority {ni.verdict} ({ni.note}); half the cost {cost.verdict} (both must hold)."
    return _claim("C2", ev, [ni, cost], words)


def claim_c3(ev: Evidence) -> Claim:
    """C3: β > 0 student - its control and - teacher, under the primary measure and the reward embedder,
    above 0; contested when another validated view contradicts a primary comparison it rests on."""
    r = ev.roles
    control = ev.control if ev.control is not None and ev.table.has(ev.control, ev.primary) else None
    other = control or r.quality
    stand_in = (
        "against the control (its settings with beta = 0, so beta is the only difference)"
        if control
        else f"NO control was evaluated (or it lacks the primary measure), so the beta = 0 quality "
        f"student ({r.quality}) stands in: it differs from the diversity student in more than beta"
    )
    if why := _missing(
        teacher=r.teacher, **{"control or quality (beta=0)": other, "diversity (beta>0)": r.diversity}
    ):
        return not_run("C3", why, ev.measures())
    measures = [m for m in dict.fromkeys((ev.primary, DIVERSITY_REWARD)) if m is not None]
    lacking = [m for m in (ev.primary, DIVERSITY_REWARD) if not has_all(ev, m, r.teacher, other, r.diversity)]
    if lacking:
        missing = ", ".join(m or "the primary diversity measure" for m in lacking)
        return not_run("C3", f"not measured: {missing} is missing (no reward embedder?)", ev.measures())
    against = (other, r.teacher)
    deciding = [(o, difference(ev, r.diversity, o, m, "above")) for m in measures for o in against]
    parts = [p for _, p in deciding]
    beside = {
        o: [difference(ev, r.diversity, o, v, "above", decides=False) for v in _views(ev, r.diversity, o)]
        for o in against
    }
    counts = {v: sum(p.verdict == v for p in parts) for v in (HOLDS, FAILS, UNRESOLVED)}
    result = all_of(p.verdict for p in parts)
    # contested: the verdict rests on primary comparisons that another validated view contradicts
    primary = [(p, _contradiction(p, beside[o])) for o, p in deciding if p.metric == ev.primary]
    contested = []
    if result == HOLDS:
        contested = [(p, why) for p, why in primary if why]
    elif result == FAILS:
        failing = [p for p in parts if p.verdict == FAILS]
        found = [(p, why) for p, why in primary if p.verdict == FAILS]
        if len(found) == len(failing) and all(why for _, why in found):
            contested = found
    words = (
        f"{stand_in}; of {len(parts)} paired comparisons (2 measures x the "
        f"{'control' if control else 'beta = 0 student'} and the teacher), {counts[HOLDS]} hold, "
        f"{counts[FAILS]} fail, {counts[UNRESOLVED]} are unresolved (all must hold)."
    )
    if contested:
        reasons = "; ".join(f"{p.label}: {why}" for p, why in contested)
        words += f" CONTESTED (it would be {result}): {reasons}."
        result = CONTESTED
    all_parts = parts + [c for o in against for c in beside[o]]
    return _claim("C3", ev, all_parts, words, combined=result)


@dataclass(frozen=True)
class _Candidate:
    """One C4 candidate's deciding comparisons (non-inferiority, gain over the CFG front) and its views."""

    name: str
    ni: Comparison
    gain: Comparison
    beside: tuple[Comparison, ...]
    views: tuple[Comparison, ...]

    @property
    def verdict(self) -> str:
        return all_of([self.ni.verdict, self.gain.verdict])

    def line(self) -> str:
        return (
            f"{self.name}: {self.verdict} (non-inferior: {self.ni.verdict}; gain over CFG: "
            f"{self.gain.verdict})"
        )


def _c4_candidates(
    ev: Evidence, names: list[str], cfg: Front, margin: Margin
) -> tuple[list[_Candidate], float]:
    """Each candidate's comparisons, decided on simultaneous lower bounds over all 2 x len(names)
    components (:func:`simultaneous_lower_bounds`), and the critical value c."""
    teacher = ev.roles.teacher or ""
    teacher_q = ev.table.column(teacher, ev.quality or "")
    ni_raw = [paired_replicates(ev.table.column(c, ev.quality or ""), teacher_q, ev.indices) for c in names]
    gains = [front_gain(ev, c, cfg, ev.primary or "") for c in names]
    points = np.array([x for (p, _, _), g in zip(ni_raw, gains) for x in (p, g.estimate.mean)])  # [2m]
    reps = np.stack([x for (_, rep, _), g in zip(ni_raw, gains) for x in (rep, g.replicates)], axis=1)
    sim = simultaneous_lower_bounds(points, reps, ev.level)  # components: ni_1, gain_1, ni_2, ...
    temperature = ev.fronts.get("temperature")
    if temperature is not None and (
        len(temperature.members) < 2 or not has_all(ev, ev.primary, *temperature.members)
    ):
        temperature = None
    out = []
    for i, (name, gain) in enumerate(zip(names, gains)):
        ni_low = float(sim.lows[2 * i])
        ni = difference(ev, name, teacher, ev.quality or "", "above", margin=-margin.delta)
        ni = replace(
            ni,
            verdict=verdict(ni_low, ni.high, -margin.delta, "above"),
            note=margin.note,
            corrected_low=ni_low,
        )
        beside = (gain_comparison(ev, name, temperature, ev.primary, decides=False),) if temperature else ()
        views = tuple(
            gain_comparison(ev, name, cfg, v, decides=False) for v in _views(ev, name, *cfg.members)
        )
        out.append(
            _Candidate(
                name,
                ni,
                gain_comparison(ev, gain, cfg, corrected_low=float(sim.lows[2 * i + 1])),
                beside,
                views,
            )
        )
    return out, sim.critical


def _c4_contested(result: str, candidates: list[_Candidate]) -> list[str]:
    """Why C4's verdict is contested: every holding candidate's gain is contradicted by a view, or some
    candidate that failed only on its gain has a view that sees it (empty when neither)."""
    if result == HOLDS:
        found = [(c, _contradiction(c.gain, c.views)) for c in candidates if c.verdict == HOLDS]
        return [f"{c.name}'s gain: {why}" for c, why in found] if all(why for _, why in found) else []
    if result == FAILS:
        only_gain = [c for c in candidates if c.ni.verdict != FAILS and c.gain.verdict == FAILS]
        found = [(c, _contradiction(c.gain, c.views)) for c in only_gain]
        return [f"{c.name}'s gain: {why}" for c, why in found if why]
    return []


def claim_c4(ev: Evidence) -> Claim:
    """C4: some candidate (merge or β > 0 student) is non-inferior to the teacher and gains over the CFG
    front, on simultaneous lower bounds over every candidate's two components; contested when
    another validated view contradicts the gain of every candidate it holds through."""
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
    if not has_all(ev, ev.quality, r.teacher, *cfg.members) or not has_all(ev, ev.primary, *cfg.members):
        return not_run(
            "C4", "not measured: quality or the primary diversity measure is missing", ev.measures()
        )
    margin = noninferiority_margin(ev, ev.quality, r.teacher)
    if not margin.delta > 0:
        return not_run("C4", f"{margin.note}: not positive, so no margin", ev.measures())
    measured = [c for c in candidates if has_all(ev, ev.quality, c) and has_all(ev, ev.primary, c)]
    if not measured:
        return not_run("C4", "not measured: no candidate has quality and the primary measure", ev.measures())
    found, critical = _c4_candidates(ev, measured, cfg, margin)
    result = any_of(c.verdict for c in found)
    lines = [f"{c}: not measured" for c in candidates if c not in measured] + [c.line() for c in found]
    c_text = f"{critical:.3f}" if math.isfinite(critical) else "infinite"
    words = (
        f"{len(found)} candidate{'s' if len(found) != 1 else ''}, {2 * len(found)} deciding components "
        "(each candidate's non-inferiority and gain over the CFG front), corrected together by a "
        f"max-statistic in the joint bootstrap: simultaneous lower bounds at c = {c_text} bootstrap "
        f"standard errors; C4 holds when some candidate has both components holding; {margin.note}; "
        + "; ".join(lines)
        + "."
    )
    if not math.isfinite(critical):
        words += (
            " c is infinite because some gain is undefined (below the CFG front's lowest quality) in "
            "more than 2.5 % of the resamples, so no bound can clear its margin."
        )
    if contested := _c4_contested(result, found):
        words += f" CONTESTED (it would be {result}): " + "; ".join(contested) + "."
        result = CONTESTED
    parts = [x for c in found for x in (c.ni, c.gain, *c.beside, *c.views)]
    return _claim("C4", ev, parts, words, combined=result)


def claim_c5(ev: Evidence) -> Claim:
    """C5: on-policy (β = 0) - offline golden metric above -delta (the same delta as C2, from the teacher
    and the base on the golden metric; 5 % of the offline student's as a fallback)."""
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
    if not has_all(ev, GOLDEN, r.quality, r.offline):
        return not_run(
            "C5", "not measured: the golden metric (attribute adherence) needs an oracle", ev.measures()
        )
    ni = non_inferiority(ev, r.quality, r.offline, GOLDEN)
    return Claim(
        "C5",
        STATEMENTS["C5"],
        ni.verdict,
        (ni,),
        f"on-policy against offline: {ni.verdict} ({ni.note}); the golden metric is attribute "
        "adherence of the students' samples on the evaluation's held-out prompts.",
        {"quality": GOLDEN},
    )


def _c6_gains(
    ev: Evidence, zero: str, merge: Front, margin: Margin, dmargin: Margin
) -> tuple[list[Comparison], list[Comparison], float]:
    """(deciding comparisons: the w = 0 point's non-inferiority, then each defined point's gain over the
    merge front above -delta_d, on simultaneous bounds; points whose gain is undefined, reported; c)."""
    r, quality, primary = ev.roles, ev.quality or "", ev.primary or ""
    teacher = r.teacher or ""
    gains = [front_gain(ev, p, merge, primary) for p in r.conditioned]
    defined = [g for g in gains if g.defined]
    ni_point, ni_reps, _ = paired_replicates(
        ev.table.column(zero, quality), ev.table.column(teacher, quality), ev.indices
    )
    points = np.array([ni_point, *(g.estimate.mean for g in defined)])
    reps = np.stack([ni_reps, *(g.replicates for g in defined)], axis=1)
    sim = simultaneous_lower_bounds(points, reps, ev.level)
    ni = difference(ev, zero, teacher, quality, "above", margin=-margin.delta)
    low = float(sim.lows[0])
    ni_verdict = FAILS if ni.high < -margin.delta else verdict(low, ni.high, -margin.delta, "above")
    ni = replace(ni, verdict=ni_verdict, note=margin.note, corrected_low=low)
    deciding = [ni] + [
        replace(
            gain_comparison(ev, g, merge, corrected_low=float(low), margin=-dmargin.delta),
            note=dmargin.note,
        )
        for g, low in zip(defined, sim.lows[1:])
    ]
    undefined = [
        gain_comparison(ev, g, merge, decides=False, margin=-dmargin.delta) for g in gains if not g.defined
    ]
    return deciding, undefined, sim.critical


def claim_c6(ev: Evidence) -> Claim:
    """C6 (docs/method.md 7.6): the conditioned student's points are at least as diverse as the merge front
    at matched quality (-delta_d) and its w = 0 point is non-inferior to the teacher (-delta), on
    simultaneous lower bounds; the CFG-front gains and the other views beside."""
    r = ev.roles
    if not r.conditioned:
        return not_run(
            "C6",
            "not run: no conditioned student was evaluated (run.conditioned writes <run>/conditioned)",
            ev.measures(),
        )
    if why := _missing(teacher=r.teacher, base=r.base):
        return not_run("C6", why, ev.measures())
    merge = ev.fronts.get("merge")
    if merge is None or len(merge.members) < 2:
        return not_run(
            "C6", "not evaluated: the merge front needs the quality and diversity students", ev.measures()
        )
    everyone = (r.teacher, r.base, *merge.members, *r.conditioned)
    if not has_all(ev, ev.quality, *everyone) or not has_all(ev, ev.primary, *everyone):
        return not_run(
            "C6", "not measured: quality or the primary diversity measure is missing", ev.measures()
        )
    zero = next((n for n in r.conditioned if dial_weight(ev.systems[n]) == 0.0), None)
    if zero is None:
        return not_run(
            "C6",
            "not run: the conditioned student was not evaluated at w = 0 (run.conditioned_w)",
            ev.measures(),
        )
    margin = noninferiority_margin(ev, ev.quality, r.teacher)
    dmargin = diversity_margin(ev, ev.primary)
    if not (margin.delta > 0 and dmargin.delta > 0):
        why = margin.note if not margin.delta > 0 else dmargin.note
        return not_run("C6", f"{why}: not positive, so no margin", ev.measures())
    deciding, undefined, critical = _c6_gains(ev, zero, merge, margin, dmargin)
    if len(deciding) == 1:
        return not_run(
            "C6",
            "not run: no conditioned point's gain over the merge front is defined (every point lies below "
            "the front's lowest quality)",
            ev.measures(),
        )
    cfg = ev.fronts.get("cfg")
    beside = []
    for p in r.conditioned:
        if cfg is not None and len(cfg.members) >= 2 and has_all(ev, ev.primary, *cfg.members):
            beside.append(gain_comparison(ev, p, cfg, ev.primary, decides=False))
        beside += [gain_comparison(ev, p, merge, v, decides=False) for v in _views(ev, p, *merge.members)]
    c_text = f"{critical:.3f}" if math.isfinite(critical) else "infinite"
    words = (
        f"{len(deciding)} deciding components (the w = 0 point's non-inferiority to the teacher and the gain "
        f"over the merge front of each of {len(deciding) - 1} conditioned points whose gain is defined), "
        f"corrected together by a max-statistic in the joint bootstrap: simultaneous lower bounds at c = "
        f"{c_text}; {margin.note}; {dmargin.note}"
        + (
            f"; {len(undefined)} point(s) below the merge front's lowest quality do not decide"
            if undefined
            else ""
        )
        + "."
    )
    return _claim("C6", ev, [*deciding, *undefined, *beside], words)


def all_claims(ev: Evidence) -> list[Claim]:
    """C1-C6 on one run's evidence (or on the pooled evidence of several seeds)."""
    return [claim_c1(ev), claim_c2(ev), claim_c3(ev), claim_c4(ev), claim_c5(ev), claim_c6(ev)]


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
