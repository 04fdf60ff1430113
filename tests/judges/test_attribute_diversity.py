"""Attribute diversity (disagreement over the attributes a prompt leaves open) and the reference groups
of real clips that every diversity measure is validated on."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from musicdistill.data.captions import ATTRIBUTE_NAMES
from musicdistill.judges.attribute_diversity import (
    attribute_diversity,
    attribute_diversity_per_prompt,
    pairwise_disagreement,
    unstated_attributes,
)
from musicdistill.judges.reference_groups import open_prompt, reference_groups, varied_attributes

READABLE = ("instrument", "tempo", "key", "mode", "register", "drums")


@pytest.mark.parametrize(
    "values", [["a", "a", "a", "a"], ["a", "b", "c", "d"], ["a", "a", "b", "b"], ["a", "b", "b", "b", "c"]]
)
def test_pairwise_disagreement_counts_differing_pairs_and_is_the_unbiased_gini_simpson(values) -> None:
    pairs = list(combinations(values, 2))
    by_pairs = sum(x != y for x, y in pairs) / len(pairs)
    g = len(values)
    counts = [values.count(v) for v in set(values)]
    gini_simpson = 1 - sum(n * (n - 1) for n in counts) / (g * (g - 1))
    assert pairwise_disagreement(values) == pytest.approx(by_pairs) == pytest.approx(gini_simpson)


def test_pairwise_disagreement_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_disagreement(["a"])


def test_only_unstated_attributes_count() -> None:
    prompt = {"instrument": "flute", "tempo": "slow", "key": "C", "stated": ["instrument", "tempo"]}
    assert unstated_attributes(prompt, READABLE) == ["key", "mode", "register", "drums"]
    same_open = [
        {"instrument": i, "tempo": "slow", "key": "C", "mode": "major", "register": "low", "drums": "none"}
        for i in ("flute", "organ", "bell")
    ]
    # the samples break the stated instrument three ways but agree on every open attribute: 0
    assert attribute_diversity(same_open, prompt, READABLE) == 0.0
    differ = [dict(r, key=k) for r, k in zip(same_open, ("C", "D", "D"))]
    # key differs in 2 of 3 pairs; mode, register, drums agree: (2/3 + 0 + 0 + 0) / 4
    assert attribute_diversity(differ, prompt, READABLE) == pytest.approx((2 / 3) / 4)


def test_undefined_when_nothing_is_left_open() -> None:
    readings = [{"instrument": "flute"}, {"instrument": "organ"}]
    every = {name: "x" for name in ATTRIBUTE_NAMES} | {"stated": list(ATTRIBUTE_NAMES)}
    assert math.isnan(attribute_diversity(readings, every, READABLE))
    assert math.isnan(attribute_diversity(readings, None, READABLE))
    # without a 'stated' list a prompt states every attribute it has (as attribute adherence reads it)
    assert math.isnan(
        attribute_diversity(readings, {"instrument": "flute", "tempo": "slow"}, ("instrument", "tempo"))
    )
    # attributes the oracle does not read do not count
    assert math.isnan(attribute_diversity(readings, {"bpm": 90.0, "stated": []}, ()))


def test_per_prompt_splits_prompt_major_readings() -> None:
    prompts = [{"stated": ["instrument"]}, {"stated": list(ATTRIBUTE_NAMES)}]
    readings = [{"tempo": t} for t in ("slow", "fast", "slow", "slow")]
    out = attribute_diversity_per_prompt(readings, prompts, 2, ("instrument", "tempo"))
    assert out[0] == 1.0 and math.isnan(out[1])
    with pytest.raises(ValueError, match="G >= 2"):
        attribute_diversity_per_prompt(readings, prompts, 3, ("tempo",))


def test_reference_groups_share_every_attribute_or_only_the_stated_ones() -> None:
    groups = reference_groups(12, 3, seed=4, sample_rate=8000, duration=0.5)
    assert groups.audio["same"].shape == groups.audio["vary"].shape == (12, 3, 4000)
    assert groups.num_prompts == 12 and groups.group == 3
    varied_open = 0
    for p, prompt in enumerate(groups.attributes):
        stated = set(prompt["stated"])
        assert stated and len(stated) < len(ATTRIBUTE_NAMES), "a prompt must leave something open"
        for clip in groups.clip_attributes["same"][p]:
            assert all(clip[a] == prompt[a] for a in (*ATTRIBUTE_NAMES, "bpm"))
        vary = groups.clip_attributes["vary"][p]
        for clip in vary:
            assert all(clip[a] == prompt[a] for a in stated)
        open_ = [a for a in ATTRIBUTE_NAMES if a not in stated]
        varied_open += any(len({clip[a] for clip in vary}) > 1 for a in open_)
    assert varied_open >= 10
    # the clips of one group differ (the renderer draws melody and sounds per clip)
    assert not np.allclose(groups.audio["same"][0, 0], groups.audio["same"][0, 1])
    again = reference_groups(12, 3, seed=4, sample_rate=8000, duration=0.5)
    assert np.array_equal(again.audio["vary"], groups.audio["vary"])


def test_varied_attributes_keep_the_bpm_with_a_stated_tempo() -> None:
    rng = np.random.default_rng(0)
    prompt, _ = open_prompt(rng)
    prompt = dict(prompt, stated=["tempo"])
    for _ in range(5):
        assert varied_attributes(prompt, rng)["bpm"] == prompt["bpm"]
    prompt["stated"] = ["instrument"]
    assert len({varied_attributes(prompt, rng)["bpm"] for _ in range(5)}) > 1


def test_reference_groups_reject_groups_of_one() -> None:
    with pytest.raises(ValueError, match="2 clips per group"):
        reference_groups(2, 1, seed=0)
