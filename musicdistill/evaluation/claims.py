"""The paper's claims (C1-C5), each checked against one run's measurements: the report's first table.

Every claim is a pure function of ``evaluate/metrics.json`` (and, for C5, of distillation histories)
returning a :class:`Claim` with the numbers it used. A claim holds or fails on the measured means;
whether the 95 % intervals overlap is stated beside it, never used to bend the verdict. A claim
whose systems were not evaluated (or whose metric was not measured) has ``holds=None``.

How the systems of ``metrics.json`` are read (the main job's naming, ``stages.main_job_systems``),
by checkpoint folder and sampling settings rather than by display name:

- **the teacher**: the ``base`` checkpoint sampled with CFG at γ = ``distill.gamma`` and temperature 1,
  the frozen teacher the students were distilled from (``base CFG 3`` by default);
- **the base model**: the ``base`` checkpoint without CFG (scale 1) at temperature 1 (``base``);
- **the quality model**: the β = 0 student (checkpoint folder ``quality``); **the diversity model**:
  the β > 0 student (``diversity``); **merged models**: checkpoints under ``merges/`` (family ``merged``).

Quality is attribute adherence (the attribute oracle: exact, and optimised by no reward) when every
system a claim compares has it, else text adherence. Diversity is the mean pairwise ``1 - cos`` under
the **independent** embedder (hand-made features): the diversity model was trained to raise the
reward embedder's diversity, so that embedder's numbers can be gamed; they are reported beside it,
and C3 requires both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUALITY_METRICS = ("attribute_adherence", "text_adherence")
DIVERSITY = "diversity_independent"
DIVERSITY_REWARD = "diversity_reward"
C2_QUALITY_FRACTION = 0.95

STATEMENTS = {
    "C1": "CFG raises quality over the base model and lowers diversity.",
    "C2": "The beta = 0 model without CFG reaches at least 95 % of the CFG teacher's quality at half the "
    "teacher's model rows per generated frame.",
    "C3": "The beta > 0 model is more diverse than the CFG teacher, under the independent embedder as well "
    "as the reward embedder.",
    "C4": "Some merged model has quality within the teacher's 95 % interval or above it, and higher "
    "diversity than the teacher.",
    "C5": "On-policy distillation ends with a golden metric (attribute adherence of held-out samples) at "
    "least as good as offline distillation's.",
}


@dataclass(frozen=True)
class Number:
    """One measured value a claim used: a mean and, when measured, its 95 % interval."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.label} = {self.value:.4g}"
        return f"{self.label} = {self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class Claim:
    """One claim's verdict: ``holds`` is None when it could not be checked (see ``explanation``)."""

    id: str
    statement: str
    numbers: tuple[Number, ...]
    holds: bool | None
    explanation: str

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold", None: "not run"}[self.holds]


@dataclass(frozen=True)
class Roles:
    """Names (keys of ``metrics["systems"]``) of the systems the claims compare; None when not evaluated."""

    teacher: str | None
    base: str | None
    quality: str | None
    diversity: str | None
    merges: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Reading metrics.json
# --------------------------------------------------------------------------------------------


def _is_base(system: dict[str, Any]) -> bool:
    return Path(str(system.get("checkpoint", ""))).name == "base"


def _settings(system: dict[str, Any]) -> tuple[float, float]:
    s = system.get("settings") or {}
    return float(s.get("cfg_scale", 1.0)), float(s.get("temperature", 1.0))


def find_roles(systems: dict[str, dict[str, Any]], gamma: float) -> Roles:
    """The teacher, base, quality, diversity and merged systems of ``metrics["systems"]`` (see module doc)."""

    def first(pred) -> str | None:
        return next((name for name, s in systems.items() if pred(s)), None)

    teacher = first(lambda s: _is_base(s) and math.isclose(_settings(s)[0], gamma) and _settings(s)[1] == 1.0)
    base = first(lambda s: _is_base(s) and _settings(s) == (1.0, 1.0))
    quality = first(lambda s: Path(str(s.get("checkpoint", ""))).name == "quality")
    diversity = first(lambda s: Path(str(s.get("checkpoint", ""))).name == "diversity")
    merges = tuple(
        name
        for name, s in systems.items()
        if s.get("family") == "merged" or Path(str(s.get("checkpoint", ""))).parent.name == "merges"
    )
    return Roles(teacher, base, quality, diversity, merges)


def metric(systems: dict[str, dict[str, Any]], name: str | None, key: str) -> Number | None:
    """``key`` of system ``name`` as a Number labelled ``"<name> <key>"``; None when absent or not finite."""
    if name is None or name not in systems:
        return None
    m = (systems[name].get("metrics") or {}).get(key)
    if not m or not isinstance(m.get("mean"), (int, float)) or not math.isfinite(m["mean"]):
        return None
    low, high = m.get("low"), m.get("high")
    finite = (
        isinstance(low, (int, float))
        and isinstance(high, (int, float))
        and math.isfinite(low)
        and math.isfinite(high)
    )
    return Number(
        f"{name}: {key.replace('_', ' ')}",
        float(m["mean"]),
        float(low) if finite else None,
        float(high) if finite else None,
    )


