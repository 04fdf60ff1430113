"""Paired statistics: the joint bootstrap (any draw of prompt indices), pairwise-complete NaN handling,
the verdicts, each bound's Monte-Carlo error and simultaneous lower bounds."""

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
    bound_mc_error,
    mean_estimate,
    paired_difference,
    percentile_interval,
    resample_indices,
    resample_weights,
    resampled_column_means,
    resampled_means,
    simultaneous_lower_bounds,
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


def test_any_draw_of_prompt_indices_works() -> None:
    """Hierarchical draws index a concatenation: rows of any length N, prompts repeated or absent."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=12)
    mask = np.ones(12, dtype=bool)
    mask[3] = False
    indices = rng.integers(0, 12, size=(40, 7))  # [R, N] with N != B
    indices[:, :3] = 3  # a masked prompt drawn three times
    got = resampled_means(values, mask, indices)
    for r in range(40):
        picked = [values[i] for i in indices[r] if mask[i]]
        assert got[r] == pytest.approx(np.mean(picked))
    weights = resample_weights(indices, 12)
    assert weights.shape == (40, 12) and np.all(weights.sum(axis=1) == 7)
    both = resampled_column_means(np.stack([values, 2 * values], axis=1), mask, indices)
    assert np.allclose(both[:, 1], 2 * got)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        resample_weights(indices, 5)


def test_the_mc_error_of_a_bound_matches_the_normal_theory() -> None:
    """For normal replicates the 2.5th percentile's MC standard error is sqrt(q(1-q)/R) / phi(z_q); one
    estimate rests on ~30 order-statistic spacings (about +-20 %), so average over draws."""
    theory = math.sqrt(0.025 * 0.975 / 10000) / (math.exp(-(1.96**2) / 2) / math.sqrt(2 * math.pi))
    draws = [np.sort(np.random.default_rng(s).normal(size=10000)) for s in range(20)]
    for q in (0.025, 0.975):
        assert np.mean([bound_mc_error(x, q) for x in draws]) == pytest.approx(theory, rel=0.1)
    replicates = draws[0]
    assert math.isnan(bound_mc_error(replicates[:1], 0.025))
    estimate = percentile_interval(0.0, replicates, 10)
    assert estimate.mc_error == pytest.approx(
        max(bound_mc_error(replicates, 0.025), bound_mc_error(replicates, 0.975))
    )


def test_the_mc_error_shrinks_as_one_over_root_r_and_predicts_the_bounds_spread() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.5, 0.1, size=60), rng.normal(0.45, 0.1, size=60)
    small = paired_difference(a, b, resample_indices(60, 1000, seed=1))
    large = paired_difference(a, b, resample_indices(60, 16000, seed=1))
    assert 2.5 < small.mc_error / large.mc_error < 6.0  # sqrt(16) = 4
    # the spread of the lower bound over 100 bootstrap seeds is what the MC error says
    lows = [paired_difference(a, b, resample_indices(60, 1000, seed=s)).low for s in range(100)]
    mine = np.mean([paired_difference(a, b, resample_indices(60, 1000, seed=s)).mc_error for s in range(20)])
    assert 0.6 < np.std(lows) / mine < 1.6


def test_one_simultaneous_component_is_the_percentile_bound() -> None:
    rng = np.random.default_rng(1)
    reps = rng.normal(0.2, 0.05, size=(2000, 1)) ** 3
    point = float(np.median(reps))
    sim = simultaneous_lower_bounds(np.array([point]), reps)
    assert sim.lows[0] == pytest.approx(np.quantile(reps[:, 0], 0.025), rel=1e-9)
    assert sim.critical > 0


def test_simultaneous_bounds_widen_with_more_components_and_nan_is_conservative() -> None:
    rng = np.random.default_rng(3)
    reps = rng.normal(0.0, 1.0, size=(4000, 8))
    one = simultaneous_lower_bounds(np.zeros(1), reps[:, :1]).critical
    eight = simultaneous_lower_bounds(np.zeros(8), reps).critical
    assert one == pytest.approx(1.96, abs=0.1) and eight == pytest.approx(2.73, abs=0.12)  # Sidak
    holed = reps.copy()
    holed[:200, 3] = np.nan  # 5 % undefined: the max is +inf there, beyond the 97.5th percentile
    assert math.isinf(simultaneous_lower_bounds(np.zeros(8), holed).critical)
    holed[:200, 3], holed[:50, 3] = 0.0, np.nan  # 1.25 %: finite but larger
    assert eight < simultaneous_lower_bounds(np.zeros(8), holed).critical < math.inf
    undefined = simultaneous_lower_bounds(np.array([0.0, math.nan]), reps[:, :2])
    assert math.isnan(undefined.lows[1]) and undefined.critical == pytest.approx(one, rel=1e-9)
