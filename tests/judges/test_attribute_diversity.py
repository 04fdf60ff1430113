"""Attribute diversity (disagreement over the attributes a prompt leaves open), its expected variant
from the oracle's probabilities, and the reference groups of real clips that every diversity measure is
validated on."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch

import musicdistill.judges.judging as judging
from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig, OracleConfig
from musicdistill.data.captions import ATTRIBUTE_NAMES
from musicdistill.data.synth import synth_record
from musicdistill.evaluation.evaluate import EvalPrompts, score_system
from musicdistill.evaluation.metrics import metric_label
from musicdistill.judges.attribute_diversity import (
    attribute_diversity,
    attribute_diversity_per_prompt,
    expected_attribute_diversity,
    expected_attribute_diversity_per_prompt,
    expected_pairwise_disagreement,
    pairwise_disagreement,
    unstated_attributes,
)
from musicdistill.judges.judging import CodedClips
from musicdistill.judges.log_mel import clip_mels, front_end_settings
from musicdistill.judges.oracle import fit_oracle, predict_attributes_mel, predict_marginals_mel
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


# --------------------------------------------------------------------------------------------
# Expected attribute diversity (the oracle's probabilities)
# --------------------------------------------------------------------------------------------

VALUES = {"instrument": 6, "tempo": 3, "key": 12, "mode": 2, "register": 2, "drums": 4}


def random_prompts(rng: np.random.Generator, count: int) -> list[dict | None]:
    """Prompts stating random subsets of the attributes (some every attribute, one none, one None)."""
    out: list[dict | None] = []
    for b in range(count):
        if b == 0:
            out.append(None)
            continue
        stated = [a for a in READABLE if rng.random() < (1.0 if b == 1 else 0.5)]
        out.append({a: "x" for a in stated} | {"stated": stated})
    return out


def test_expected_equals_the_hard_measure_on_one_hot_probabilities() -> None:
    rng = np.random.default_rng(0)
    prompts, group = random_prompts(rng, 40), 4
    # few values per attribute so that readings often agree and often differ
    choices = np.stack([rng.integers(0, min(VALUES[a], 3), size=len(prompts) * group) for a in READABLE], 1)
    readings = [{a: f"v{c}" for a, c in zip(READABLE, row)} for row in choices]
    probs = {a: np.eye(VALUES[a])[choices[:, i]] for i, a in enumerate(READABLE)}
    hard = attribute_diversity_per_prompt(readings, prompts, group, READABLE)
    expected = expected_attribute_diversity_per_prompt(probs, prompts, group)
    assert np.isnan(hard).sum() >= 2 and np.isfinite(hard).sum() >= 30
    assert (hard[np.isfinite(hard)] > 0).any() and (hard[np.isfinite(hard)] < 1).any()
    np.testing.assert_array_equal(np.isnan(expected), np.isnan(hard))
    np.testing.assert_allclose(expected[np.isfinite(hard)], hard[np.isfinite(hard)], atol=1e-12)


def test_expected_two_sample_example_by_hand() -> None:
    prompt = {"instrument": "flute", "stated": ["instrument"]}
    probs = {
        "instrument": np.array([[0.9, 0.1], [0.1, 0.9]]),  # stated: does not count
        "tempo": np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]),  # 1 - 0.2 = 0.8
        "mode": np.array([[0.8, 0.2], [0.5, 0.5]]),  # 1 - (0.4 + 0.1) = 0.5
    }
    assert expected_attribute_diversity(probs, prompt) == pytest.approx((0.8 + 0.5) / 2)
    out = expected_attribute_diversity_per_prompt(probs, [prompt], 2)
    assert out.shape == (1,) and out[0] == pytest.approx(0.65)
    # identical uncertain samples still differ with probability 1 - |p|^2
    assert expected_pairwise_disagreement(np.array([[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(0.5)


def test_expected_is_the_mean_over_pairs_and_lies_in_the_unit_interval() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(5, 0.3), size=(7, 4))  # [B=7, G=4, K=5]
    out = expected_pairwise_disagreement(probs)
    by_pairs = [
        np.mean([1.0 - probs[b, i] @ probs[b, j] for i, j in combinations(range(4), 2)]) for b in range(7)
    ]
    np.testing.assert_allclose(out, by_pairs, atol=1e-12)
    assert ((out >= 0) & (out <= 1)).all()
    assert expected_pairwise_disagreement(np.tile(np.eye(3)[:1], (5, 1))) == 0.0
    assert expected_pairwise_disagreement(np.eye(3)) == 1.0


def test_expected_is_undefined_where_nothing_is_left_open_and_checks_shapes() -> None:
    probs = {"instrument": np.array([[1.0, 0.0], [0.0, 1.0]])}
    every = {"instrument": "flute", "stated": ["instrument"]}
    assert math.isnan(expected_attribute_diversity(probs, every))
    assert math.isnan(expected_attribute_diversity(probs, None))
    assert math.isnan(expected_attribute_diversity(probs, {"instrument": "flute"}))  # no list: all stated
    assert math.isnan(expected_attribute_diversity({}, {"stated": []}))  # the oracle reads nothing
    assert expected_attribute_diversity(probs, {"stated": []}) == 1.0
    out = expected_attribute_diversity_per_prompt(probs | {"tempo": np.eye(2)}, [{"stated": []}], 2)
    assert out[0] == 1.0
    with pytest.raises(ValueError, match="G >= 2"):
        expected_attribute_diversity_per_prompt(probs, [every, every], 2)  # 2 rows for 2 prompts x 2
    with pytest.raises(ValueError, match="G >= 2"):
        expected_attribute_diversity_per_prompt({"tempo": np.ones((1, 2))}, [every], 1)
    with pytest.raises(ValueError, match="G >= 2"):
        expected_pairwise_disagreement(np.ones((1, 3)))


RATE = 16000


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> dict:
    """A small mel codec and oracle fitted on 48 clips of 1 s, and 8 clips as codes (4 prompts x 2)."""
    records, pcm = zip(*(synth_record(8, i, RATE, 1.0) for i in range(48)))
    audio = torch.from_numpy(np.stack(pcm).astype(np.float32) / 32767.0)
    codec_cfg = CodecConfig(n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000)
    codec = fit_codec(codec_cfg, audio, RATE)
    mels = clip_mels(audio, RATE, front_end_settings(codec_cfg, RATE), codec)
    oracle = fit_oracle(
        OracleConfig(iters=20, heads=["instrument", "tempo", "key+mode", "register", "drums"]),
        mels,
        [r["attributes"] for r in records],
    )
    codes = codec.encode(audio[:8].unsqueeze(1), RATE)
    return {"codec": codec, "oracle": oracle, "codes": codes, "records": list(records)}


def test_score_system_reports_expected_beside_hard_attribute_diversity(coded, monkeypatch) -> None:
    oracle, codec = coded["oracle"], coded["codec"]
    independent, adherence = judging.oracle_judges(oracle)
    judges = judging.Judges(
        independent=independent,
        adherence=adherence,
        attribute_diversity=judging.attribute_diversity_judge(oracle),
        expected_attribute_diversity=judging.expected_attribute_diversity_judge(oracle),
    )
    records = coded["records"][:8:2]
    attributes = [dict(r["attributes"], stated=["instrument"]) for r in records[:3]]
    attributes.append(dict(records[3]["attributes"], stated=list(oracle.attributes)))  # nothing open
    prompts = EvalPrompts([r["caption"] for r in records], attributes)
    calls: list[int] = []
    real = judging.hand_features_mel
    monkeypatch.setattr(judging, "hand_features_mel", lambda o, m: calls.append(len(m)) or real(o, m))
    per, _ = score_system(CodedClips(codec, coded["codes"]), prompts, 2, judges)
    hard, expected = np.array(per["attribute_diversity"]), np.array(per["expected_attribute_diversity"])
    assert calls == [8]  # the independent embedding and the probabilities share one feature pass
    np.testing.assert_array_equal(np.isnan(expected), np.isnan(hard))
    assert np.isnan(expected[3]) and np.isfinite(expected[:3]).all()
    assert ((expected[:3] >= 0) & (expected[:3] <= 1)).all()
    marginals = predict_marginals_mel(oracle, codec.decode_mel(coded["codes"]).float())
    wanted = expected_attribute_diversity_per_prompt(
        {a: m.probs for a, m in marginals.items()}, attributes, 2
    )
    np.testing.assert_allclose(expected, wanted, atol=1e-6)
    # the probabilities' argmax is the oracle's hard reading, so both measures read the same clips
    readings = predict_attributes_mel(oracle, codec.decode_mel(coded["codes"]).float())
    for a, m in marginals.items():
        assert m.argmax() == [r[a] for r in readings]
    assert (
        metric_label("expected_attribute_diversity") == "attribute diversity, expected (oracle probabilities)"
    )
