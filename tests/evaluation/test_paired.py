"""Paired statistics: the joint bootstrap, pairwise-complete NaN handling, the three verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from musicdistill.evaluation.paired import (
    FAILS,
    HOLDS,
    NOT_RUN,
    UNRESOLVED,
    PromptTable,
    all_of,
    any_of,
    mean_estimate,
    paired_difference,
    resample_indices,
    resampled_means,
    verdict,
)


def test_resampled_means_match_an_explicit_loop_and_skip_masked_prompts() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=12)
    mask = np.ones(12, dtype=bool)
    mask[[2, 5]] = False
    indices = resample_indices(12, 50, seed=3)
    got = resampled_means(values, mask, indices)
    for r in range(50):
        picked = [values[i] for i in indices[r] if mask[i]]
        assert got[r] == pytest.approx(np.mean(picked))
    only_masked = np.array([[2, 5, 2] + [2] * 9])
    assert math.isnan(resampled_means(values, mask, only_masked)[0])


def test_pairing_removes_the_shared_prompt_effect() -> None:
    """Two systems that differ by 0.05 on prompts of very different difficulty: the paired interval is
    narrow and clears 0, while the marginal intervals overlap widely."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0.0, 0.3, size=40)
    a = 0.55 + difficulty + rng.normal(0.0, 0.01, size=40)
    b = 0.50 + difficulty + rng.normal(0.0, 0.01, size=40)
    indices = resample_indices(40, 1000, seed=0)
    diff = paired_difference(a, b, indices)
    ea, eb = mean_estimate(a, indices), mean_estimate(b, indices)
    assert diff.mean == pytest.approx(a.mean() - b.mean())
    assert diff.low > 0.04 and diff.high < 0.06
    assert ea.low < eb.high  # the marginal intervals overlap
    assert verdict(diff.low, diff.high, 0.0, "above") == HOLDS


def test_paired_difference_is_pairwise_complete() -> None:
    a = np.array([0.1, np.nan, 0.3, 0.4, 0.5, 0.6])
    b = np.array([0.0, 0.2, np.nan, 0.3, 0.4, 0.5])
    est = paired_difference(a, b, resample_indices(6, 200, seed=0))
    assert est.n == 4 and est.mean == pytest.approx(0.1)
    assert est.low == pytest.approx(0.1) and est.high == pytest.approx(0.1)  # every pair differs by 0.1
    assert mean_estimate(a, resample_indices(6, 10, seed=0)).n == 5


def test_joint_draws_are_seeded_and_shared() -> None:
    assert np.array_equal(resample_indices(9, 20, seed=4), resample_indices(9, 20, seed=4))
    assert not np.array_equal(resample_indices(9, 20, seed=4), resample_indices(9, 20, seed=5))
    with pytest.raises(ValueError, match="evaluate.bootstrap"):
        resample_indices(9, 0, seed=0)


@pytest.mark.parametrize(
    ("low", "high", "margin", "side", "expected"),
    [
        (0.01, 0.05, 0.0, "above", HOLDS),
        (-0.05, -0.01, 0.0, "above", FAILS),
        (-0.01, 0.05, 0.0, "above", UNRESOLVED),
        (0.0, 0.05, 0.0, "above", UNRESOLVED),  # touching the margin does not clear it
        (-0.05, -0.01, 0.0, "below", HOLDS),
        (0.01, 0.05, 0.0, "below", FAILS),
        (-0.03, -0.01, -0.035, "above", HOLDS),  # non-inferiority within a 5 % margin
        (-0.06, -0.04, -0.035, "above", FAILS),
        (-0.04, -0.01, -0.035, "above", UNRESOLVED),
        (math.nan, 0.1, 0.0, "above", UNRESOLVED),
    ],
)
def test_three_verdicts(low: float, high: float, margin: float, side: str, expected: str) -> None:
    assert verdict(low, high, margin, side) == expected


def test_verdict_rejects_an_unknown_side() -> None:
    with pytest.raises(ValueError, match="side"):
        verdict(0.0, 1.0, 0.0, "greater")


def test_combining_verdicts() -> None:
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([HOLDS, UNRESOLVED]) == UNRESOLVED
    assert all_of([UNRESOLVED, FAILS]) == FAILS
    assert all_of([HOLDS, NOT_RUN]) == NOT_RUN
    assert any_of([FAILS, UNRESOLVED]) == UNRESOLVED
    assert any_of([FAILS, HOLDS]) == HOLDS
    assert any_of([FAILS, FAILS, NOT_RUN]) == FAILS
    assert any_of([NOT_RUN]) == NOT_RUN


def test_prompt_table_checks_lengths_and_finiteness() -> None:
    table = PromptTable.from_lists({"a": {"q": [0.1, 0.2]}, "b": {"q": [math.nan, math.nan], "d": [1, 2]}})
    assert table.num_prompts == 2 and table.measures() == ["q", "d"]
    assert table.has("a", "q") and not table.has("b", "q") and not table.has("a", "d")
    with pytest.raises(KeyError, match="'d' for system 'a'"):
        table.column("a", "d")
    with pytest.raises(ValueError, match="one value per prompt"):
        PromptTable.from_lists({"a": {"q": [0.1, 0.2]}, "b": {"q": [0.1]}})