def rows_per_frame(systems: dict[str, dict[str, Any]], name: str | None) -> Number | None:
    """Model rows one generated frame costs (2 with CFG, 1 without)."""
    if name is None or name not in systems:
        return None
    rows = (systems[name].get("cost") or {}).get("rows_per_sample")
    return Number(f"{name}: model rows per frame", float(rows)) if isinstance(rows, (int, float)) else None


def quality_metric(systems: dict[str, dict[str, Any]], names: list[str | None]) -> str | None:
    """The first of :data:`QUALITY_METRICS` that every named system has."""
    for key in QUALITY_METRICS:
        if all(metric(systems, n, key) is not None for n in names):
            return key
    return None


def overlap(a: Number, b: Number) -> bool | None:
    """Whether the 95 % intervals of ``a`` and ``b`` overlap (None when either has none)."""
    if None in (a.low, a.high, b.low, b.high):
        return None
    return a.low <= b.high and b.low <= a.high


def _overlap_words(a: Number, b: Number) -> str:
    return {
        True: "the 95 % intervals overlap, so the difference is not resolved",
        False: "the 95 % intervals are disjoint",
        None: "no intervals to compare",
    }[overlap(a, b)]


def _not_run(cid: str, why: str, numbers: tuple[Number, ...] = ()) -> Claim:
    return Claim(cid, STATEMENTS[cid], numbers, None, why)


def _missing(roles: Roles, **needed: str | None) -> str | None:
    gone = [role for role, name in needed.items() if name is None]
    if not gone:
        return None
    return (
        f"not evaluated: no {' / '.join(gone)} system in evaluate/metrics.json (the main job evaluates "
        "them unless evaluate.systems replaces its list, or distill.gamma is missing from "
        "evaluate.cfg_scales)"
    )


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------


def claim_c1(systems: dict[str, dict[str, Any]], roles: Roles) -> Claim:
    """C1: teacher quality > base quality and teacher diversity < base diversity (means)."""
    if why := _missing(roles, teacher=roles.teacher, base=roles.base):
        return _not_run("C1", why)
    key = quality_metric(systems, [roles.teacher, roles.base])
    qt, qb = metric(systems, roles.teacher, key or ""), metric(systems, roles.base, key or "")
    dt, db = metric(systems, roles.teacher, DIVERSITY), metric(systems, roles.base, DIVERSITY)
    extra = tuple(
        n
        for n in (
            metric(systems, roles.base, DIVERSITY_REWARD),
            metric(systems, roles.teacher, DIVERSITY_REWARD),
        )
        if n
    )
    if qt is None or qb is None or dt is None or db is None:
        return _not_run("C1", "not measured: quality or independent diversity is missing", extra)
    raises, lowers = qt.value > qb.value, dt.value < db.value
    explanation = (
        f"quality ({key}) {'rises' if raises else 'does not rise'}: {qb.value:.4g} (base) -> "
        f"{qt.value:.4g} (teacher); {_overlap_words(qb, qt)}. Diversity (independent) "
        f"{'falls' if lowers else 'does not fall'}: {db.value:.4g} -> {dt.value:.4g}; "
        f"{_overlap_words(db, dt)}."
    )
    return Claim("C1", STATEMENTS["C1"], (qb, qt, db, dt, *extra), raises and lowers, explanation)


def claim_c2(systems: dict[str, dict[str, Any]], roles: Roles) -> Claim:
    """C2: quality(β = 0) >= 0.95 quality(teacher), with at most half the teacher's rows per frame."""
    if why := _missing(roles, teacher=roles.teacher, **{"quality (beta=0)": roles.quality}):
        return _not_run("C2", why)
    key = quality_metric(systems, [roles.teacher, roles.quality])
    qs, qt = metric(systems, roles.quality, key or ""), metric(systems, roles.teacher, key or "")
    rs, rt = rows_per_frame(systems, roles.quality), rows_per_frame(systems, roles.teacher)
    if qs is None or qt is None or rs is None or rt is None:
        return _not_run("C2", "not measured: quality or inference cost is missing")
    numbers = (qt, qs, rt, rs)
    if qt.value <= 0:
        return _not_run(
            "C2",
            f"a fraction of the teacher's quality needs a positive value; the teacher's "
            f"{key} is {qt.value:.4g}",
            numbers,
        )
    ratio = qs.value / qt.value
    good, cheap = ratio >= C2_QUALITY_FRACTION, 2 * rs.value <= rt.value
    explanation = (
        f"the student reaches {100 * ratio:.1f} % of the teacher's {key} "
        f"({'>=' if good else '<'} {100 * C2_QUALITY_FRACTION:.0f} %) with {rs.value:g} model row(s) "
        f"per frame against the teacher's {rt.value:g} ({'at most half' if cheap else 'more than half'})."
    )
    return Claim(
        "C2",
        STATEMENTS["C2"],
        (*numbers, Number("quality ratio student / teacher", ratio)),
        good and cheap,
        explanation,
    )


