"""The statistical rules of issue 23 (docs/method.md section 7), each decided on synthetic tables whose
right verdict is known: the non-inferiority margin (both branches and the fallback), the conservative
gain above the CFG front, C4's multiplicity correction (a simulated null), contested claims, C3 against
the control, pooled (hierarchical) draws, and the claims' speed at 10,000 resamples."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musicdistill.evaluation.claims import Claim, all_claims, claim_c2, claim_c3, claim_c4, claim_c5
from musicdistill.evaluation.comparisons import (
    CFG_GAIN_SHARE,
    NON_INFERIORITY_MARGIN,
    Comparison,
    noninferiority_margin,
)
from musicdistill.evaluation.paired import CONTESTED, FAILS, HOLDS, NOT_RUN, UNRESOLVED, resample_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_evidence import B, evidence, evidence_of, per_prompt  # noqa: E402

TEACHER, BASE, QUALITY = "base CFG 3", "base", "quality (beta=0)"
DIVERSITY, MERGE, MERGE2 = "diversity (beta=15)", "merge lambda=0.25", "merge lambda=0.5"
CONTROL, OFFLINE = "control (beta=0, diversity settings)", "offline (beta=0)"


def _find(claim: Claim, *words: str, decides: bool | None = True) -> Comparison:
    return next(
        c
        for c in claim.comparisons
        if all(w in c.label for w in words) and (decides is None or c.decides == decides)
    )


# --------------------------------------------------------------------------------------------
# The margin: min(5 % of the teacher, 25 % of CFG's gain), from the point estimates
# --------------------------------------------------------------------------------------------


def test_the_margin_is_five_percent_of_the_teacher_when_that_is_smaller() -> None:
    ev = evidence()  # teacher 0.70, base 0.50: min(0.035, 0.05)
    margin = noninferiority_margin(ev, ev.quality, TEACHER)
    assert margin.delta == pytest.approx(NON_INFERIORITY_MARGIN * 0.70)
    assert "5 % of the teacher" in margin.note and "FALLBACK" not in margin.note


def test_the_margin_is_a_quarter_of_cfgs_gain_when_that_is_smaller() -> None:
    """Base at 0.60: CFG adds 0.10, so delta = 0.025 < 0.035. A student 0.028 below the teacher is
    non-inferior under 5 % of the teacher but not under the tighter margin."""
    overrides = {QUALITY: {"quality": 0.672}}
    assert claim_c2(evidence(overrides)).verdict == HOLDS
    ev = evidence({**overrides, BASE: {"quality": 0.60}})
    margin = noninferiority_margin(ev, ev.quality, TEACHER)
    assert margin.delta == pytest.approx(CFG_GAIN_SHARE * 0.10)
    assert "25 % of CFG's gain 0.1000" in margin.note
    claim = claim_c2(ev)
    assert claim.verdict != HOLDS and claim.comparisons[0].margin == pytest.approx(-0.025)
    assert "25 % of CFG's gain" in claim.explanation
    # C4 and C5 use the same absolute margin
    assert _find(claim_c4(ev), MERGE, "adherence").margin == pytest.approx(-0.025)
    assert claim_c5(ev).comparisons[0].margin == pytest.approx(-0.025)


def test_the_margin_is_fixed_from_point_estimates_over_the_teacher_and_base_prompts() -> None:
    values, info = per_prompt({BASE: {"quality": 0.64}})
    teacher, base = (np.asarray(values[n]["attribute_adherence"]) for n in (TEACHER, BASE))
    ev = evidence_of(values, info, resample_indices(B, 50, seed=0))
    both = np.isfinite(teacher) & np.isfinite(base)
    expected = min(0.05 * teacher[both].mean(), 0.25 * (teacher[both] - base[both]).mean())
    assert noninferiority_margin(ev, ev.quality, TEACHER).delta == pytest.approx(expected, rel=1e-12)
    other = evidence_of(values, info, resample_indices(B, 50, seed=9))  # not from the resamples
    assert noninferiority_margin(other, other.quality, TEACHER).delta == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"overrides": {BASE: {"quality": 0.75}}}, "is not positive"),  # CFG lowers quality
        ({"drop": (BASE,)}, "not evaluated"),
    ],
)
def test_the_margin_falls_back_to_five_percent_of_the_reference_and_says_so(kwargs: dict, why: str) -> None:
    ev = evidence(kwargs.get("overrides"), drop=kwargs.get("drop", ()))
    c2 = claim_c2(ev).comparisons[0]
    assert c2.margin == pytest.approx(-0.035)  # 5 % of the teacher, the reference
    assert "FALLBACK" in c2.note and why in c2.note
    c5 = claim_c5(ev).comparisons[0]
    assert c5.margin == pytest.approx(-0.05 * 0.66) and "FALLBACK" in c5.note  # 5 % of the offline student


# --------------------------------------------------------------------------------------------
# The conservative gain above the CFG front
# --------------------------------------------------------------------------------------------


def test_a_candidate_above_the_front_beats_it_only_with_more_diversity_than_its_top() -> None:
    """Issue 23: a candidate above the front's best quality and more diverse than its best point beats
    it outright; one less diverse than that point does not."""
    above = claim_c4(evidence({MERGE: {"quality": 0.76, "primary": 0.36}}))  # top: 0.72 / 0.30
    gain = _find(above, "gain", MERGE, "CFG scale")
    assert gain.mean == pytest.approx(0.06) and gain.defined_fraction == 1.0 and gain.verdict == HOLDS
    assert "conservative" in gain.note and above.verdict == HOLDS
    below_top = claim_c4(evidence({MERGE: {"quality": 0.76, "primary": 0.28}}))
    assert _find(below_top, "gain", MERGE, "CFG scale").verdict == FAILS and below_top.verdict == FAILS


# --------------------------------------------------------------------------------------------
# C4's multiplicity correction: a simulated null
# --------------------------------------------------------------------------------------------

#: the true CFG front (γ, quality, diversity); the teacher is γ = 3; delta = min(0.035, 0.05) = 0.035
NULL_FRONT = ((1.0, 0.50, 0.60), (2.0, 0.60, 0.50), (3.0, 0.70, 0.40), (5.0, 0.74, 0.30))
#: four candidates, each null in one component and clearly true in the other: two at the margin's
#: boundary (quality 0.665 = 0.70 - 0.035) well above the front, two exactly on the front mid-segment
NULL_CANDIDATES = {
    "merge lambda=0.25": ("merges/lam_0.25", 0.665, 0.435 + 0.10),
    "merge lambda=0.5": ("merges/lam_0.5", 0.665, 0.435 + 0.12),
    "merge lambda=0.75": ("merges/lam_0.75", 0.72, 0.35),
    "diversity (beta=30)": ("diversity", 0.68, 0.42),
}


def _null_dataset(rng: np.random.Generator, prompts: int) -> tuple[dict, dict]:
    """One synthetic run of the null: front members with little noise (0.005), candidates with 0.03."""
    values: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict[str, Any]] = {}
    for gamma, q, d in NULL_FRONT:
        name = "base" if gamma == 1.0 else f"base CFG {gamma:g}"
        noise = rng.normal(0.0, 0.005, size=(2, prompts))
        values[name] = {"attribute_adherence": q + noise[0], "attribute_diversity": d + noise[1]}
        info[name] = {
            "checkpoint": "/runs/x/base",
            "settings": {"cfg_scale": gamma, "temperature": 1.0},
            "cost": {"rows_per_sample": 1 if gamma == 1.0 else 2},
            "role": "teacher" if gamma == 3.0 else "base",
        }
    for name, (folder, q, d) in NULL_CANDIDATES.items():
        noise = rng.normal(0.0, 0.03, size=(2, prompts))
        values[name] = {"attribute_adherence": q + noise[0], "attribute_diversity": d + noise[1]}
        role = (
            {"role": "merge", "lam": float(folder.split("_")[-1])}
            if "merges" in folder
            else {"role": "diversity"}
        )
        info[name] = {
            "checkpoint": f"/runs/x/{folder}",
            "settings": {},
            "cost": {"rows_per_sample": 1},
            **role,
        }
    return values, info


def _uncorrected(claim: Claim) -> str:
    """C4 as the old rule decided it: the best of the candidates on their percentile intervals."""
    deciding = [c for c in claim.comparisons if c.decides]
    holds = False
    for ni, gain in zip(deciding[::2], deciding[1::2]):
        resolved = gain.defined_fraction is not None and gain.defined_fraction >= 0.95
        holds |= ni.low > ni.margin and resolved and gain.low > 0.0
    return HOLDS if holds else UNRESOLVED


def test_c4_holds_under_the_null_at_most_at_the_nominal_rate_and_the_best_of_four_does_not() -> None:
    """300 null runs (B = 60, R = 400): the corrected C4 holds in at most ~2.5 % of them (here ~1 %);
    the uncorrected best of four, about 1 - 0.975^4 = 9.6 %."""
    rng = np.random.default_rng(23)
    prompts, runs, resamples = 60, 300, 400
    corrected = uncorrected = 0
    for run in range(runs):
        values, info = _null_dataset(rng, prompts)
        ev = evidence_of(values, info, resample_indices(prompts, resamples, seed=run), gamma=3.0)
        claim = claim_c4(ev)
        assert "4 candidates, 8 deciding components" in claim.explanation
        corrected += claim.verdict == HOLDS
        uncorrected += _uncorrected(claim) == HOLDS
    assert corrected / runs <= 0.045  # nominal 2.5 % plus simulation slack (sd ~0.9 % at 300 runs)
    assert uncorrected / runs >= 0.06
    assert uncorrected > 2 * corrected


def test_c4_still_holds_for_a_real_gain_after_the_correction() -> None:
    claim = claim_c4(evidence())
    assert claim.verdict == HOLDS
    deciding = [c for c in claim.comparisons if c.decides]
    assert all(c.corrected_low is not None and c.corrected_low <= c.low + 1e-12 for c in deciding)


# --------------------------------------------------------------------------------------------
# Contested: another validated view contradicts the primary comparison
# --------------------------------------------------------------------------------------------


def test_c3_is_contested_when_the_second_embedder_sees_no_gain_over_the_control() -> None:
    # the second embedder reads primary + 0.05: control 0.47, teacher 0.45; the diversity student 0.42
    ev = evidence({DIVERSITY: {"second": 0.42}}, control=True, views=("diversity_second",))
    claim = claim_c3(ev)
    assert claim.verdict == CONTESTED and claim.holds is None
    assert "CONTESTED (it would be holds)" in claim.explanation
    assert "diversity (second embedder)" in claim.explanation and "-0.0500 [" in claim.explanation
    view = _find(claim, "second embedder", CONTROL, decides=False)
    assert view.verdict == FAILS and view.mean == pytest.approx(-0.05)
    assert claim_c3(evidence(control=True, views=("diversity_second",))).verdict == HOLDS  # views agree


def test_c3_that_fails_is_contested_when_every_failing_primary_comparison_is_contradicted() -> None:
    ev = evidence({DIVERSITY: {"primary": 0.30, "independent": 0.65}}, control=True)
    claim = claim_c3(ev)
    assert claim.verdict == CONTESTED and "it would be fails" in claim.explanation
    assert "hand-made features" in claim.explanation
    # a failure of the reward embedder is no view's to contest
    ev = evidence({DIVERSITY: {"primary": 0.30, "independent": 0.65, "reward": 0.60}}, control=True)
    assert claim_c3(ev).verdict == FAILS


def test_c4_is_contested_when_the_hand_made_features_put_the_holding_candidate_below_the_front() -> None:
    # the hand-made features read primary + 0.1: the CFG front at the merge's quality 0.68 is 0.52
    claim = claim_c4(evidence({MERGE: {"independent": 0.47}}))
    assert claim.verdict == CONTESTED and "it would be holds" in claim.explanation
    assert f"{MERGE}'s gain" in claim.explanation and "hand-made features" in claim.explanation
    assert _find(claim, MERGE, "hand-made", decides=False).verdict == FAILS


def test_c4_holds_uncontested_through_another_candidate_that_no_view_contradicts() -> None:
    overrides = {MERGE: {"independent": 0.47}, MERGE2: {"quality": 0.69, "primary": 0.50}}
    claim = claim_c4(evidence(overrides))
    assert claim.verdict == HOLDS and "CONTESTED" not in claim.explanation


def test_c4_that_fails_is_contested_when_a_view_sees_the_gain_the_primary_misses() -> None:
    overrides = {MERGE: {"primary": 0.35, "independent": 0.60}}  # primary gain -0.07, features +0.08
    assert claim_c4(evidence({MERGE: {"primary": 0.35}})).verdict == FAILS
    claim = claim_c4(evidence(overrides))
    assert claim.verdict == CONTESTED and "it would be fails" in claim.explanation


# --------------------------------------------------------------------------------------------
# Pooled draws and speed
# --------------------------------------------------------------------------------------------


def test_claims_decide_on_a_concatenated_table_with_hierarchical_draws() -> None:
    """Two seeds' tables one after the other, drawn seed-then-prompt: the claims see 2 x 57 pairs."""
    values, info = per_prompt(control=True)
    shifted, _ = per_prompt({BASE: {"quality": 0.48}}, control=True)
    pooled = {s: {m: values[s][m] + shifted[s][m] for m in values[s]} for s in values}
    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 2, size=(300, 2))
    indices = (seeds[:, :, None] * B + rng.integers(0, B, size=(300, 2, B))).reshape(300, 2 * B)
    claims = all_claims(evidence_of(pooled, info, indices))
    assert [c.verdict for c in claims] == [HOLDS] * 5 + [NOT_RUN]  # no conditioned student: C6 not run
    c1 = claims[0].comparisons[0]
    assert c1.n == 2 * (B - 3) and c1.mean == pytest.approx(0.21)
    # the seeds' disagreement (0.20 against 0.22) widens the pooled interval past the prompts' own
    one = all_claims(evidence_of(values, info, resample_indices(B, 300, seed=0)))[0].comparisons[0]
    assert c1.high - c1.low > 1.5 * (one.high - one.low)


