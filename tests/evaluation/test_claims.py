"""The claims C1-C5 on synthetic per-prompt tables: each one holds, fails and stays unresolved, and is not
run when its systems or measures are missing. The rules are fixed in code (claims.py) before any run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from musicdistill.evaluation.claims import (
    Claim,
    all_claims,
    claim_c1,
    claim_c2,
    claim_c3,
    claim_c4,
    claim_c5,
    claims_from_metrics,
)
from musicdistill.evaluation.comparisons import FALLBACK_DIVERSITY, non_inferiority
from musicdistill.evaluation.paired import FAILS, HOLDS, NOT_RUN, UNRESOLVED
from musicdistill.evaluation.roles import find_roles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_evidence import GAMMA, evidence, per_prompt  # noqa: E402

TEACHER, BASE, QUALITY = "base CFG 3", "base", "quality (beta=0)"
DIVERSITY, MERGE = "diversity (beta=15)", "merge lambda=0.25"
CONTROL = "control (beta=0, diversity settings)"


def _parts(claim: Claim) -> dict[str, str]:
    return {c.label: c.verdict for c in claim.comparisons if c.decides}


def test_roles_from_checkpoints_and_settings() -> None:
    _, info = per_prompt()
    roles = find_roles(info, GAMMA)
    assert (roles.teacher, roles.base, roles.quality, roles.diversity) == (TEACHER, BASE, QUALITY, DIVERSITY)
    assert roles.merges == (MERGE, "merge lambda=0.5") and roles.offline == "offline (beta=0)"
    assert find_roles(info, 5.0).teacher == "base CFG 5"


def test_c4_reads_the_diversity_students_merges_with_either_beta_zero_student() -> None:
    _, info = per_prompt(control=True)
    merge = dict(info[MERGE])
    info["merge control-diversity lambda=0.5"] = {**merge, "lam": 0.5, "merge_of": ["control", "diversity"]}
    info["merge quality-control lambda=0.5"] = {**merge, "lam": 0.5, "merge_of": ["quality", "control"]}
    info["merge diversity-diversity lambda=0.5"] = {
        **merge,
        "lam": 0.5,
        "merge_of": ["diversity", "diversity"],
    }
    merges = find_roles(info, GAMMA).merges
    assert "merge control-diversity lambda=0.5" in merges and MERGE in merges
    assert "merge quality-control lambda=0.5" not in merges
    assert "merge diversity-diversity lambda=0.5" not in merges


def test_every_claim_holds_on_the_default_table() -> None:
    claims = all_claims(evidence())
    assert [c.verdict for c in claims] == [HOLDS] * 5 + [NOT_RUN]  # C6 needs a conditioned student
    assert [c.verdict for c in all_claims(evidence(conditioned=True))] == [HOLDS] * 6
    c1 = claims[0]
    assert c1.measures == {"quality": "attribute_adherence", "diversity": "attribute_diversity"}
    assert "primary independent diversity measure: attribute diversity" in c1.explanation
    quality = next(c for c in c1.comparisons if c.metric == "attribute_adherence")
    assert quality.mean == pytest.approx(0.2) and quality.n == 57 and quality.low > 0.19
    beside = [c for c in c1.comparisons if not c.decides]
    assert {c.metric for c in beside} == {"diversity_reward", "diversity_independent"}


# --------------------------------------------------------------------------------------------
# C1: CFG raises quality and lowers diversity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, HOLDS),
        ({TEACHER: {"quality": 0.45}}, FAILS),  # CFG lowers quality
        ({TEACHER: {"primary": 0.65}}, FAILS),  # CFG raises diversity
        ({TEACHER: {"quality": 0.50}}, UNRESOLVED),  # no quality difference: the interval straddles 0
        ({TEACHER: {"primary": 0.60}}, UNRESOLVED),
    ],
)
def test_c1(overrides: dict, expected: str) -> None:
    assert claim_c1(evidence(overrides)).verdict == expected


def test_c1_is_decided_by_the_primary_measure_not_the_reward_embedder() -> None:
    claim = claim_c1(evidence({TEACHER: {"reward": 0.95}}))  # the reward embedder says CFG raises diversity
    assert claim.verdict == HOLDS
    reward = next(c for c in claim.comparisons if c.metric == "diversity_reward")
    assert reward.verdict == FAILS and not reward.decides and "beside" in reward.text()


# --------------------------------------------------------------------------------------------
# C2: the β = 0 student is non-inferior to the teacher at half the cost
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quality", "expected"),
    [(0.69, HOLDS), (0.62, FAILS), (0.665, UNRESOLVED)],  # margin: min(5 % of 0.70, 25 % of 0.20)
)
def test_c2(quality: float, expected: str) -> None:
    claim = claim_c2(evidence({QUALITY: {"quality": quality}}))
    assert claim.verdict == expected
    ni = claim.comparisons[0]
    assert ni.margin == pytest.approx(-0.035) and ni.mean == pytest.approx(quality - 0.70)
    assert "margin -0.0350: 5 % of the teacher base CFG 3's mean 0.7000" in ni.note


def test_c2_fails_when_the_student_costs_as_much_as_the_teacher() -> None:
    ev = evidence()
    ev.systems[QUALITY]["cost"]["rows_per_sample"] = 2
    claim = claim_c2(ev)
    assert claim.verdict == FAILS
    cost = next(c for c in claim.comparisons if c.kind == "cost")
    assert cost.verdict == FAILS and cost.mean == 1.0


# --------------------------------------------------------------------------------------------
# C3: the β > 0 student is more diverse than the β = 0 student and the teacher, under both measures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, HOLDS),
        ({DIVERSITY: {"primary": 0.30}}, FAILS),
        ({DIVERSITY: {"reward": 0.60}}, FAILS),  # the reward embedder alone disagrees: it must hold too
        ({DIVERSITY: {"primary": 0.42}}, UNRESOLVED),  # equal to the control's
        ({DIVERSITY: {"primary": 0.41}, CONTROL: {"primary": 0.41}}, UNRESOLVED),
    ],
)
def test_c3_against_the_control(overrides: dict, expected: str) -> None:
    claim = claim_c3(evidence(overrides, control=True))
    assert claim.verdict == expected
    deciding = _parts(claim)
    assert len(deciding) == 4  # two measures x (control, teacher)
    assert all(CONTROL in label or TEACHER in label for label in deciding)
    assert not any(QUALITY in label for label in deciding)
    assert "against the control" in claim.explanation


def test_c3_does_not_credit_beta_for_what_the_settings_did() -> None:
    """The quality student is far less diverse than the diversity student, the control is not: against
    the control C3 is unresolved, while the old comparison with the quality student would hold."""
    overrides = {CONTROL: {"primary": 0.55, "reward": 0.85}}
    assert claim_c3(evidence(overrides, control=True)).verdict == UNRESOLVED
    assert claim_c3(evidence(overrides)).verdict == HOLDS  # no control: the quality student stands in


def test_c3_without_a_control_falls_back_to_the_quality_student_and_says_so() -> None:
    claim = claim_c3(evidence())
    assert claim.verdict == HOLDS
    assert "NO control was evaluated" in claim.explanation and QUALITY in claim.explanation
    assert any(QUALITY in label for label in _parts(claim))


def test_c3_is_not_run_without_the_reward_embedder() -> None:
    claim = claim_c3(evidence(drop=("diversity_reward",)))
    assert claim.verdict == NOT_RUN and "diversity_reward" in claim.explanation


# --------------------------------------------------------------------------------------------
# C4: some merge is non-inferior to the teacher and gains diversity over the CFG front
# --------------------------------------------------------------------------------------------


def test_c4_holds_through_one_candidate_and_lists_every_candidate() -> None:
    claim = claim_c4(evidence())
    assert claim.verdict == HOLDS
    assert "3 candidates, 6 deciding components" in claim.explanation and "c = " in claim.explanation
    for name in (MERGE, "merge lambda=0.5", DIVERSITY):
        assert f"{name}:" in claim.explanation
    assert f"{MERGE}: holds" in claim.explanation and f"{DIVERSITY}: fails" in claim.explanation
    gain = next(c for c in claim.comparisons if c.kind == "gain" and MERGE in c.label and "CFG" in c.label)
    assert gain.mean == pytest.approx(0.05) and gain.verdict == HOLDS and gain.defined_fraction == 1.0
    assert gain.corrected_low is not None and gain.corrected_low < gain.low  # corrected: wider
    assert "simultaneous lower bound" in gain.text()
    beside = [c for c in claim.comparisons if not c.decides]
    assert beside and {c.metric for c in beside if "temperature" not in c.label} == {"diversity_independent"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({MERGE: {"quality": 0.60}}, FAILS),  # no candidate keeps the teacher's quality
        ({MERGE: {"primary": 0.35}}, FAILS),  # non-inferior, but below the CFG front
        ({MERGE: {"primary": 0.42}}, UNRESOLVED),  # exactly on the CFG front: the gain straddles 0
        ({MERGE: {"quality": 0.75}}, HOLDS),  # above the CFG front's range: more diverse than its top
        ({MERGE: {"quality": 0.75, "primary": 0.25}}, FAILS),  # above it, less diverse than its top
    ],
)
def test_c4(overrides: dict, expected: str) -> None:
    claim = claim_c4(evidence(overrides))
    assert claim.verdict == expected


def test_c4_undefined_gain_is_reported_as_such() -> None:
    claim = claim_c4(evidence({MERGE: {"quality": 0.45}}))  # below the CFG front's lowest quality
    gain = next(c for c in claim.comparisons if c.kind == "gain" and MERGE in c.label and "CFG" in c.label)
    assert gain.verdict == UNRESOLVED and "not defined" in gain.text() and "below" in gain.note


def test_c4_is_not_run_without_a_cfg_front() -> None:
    claim = claim_c4(evidence(drop=("base", "base CFG 1.5", "base CFG 5")))
    assert claim.verdict == NOT_RUN and "two CFG scales" in claim.explanation


# --------------------------------------------------------------------------------------------
# C5: on-policy distillation is non-inferior to offline distillation in the golden metric
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offline", "expected"),
    [(0.66, HOLDS), (0.80, FAILS), (0.725, UNRESOLVED)],  # on-policy 0.69; the margin is C2's, 0.035
)
def test_c5(offline: float, expected: str) -> None:
    claim = claim_c5(evidence({"offline (beta=0)": {"quality": offline}}))
    assert claim.verdict == expected
    assert claim.comparisons[0].metric == "attribute_adherence"
    assert claim.comparisons[0].margin == pytest.approx(-0.035)  # the same delta as C2, not 5 % of offline


def test_c5_is_not_run_without_an_offline_student_or_an_oracle() -> None:
    assert "offline" in claim_c5(evidence(drop=("offline (beta=0)",))).explanation
    assert claim_c5(evidence(drop=("offline (beta=0)",))).verdict == NOT_RUN
    no_oracle = claim_c5(evidence(drop=("attribute_adherence",)))
    assert no_oracle.verdict == NOT_RUN and "oracle" in no_oracle.explanation


# --------------------------------------------------------------------------------------------
# Measures, missing systems, storage
# --------------------------------------------------------------------------------------------


def test_the_primary_measure_falls_back_to_the_hand_features_and_says_so() -> None:
    ev = evidence(primary=FALLBACK_DIVERSITY)
    assert ev.primary == FALLBACK_DIVERSITY and "FALLBACK" in ev.primary_note
    claims = all_claims(ev)
    assert all("FALLBACK" in c.explanation for c in claims[:4])
    assert claims[0].verdict == HOLDS


def test_the_second_embedder_is_primary_without_attribute_diversity() -> None:
    ev = evidence(primary="diversity_second")
    assert ev.primary == "diversity_second" and "second embedder" in ev.primary_note


def test_quality_falls_back_to_text_adherence_without_an_oracle() -> None:
    ev = evidence(drop=("attribute_adherence",))
    assert ev.quality == "text_adherence"
    assert claim_c1(ev).verdict == HOLDS  # text adherence rises with quality in the synthetic table


def test_claims_are_not_run_without_their_systems() -> None:
    claims = all_claims(evidence(drop=("base CFG 3",)))  # distill.gamma = 3 was not evaluated
    for claim in claims[:4]:
        assert claim.verdict == NOT_RUN and "teacher" in claim.explanation


def test_claims_round_trip_through_metrics_json() -> None:
    claims = all_claims(evidence({TEACHER: {"quality": 0.50}}))
    restored = claims_from_metrics({"claims": [c.as_dict() for c in claims]})
    assert restored == claims
    assert [c.verdict for c in restored][:1] == [UNRESOLVED]


def test_older_metrics_json_gives_claims_not_run() -> None:
    old = claims_from_metrics({"systems": {}})
    assert [c.verdict for c in old] == [NOT_RUN] * 6 and "predates" in old[0].explanation
    assert all(c.verdict == NOT_RUN for c in claims_from_metrics(None))


def test_non_inferiority_to_a_reference_without_positive_quality_is_not_run() -> None:
    ev = evidence({TEACHER: {"quality": -0.1}})
    comparison = non_inferiority(ev, QUALITY, TEACHER, ev.quality)
    assert (
        comparison.verdict == NOT_RUN and "not positive" in comparison.note and "FALLBACK" in comparison.note
    )
    assert comparison.kind == "difference" and comparison.side == "above" and comparison.mean > 0


# --------------------------------------------------------------------------------------------
# C6: one conditioned student covers the merge front
# --------------------------------------------------------------------------------------------


def _c6(overrides: dict[str, dict[str, float]] | None = None, **kwargs) -> Claim:
    from musicdistill.evaluation.claims import claim_c6

    return claim_c6(evidence(overrides, conditioned=True, **kwargs))


def test_c6_holds_when_every_point_is_as_diverse_as_the_merges_and_w0_keeps_quality() -> None:
    claim = _c6()
    assert claim.verdict == HOLDS, claim.explanation
    deciding = [c for c in claim.comparisons if c.decides]
    assert len(deciding) == 4  # w = 0's non-inferiority, then three gains over the merge front
    assert deciding[0].label.startswith("attribute adherence: conditioned w=0 - base CFG 3")
    gains = deciding[1:]
    assert all("merges of the students front: conditioned" in c.label for c in gains)
    assert all(c.margin == pytest.approx(-0.05, abs=1e-3) for c in gains)
    assert gains[0].mean == pytest.approx(0.01, abs=2e-3) and gains[0].corrected_low < gains[0].low
    beside = [c for c in claim.comparisons if not c.decides]
    assert any("CFG scale front: conditioned w=0.5" in c.label for c in beside)


def test_c6_fails_when_a_point_is_far_less_diverse_than_the_merges() -> None:
    claim = _c6({"conditioned w=0.5": {"primary": 0.40}})  # 0.085 below the merge front at its quality
    assert claim.verdict == FAILS, claim.explanation


def test_c6_is_unresolved_when_a_gain_sits_on_its_margin() -> None:
    claim = _c6({"conditioned w=0.5": {"primary": 0.435}})  # the merge front's 0.485 minus exactly 0.05
    assert claim.verdict == UNRESOLVED, claim.explanation


def test_c6_fails_when_the_w0_point_loses_quality() -> None:
    claim = _c6({"conditioned w=0": {"quality": 0.62}})  # 0.08 below the teacher, margin 0.035
    ni = next(c for c in claim.comparisons if c.decides)
    assert ni.verdict == FAILS and claim.verdict == FAILS


def test_a_point_below_the_merge_fronts_lowest_quality_does_not_decide_c6() -> None:
    claim = _c6({"conditioned w=1": {"quality": 0.50}})
    assert claim.verdict == HOLDS, claim.explanation
    w1 = [
        c
        for c in claim.comparisons
        if c.label.endswith("students front: conditioned w=1") and c.metric == "attribute_diversity"
    ]
    assert len(w1) == 1 and not w1[0].decides and "below its lowest quality" in w1[0].note


def test_c6_is_not_run_without_a_conditioned_student_or_its_w0_point() -> None:
    from musicdistill.evaluation.claims import claim_c6

    assert claim_c6(evidence()).verdict == NOT_RUN
    claim = _c6(drop=("conditioned w=0",))
    assert claim.verdict == NOT_RUN and "w = 0" in claim.explanation