def claim_c3(systems: dict[str, dict[str, Any]], roles: Roles) -> Claim:
    """C3: diversity(β > 0) > diversity(teacher) under the independent and under the reward embedder."""
    if why := _missing(roles, teacher=roles.teacher, **{"diversity (beta>0)": roles.diversity}):
        return _not_run("C3", why)
    pairs = [
        (metric(systems, roles.teacher, k), metric(systems, roles.diversity, k), k)
        for k in (DIVERSITY, DIVERSITY_REWARD)
    ]
    if any(t is None or d is None for t, d, _ in pairs):
        missing = [k for t, d, k in pairs if t is None or d is None]
        return _not_run("C3", f"not measured: {', '.join(missing)} is missing (no reward embedder?)")
    parts, verdicts = [], []
    for t, d, key in pairs:
        verdicts.append(d.value > t.value)
        parts.append(
            f"{key.replace('_', ' ')}: {d.value:.4g} vs the teacher's {t.value:.4g} "
            f"({'higher' if verdicts[-1] else 'not higher'}; {_overlap_words(t, d)})"
        )
    numbers = tuple(n for t, d, _ in pairs for n in (t, d))
    return Claim("C3", STATEMENTS["C3"], numbers, all(verdicts), "; ".join(parts) + ".")


def claim_c4(systems: dict[str, dict[str, Any]], roles: Roles) -> Claim:
    """C4: some merge has quality >= the teacher's interval low and diversity > the teacher's mean."""
    if why := _missing(roles, teacher=roles.teacher, merged=roles.merges[0] if roles.merges else None):
        return _not_run("C4", why)
    key = quality_metric(systems, [roles.teacher, *roles.merges])
    qt, dt = metric(systems, roles.teacher, key or ""), metric(systems, roles.teacher, DIVERSITY)
    if qt is None or dt is None:
        return _not_run("C4", "not measured: the teacher's quality or independent diversity is missing")
    floor = qt.low if qt.low is not None else qt.value
    numbers: list[Number] = [qt, dt]
    winners, notes = [], []
    for name in roles.merges:
        q, d = metric(systems, name, key or ""), metric(systems, name, DIVERSITY)
        if q is None or d is None:
            notes.append(f"{name}: not measured")
            continue
        numbers += [q, d]
        ok_q, ok_d = q.value >= floor, d.value > dt.value
        if ok_q and ok_d:
            winners.append(name)
        notes.append(
            f"{name}: quality {q.value:.4g} {'>=' if ok_q else '<'} {floor:.4g}, diversity "
            f"{d.value:.4g} {'>' if ok_d else '<='} {dt.value:.4g}"
        )
    head = (
        f"{', '.join(winners)} {'meets' if len(winners) == 1 else 'meet'} both"
        if winners
        else "no merged model meets both"
    )
    explanation = (
        f"{head} (quality = {key}, floor = the teacher's interval low; diversity = independent "
        f"embedder, against the teacher's mean). " + "; ".join(notes) + "."
    )
    return Claim("C4", STATEMENTS["C4"], tuple(numbers), bool(winners), explanation)


def final_golden(rows: list[dict[str, Any]]) -> float | None:
    """The golden metric of a distillation history's last held-out evaluation (None when never measured)."""
    values = [r["eval_golden"] for r in rows if isinstance(r.get("eval_golden"), (int, float))]
    return float(values[-1]) if values else None


def claim_c5(on_policy: float | None, offline: dict[str, float | None]) -> Claim:
    """C5: the on-policy β = 0 run's final golden metric >= every offline run's (``offline``: name -> value)."""
    if not offline:
        return _not_run(
            "C5",
            "not run: no offline distillation run (distill.mode=teacher or dataset, "
            "beta = 0) in this run folder",
        )
    if on_policy is None or any(v is None for v in offline.values()):
        return _not_run("C5", "not measured: a run has no golden metric (no attribute oracle?)")
    numbers = (
        Number("on-policy (quality): final golden", on_policy),
        *(Number(f"offline ({name}): final golden", float(v)) for name, v in offline.items()),
    )
    worse = [name for name, v in offline.items() if on_policy < float(v)]
    explanation = (
        "the on-policy run ends at least as high as every offline run"
        if not worse
        else f"the on-policy run ends below {', '.join(worse)}"
    )
    return Claim("C5", STATEMENTS["C5"], numbers, not worse, explanation + ".")


def main_job_claims(
    metrics: dict[str, Any] | None,
    gamma: float,
    on_policy_golden: float | None = None,
    offline_golden: dict[str, float | None] | None = None,
) -> list[Claim]:
    """C1-C5 for one run; ``metrics`` is ``evaluate/metrics.json`` (None when the stage did not run)."""
    offline_claim = claim_c5(on_policy_golden, offline_golden or {})
    if metrics is None:
        why = "not run: the evaluate stage has not written evaluate/metrics.json"
        return [*(_not_run(cid, why) for cid in ("C1", "C2", "C3", "C4")), offline_claim]
    systems = metrics.get("systems") or {}
    roles = find_roles(systems, gamma)
    return [
        claim_c1(systems, roles),
        claim_c2(systems, roles),
        claim_c3(systems, roles),
        claim_c4(systems, roles),
        offline_claim,
    ]
