"""The attribute oracle: features, softmax heads, accuracy on synthesised clips, adherence, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicdistill.config import CodecConfig, OracleConfig
from musicdistill.data.synth import synth_record
from musicdistill.judges.log_mel import clip_mels, front_end_settings, mel_spec, waveform_mels
from musicdistill.judges.oracle import (
    AttributeOracle,
    Head,
    attribute_accuracy,
    attribute_adherence,
    clip_features,
    fit_oracle,
    fit_softmax,
    hand_features,
    head_marginals,
    load_oracle,
    num_lags,
    parse_heads,
    predict_attributes,
    predict_attributes_mel,
    predict_marginals,
    predict_marginals_features,
    predict_marginals_mel,
    save_oracle,
)

RATE = 16000
SETTINGS = front_end_settings(CodecConfig(), RATE)
CHANCE = {
    "instrument": 1 / 6,
    "tempo": 1 / 3,
    "register": 1 / 2,
    "drums": 1 / 4,
    "mode": 1 / 2,
    "key": 1 / 12,
}


def synthesised(seed: int, count: int) -> tuple[list[dict], np.ndarray]:
    records, pcm = zip(*(synth_record(seed, i, RATE, 4.0) for i in range(count)))
    return [r["attributes"] for r in records], np.stack(pcm).astype(np.float32) / 32767.0


@pytest.fixture(scope="module")
def small():
    """An oracle fitted on 120 clips and 60 other clips to test it on."""
    attributes, audio = synthesised(11, 180)
    mels = clip_mels(audio, RATE, SETTINGS)
    oracle = fit_oracle(OracleConfig(reconstructions=False), mels.select(torch.arange(120)), attributes[:120])
    return oracle, attributes[120:], audio[120:]


def test_feature_layout_is_fixed_and_finite():
    x = torch.randn(3, 128, 100) - 8.0
    features = clip_features(x, SETTINGS)
    assert features.shape == (3, 6 * 128 + 4 * num_lags(SETTINGS) + 12)
    assert torch.isfinite(features).all()
    assert clip_features(torch.randn(2, 128, 40), SETTINGS).shape[1] == features.shape[1]  # any clip length
    with pytest.raises(ValueError, match="128"):
        clip_features(torch.randn(2, 64, 100), SETTINGS)


def test_parse_heads():
    assert parse_heads(["instrument", "key+mode"]) == [("instrument",), ("key", "mode")]
    with pytest.raises(ValueError, match="repeated"):
        parse_heads(["mode", "key+mode"])
    with pytest.raises(ValueError, match="empty"):
        parse_heads(["key+"])


def test_softmax_regression_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 5, generator=gen) * 4
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 5, generator=gen) * 0.3
    weight, bias = fit_softmax(x, y, 3, l2=1e-3, iters=100)
    assert ((x @ weight.T + bias).argmax(1) == y).float().mean() == 1.0


def test_small_oracle_is_well_above_chance_on_unseen_clips(small):
    oracle, attributes, audio = small
    accuracy = attribute_accuracy(predict_attributes(oracle, audio, RATE), attributes)
    assert set(accuracy) == {"instrument", "tempo", "key", "mode", "register", "drums"}
    for name in ("instrument", "tempo", "register", "drums"):
        assert accuracy[name] > min(0.9, 2.5 * CHANCE[name]), (name, accuracy)


def test_wav_and_mel_paths_agree_and_round_trip(small, tmp_path):
    oracle, _, audio = small
    predicted = predict_attributes(oracle, audio[:6], RATE)
    assert predicted == predict_attributes_mel(oracle, waveform_mels(mel_spec(SETTINGS), audio[:6], RATE))
    save_oracle(oracle, tmp_path / "oracle", metrics={"ok": True})
    loaded = load_oracle(tmp_path / "oracle")
    assert loaded.attributes == oracle.attributes
    assert predict_attributes(loaded, audio[:6], RATE) == predicted
    assert torch.equal(hand_features(loaded, audio[:2], RATE), hand_features(oracle, audio[:2], RATE))


def test_fit_rejects_data_without_the_attributes():
    _, audio = synthesised(2, 4)
    mels = clip_mels(audio, RATE, SETTINGS)
    with pytest.raises(ValueError, match="oracle.heads"):
        fit_oracle(OracleConfig(heads=["genre"], reconstructions=False), mels, [{"instrument": "bell"}] * 4)


def test_attribute_adherence_counts_only_stated_attributes_the_oracle_knows():
    truth = {
        "instrument": "bell",
        "tempo": "slow",
        "key": "C",
        "mode": "minor",
        "stated": ["instrument", "tempo", "key"],
    }
    predicted = {"instrument": "bell", "tempo": "fast", "mode": "major"}  # no key: an oracle without it
    assert attribute_adherence(predicted, truth) == 0.5
    assert attribute_adherence({**predicted, "tempo": "slow"}, truth) == 1.0
    assert attribute_adherence({**predicted, "key": "D"}, truth) == pytest.approx(1 / 3)  # key now counts
    assert math.isnan(attribute_adherence(predicted, {**truth, "stated": []}))
    assert math.isnan(attribute_adherence(predicted, {"key": "C", "stated": ["key"]}))
    assert (
        attribute_adherence(predicted, {"instrument": "bell", "mode": "minor"}) == 0.5
    )  # no list: all count


def test_attribute_accuracy_counts_every_labelled_attribute():
    predicted = [{"mode": "major", "tempo": "slow"}, {"mode": "minor", "tempo": "slow"}]
    truth = [
        {"mode": "major", "tempo": "fast", "stated": []},
        {"mode": "major", "tempo": "slow", "stated": []},
    ]
    assert attribute_accuracy(predicted, truth) == {"mode": 0.5, "tempo": 0.5}


@pytest.mark.slow
def test_oracle_meets_95_percent_on_synthesised_clips():
    """The claim of bench/RESULTS.md at a smaller scale: 6000 real training clips, 400 unseen test clips."""
    attributes, audio = synthesised(21, 6400)
    mels = clip_mels(audio, RATE, SETTINGS)
    oracle = fit_oracle(
        OracleConfig(reconstructions=False), mels.select(torch.arange(6000)), attributes[:6000]
    )
    accuracy = attribute_accuracy(predict_attributes_mel(oracle, mels.real[6000:]), attributes[6000:])
    assert min(accuracy.values()) >= 0.95, accuracy


def test_a_joint_head_is_marginalised_to_each_attribute():
    classes = ["C|major", "C|minor", "D|major", "D|minor", "E|minor"]
    head = Head(("key", "mode"), classes, torch.zeros(5, 1), torch.zeros(5))
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25], [0.0, 0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    marginals = head_marginals(head, probs)
    assert list(marginals) == ["key", "mode"]
    assert marginals["key"].values == ("C", "D", "E") and marginals["mode"].values == ("major", "minor")
    np.testing.assert_allclose(marginals["key"].probs, [[0.3, 0.45, 0.25], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(marginals["mode"].probs, [[0.4, 0.6], [0.0, 1.0]])
    # the joint argmax is D|major, but the marginal readings are key D and mode minor
    assert marginals["key"].argmax() == ["D", "E"] and marginals["mode"].argmax() == ["minor", "minor"]


def test_marginals_through_an_oracle_follow_its_heads():
    # one feature; logits chosen so that the joint softmax is known: row 0 favours C|major, row 1 D|minor
    weight = torch.tensor([[1.0], [0.0], [0.0], [-1.0]])
    joint = Head(("key", "mode"), ["C|major", "C|minor", "D|major", "D|minor"], weight, torch.zeros(4))
    single = Head(("drums",), ["none", "rock"], torch.tensor([[2.0], [-2.0]]), torch.zeros(2))
    oracle = AttributeOracle({}, torch.zeros(1), torch.ones(1), [single, joint])
    x = torch.tensor([[2.0], [-2.0]])
    marginals = predict_marginals_features(oracle, x)
    assert list(marginals) == list(oracle.attributes) == ["drums", "key", "mode"]
    softmax = torch.softmax(x @ weight.T, dim=-1).double().numpy()
    np.testing.assert_allclose(marginals["key"].probs[:, 0], softmax[:, 0] + softmax[:, 1], rtol=1e-6)
    np.testing.assert_allclose(marginals["mode"].probs[:, 0], softmax[:, 0] + softmax[:, 2], rtol=1e-6)
    for m in marginals.values():
        assert m.probs.dtype == np.float64
        np.testing.assert_allclose(m.probs.sum(1), 1.0, rtol=1e-6)
    assert marginals["key"].argmax() == ["C", "D"] and marginals["drums"].argmax() == ["none", "rock"]


def test_marginal_argmax_is_the_hard_reading_on_real_clips(small):
    oracle, attributes, audio = small
    assert any(len(h.attributes) > 1 for h in oracle.heads)  # the built-in data's key+mode head
    mel = waveform_mels(mel_spec(SETTINGS), audio[:12], RATE)
    readings = predict_attributes_mel(oracle, mel)
    marginals = predict_marginals_mel(oracle, mel)
    assert set(marginals) == set(oracle.attributes)
    for name, m in marginals.items():
        assert m.probs.shape == (12, len(m.values))
        np.testing.assert_allclose(m.probs.sum(1), 1.0, rtol=1e-5)
        assert m.argmax() == [r[name] for r in readings]
    from_wav = predict_marginals(oracle, audio[:12], RATE)
    for name, m in marginals.items():
        np.testing.assert_allclose(from_wav[name].probs, m.probs, atol=1e-5)