def _large_run(systems: int = 20, prompts: int = 128) -> tuple[dict, dict]:
    """A main job's worth of systems: a dense CFG front, a temperature front, students, merges, views."""
    rng = np.random.default_rng(0)
    gammas = (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 4.0, 5.0, 6.0)
    rows: list[tuple[str, dict[str, Any], float, float]] = []
    for g in gammas:
        role = "teacher" if g == 3.0 else "base"
        rows.append(
            (
                f"base CFG {g:g}",
                {"checkpoint": "/x/base", "settings": {"cfg_scale": g}, "role": role},
                0.5 + 0.07 * math.log(g) / math.log(2),
                0.6 - 0.1 * math.log(g),
            )
        )
    for temp in (0.5, 0.7, 0.85):
        rows.append(
            (
                f"base T={temp}",
                {"checkpoint": "/x/base", "settings": {"temperature": temp}, "role": "base"},
                0.5 + 0.05 * (1 - temp),
                0.6 - 0.3 * (1 - temp),
            )
        )
    for name, role, q, d in (
        ("quality", "quality", 0.69, 0.41),
        ("diversity", "diversity", 0.66, 0.50),
        ("control", "control", 0.68, 0.42),
        ("offline", "offline", 0.66, 0.40),
    ):
        rows.append((name, {"checkpoint": f"/x/{name}", "settings": {}, "role": role}, q, d))
    for lam in (0.25, 0.5, 0.75):
        rows.append(
            (
                f"merge {lam}",
                {
                    "checkpoint": f"/x/merges/lam_{lam}",
                    "settings": {},
                    "role": "merge",
                    "lam": lam,
                    "merge_of": ["quality", "diversity"],
                },
                0.69 - 0.03 * lam,
                0.41 + 0.09 * lam,
            )
        )
    values, info = {}, {}
    for name, entry, q, d in rows[:systems]:
        noise = rng.normal(0.0, 0.03, size=(6, prompts))
        values[name] = {
            "attribute_adherence": q + noise[0],
            "text_adherence": 0.3 + 0.2 * q + noise[1],
            "attribute_diversity": d + noise[2],
            "diversity_second": d + 0.05 + noise[3],
            "diversity_independent": d + 0.1 + noise[4],
            "diversity_reward": d + 0.3 + noise[5],
        }
        info[name] = {
            "cost": {"rows_per_sample": 2 if entry["settings"].get("cfg_scale", 1.0) != 1.0 else 1},
            **entry,
        }
    return values, info


def test_all_claims_at_ten_thousand_resamples_of_a_twenty_system_table_are_fast() -> None:
    values, info = _large_run()
    assert len(values) == 20
    indices = resample_indices(128, 10000, seed=0)
    start = time.perf_counter()
    claims = all_claims(evidence_of(values, info, indices, gamma=3.0))
    seconds = time.perf_counter() - start
    assert all(c.verdict != "not run" for c in claims if c.id != "C6")  # C6 needs a conditioned student
    assert "4 candidates" in claims[3].explanation
    assert seconds < 10.0, f"all claims took {seconds:.1f} s (aim: well under 5 s)"
