"""Fronts and the gain at matched quality: interpolation, the front's best where it bends back, the
front's highest-quality point above its range (conservative), undefined below it, an interval that
rebuilds the front on every resample."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from musicdistill.evaluation.fronts import (
    MIN_DEFINED_FRACTION,
    Front,
    find_fronts,
    front_diversity_at,
    gain_table,
    matched_quality_gain,
)
from musicdistill.evaluation.paired import (
    FAILS,
    HOLDS,
    UNRESOLVED,
    PromptTable,
    mean_estimate,
    resample_indices,
)
from musicdistill.evaluation.roles import find_roles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_evidence import GAMMA, SYSTEMS, B, evidence, per_prompt  # noqa: E402


def _at(qs: list[float], ds: list[float], q: float) -> float:
    return float(front_diversity_at(np.array([qs]), np.array([ds]), np.array([q]))[0])


def test_interpolation_along_the_front() -> None:
    qs, ds = [0.5, 0.6, 0.7], [0.6, 0.5, 0.3]
    assert _at(qs, ds, 0.55) == pytest.approx(0.55)
    assert _at(qs, ds, 0.65) == pytest.approx(0.4)
    assert _at(qs, ds, 0.6) == pytest.approx(0.5)  # a vertex
    assert _at(qs, ds, 0.5) == pytest.approx(0.6) and _at(qs, ds, 0.7) == pytest.approx(0.3)


def test_below_the_front_the_value_is_not_defined_and_above_it_is_the_top_point() -> None:
    qs, ds = [0.5, 0.6, 0.7], [0.6, 0.5, 0.3]
    assert math.isnan(_at(qs, ds, 0.49))
    assert _at(qs, ds, 0.71) == pytest.approx(0.3) and _at(qs, ds, 0.95) == pytest.approx(0.3)
    # the highest-quality point, not the last in setting order, nor the most diverse
    assert _at([0.5, 0.75, 0.7], [0.6, 0.35, 0.2], 0.8) == pytest.approx(0.35)
    assert _at([0.5, 0.7, 0.7], [0.6, 0.2, 0.25], 0.8) == pytest.approx(0.25)  # tied top: its best
    assert math.isnan(_at([0.5], [0.6], 0.45)) and _at([0.5], [0.6], 0.5) == pytest.approx(0.6)
    assert _at([0.5], [0.6], 0.55) == pytest.approx(0.6)
    assert math.isnan(_at([0.5, math.nan], [0.6, 0.3], 0.8))  # a broken front says nothing


def test_a_front_that_bends_back_gives_its_best_diversity() -> None:
    # γ order: quality rises to 0.7 then falls back to 0.6 with less diversity
    qs, ds = [0.5, 0.7, 0.6], [0.6, 0.4, 0.2]
    assert _at(qs, ds, 0.65) == pytest.approx(0.45)  # first segment 0.45, second 0.3: the best
    assert _at([0.5, 0.6, 0.6, 0.7], [0.6, 0.5, 0.55, 0.3], 0.6) == pytest.approx(0.55)  # equal qualities


def test_the_fronts_of_the_main_job() -> None:
    _, info = per_prompt()
    fronts = find_fronts(info, find_roles(info, GAMMA))
    assert fronts["cfg"].members == ("base", "base CFG 1.5", "base CFG 3", "base CFG 5")
    assert fronts["cfg"].values == (1.0, 1.5, 3.0, 5.0) and fronts["cfg"].rows == (1, 2, 2, 2)
    assert fronts["cfg"].cost_text() == "1-2 model rows per frame"
    assert fronts["temperature"].members == ("base T=0.7", "base")
    assert fronts["temperature"].cost_text() == "1 model row per frame"
    assert fronts["merge"].members == (
        "quality (beta=0)",
        "merge lambda=0.25",
        "merge lambda=0.5",
        "diversity (beta=15)",
    )
    assert fronts["merge"].values == (0.0, 0.25, 0.5, 1.0)


def test_the_gain_of_a_system_off_the_front() -> None:
    ev = evidence()
    gain = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert gain.front_diversity == pytest.approx(0.42, abs=1e-9)
    assert gain.estimate.mean == pytest.approx(0.05, abs=1e-9)
    assert 0.0 < gain.estimate.low < 0.05 < gain.estimate.high
    assert gain.defined_fraction == 1.0 and gain.verdict() == HOLDS
    assert gain.estimate.n == B - 3  # prompts without an attribute are left out


def test_a_gain_above_the_front_is_taken_against_its_highest_quality_point() -> None:
    """Above the CFG front's best quality (0.72 at γ = 5, diversity 0.30) the gain is d_S - 0.30: a
    conservative gain that holds when S is more diverse than that point."""
    ev = evidence({"merge lambda=0.25": {"quality": 0.80}})
    gain = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert gain.defined and gain.above and gain.above_fraction == 1.0 and gain.defined_fraction == 1.0
    assert gain.front_diversity == pytest.approx(0.30) and gain.estimate.mean == pytest.approx(0.17)
    assert gain.verdict() == HOLDS and gain.why_unresolved() is None
    assert "conservative" in gain.conservative_note()
    ev = evidence({"merge lambda=0.25": {"quality": 0.80, "primary": 0.25}})
    less = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert less.estimate.mean == pytest.approx(-0.05) and less.verdict() == FAILS


def test_a_gain_below_the_front_is_not_defined_and_unresolved() -> None:
    ev = evidence({"merge lambda=0.25": {"quality": 0.45}})  # below the CFG front's lowest, 0.50
    gain = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert not gain.defined and gain.defined_fraction == 0.0 and not gain.above
    assert gain.verdict() == UNRESOLVED and "below its lowest quality" in gain.why_unresolved()


def test_a_gain_at_the_front_top_edge_stays_defined_in_every_resample() -> None:
    """Issue 23: a merge at the top of the front was undefined in 9-10 % of the resamples; now each of
    them takes the conservative gain instead."""
    ev = evidence({"merge lambda=0.25": {"quality": 0.7199}}, noise=0.05)
    gain = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert gain.defined_fraction == 1.0 and 0.2 < gain.above_fraction < 0.8 and gain.resolved


def test_a_gain_near_the_front_low_edge_is_unresolved_when_too_few_resamples_define_it() -> None:
    ev = evidence({"merge lambda=0.25": {"quality": 0.5001}}, noise=0.05)
    gain = matched_quality_gain(
        ev.table, "merge lambda=0.25", ev.fronts["cfg"], ev.quality, ev.primary, ev.indices
    )
    assert gain.defined and gain.defined_fraction < MIN_DEFINED_FRACTION
    assert gain.verdict() == UNRESOLVED and "lowest quality" in gain.why_unresolved()


def test_each_resample_rebuilds_the_front_from_the_same_prompts() -> None:
    """The front is rebuilt on each resample's prompts: the prompt effect shared by every system cancels
    (the gain's interval is far narrower than the system's own marginal one), and the front's own noise
    widens the gain's interval while the system's stays the same."""
    ev = evidence()
    front = ev.fronts["cfg"]
    gain = matched_quality_gain(ev.table, "merge lambda=0.25", front, ev.quality, ev.primary, ev.indices)
    own = mean_estimate(ev.table.column("merge lambda=0.25", ev.primary), ev.indices)
    assert gain.estimate.high - gain.estimate.low < 0.5 * (own.high - own.low)
    noisy = evidence(noise_of={name: 0.08 for name in front.members})
    wide = matched_quality_gain(
        noisy.table, "merge lambda=0.25", front, ev.quality, ev.primary, noisy.indices
    )
    assert wide.estimate.mean == pytest.approx(gain.estimate.mean, abs=1e-9)
    assert wide.estimate.high - wide.estimate.low > 2 * (gain.estimate.high - gain.estimate.low)


def test_gain_table_covers_every_system_off_each_front() -> None:
    ev = evidence()
    gains = gain_table(ev.table, ev.fronts, ev.quality, [ev.primary, "diversity_reward"], ev.indices)
    cfg = {g.system for g in gains if g.front == "cfg" and g.diversity == ev.primary}
    assert cfg == set(SYSTEMS) - {"base", "base CFG 1.5", "base CFG 3", "base CFG 5"}
    temperature = {g.system for g in gains if g.front == "temperature"}
    assert "base CFG 3" in temperature and "base" not in temperature
    assert all(set(g.as_dict()) >= {"mean", "low", "high", "defined_fraction", "verdict"} for g in gains)


def test_a_one_point_front_gives_no_gain() -> None:
    table = PromptTable.from_lists(
        {"a": {"q": [0.5, 0.6], "d": [0.1, 0.2]}, "s": {"q": [0.5, 0.6], "d": [0.3, 0.3]}}
    )
    front = Front("cfg", "base, CFG scale", "γ", ("a",), (1.0,), (1,))
    assert gain_table(table, {"cfg": front}, "q", ["d"], resample_indices(2, 10, 0)) == []
