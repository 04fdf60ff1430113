"""Metrics: pairwise diversity, Vendi, bootstrap CIs, Fréchet distance, and the per-system report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicdistill.config import CodecConfig, EmbedConfig
from musicdistill.data.synth import synth_record
from musicdistill.evaluation.metrics import (
    Estimate,
    bootstrap_ci,
    frechet_distance,
    vendi_score,
)
from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.embedder import embed_audio, train_embedder
from musicdistill.judges.log_mel import clip_mels, front_end_settings
from musicdistill.judges.oracle import fit_hand_features, hand_features

RATE = 16000


def test_identical_generations_have_zero_diversity_and_vendi_one():
    e = torch.randn(3, 1, 16).expand(3, 4, 16)  # B=3 prompts, G=4 identical generations each
    assert np.allclose(pairwise_diversity(e), 0.0, atol=1e-12)
    assert np.allclose(vendi_score(e), 1.0, atol=1e-9)


def test_orthogonal_generations_have_diversity_one_and_vendi_g():
    g = 5
    e = torch.eye(g)[None].repeat(2, 1, 1) * 3.0  # scale must not matter
    assert np.allclose(pairwise_diversity(e), 1.0)
    assert np.allclose(vendi_score(e), g)


def test_diversity_counts_each_pair_once_and_vendi_lies_between():
    e = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # two identical, one orthogonal: pairs 0, 1, 1
    assert pairwise_diversity(e)[0] == pytest.approx(2.0 / 3.0)
    assert 1.0 < vendi_score(e)[0] < 3.0
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    assert pairwise_diversity(opposite)[0] == pytest.approx(2.0)


def test_diversity_rejects_one_generation_per_prompt():
    with pytest.raises(ValueError, match="G >= 2"):
        pairwise_diversity(torch.randn(4, 1, 8))
    with pytest.raises(ValueError, match=r"\[B prompts, G generations, E\]"):
        vendi_score(torch.randn(4, 8))


def test_bootstrap_interval_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.normal(0.5, 0.2, size=20), seed=1)
    large = bootstrap_ci(rng.normal(0.5, 0.2, size=2000), seed=1)
    for est in (small, large):
        assert est.low <= est.mean <= est.high
    assert (large.high - large.low) < 0.4 * (small.high - small.low)
    assert large.n == 2000 and abs(large.mean - 0.5) < 0.02


def test_bootstrap_is_seeded_and_skips_nan():
    values = [0.1, 0.9, math.nan, 0.4, 0.6]
    a, b = bootstrap_ci(values, seed=3), bootstrap_ci(values, seed=3)
    assert a == b and a.n == 4 and a.mean == pytest.approx(0.5)
    assert bootstrap_ci([0.7]) == Estimate(0.7, 0.7, 0.7, 1)
    empty = bootstrap_ci([math.nan])
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(values, level=1.5)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_sees_a_mean_shift():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = torch.zeros(6)
    shift[0] = 3.0
    assert frechet_distance(x + shift, x) == pytest.approx(9.0, rel=1e-6)
    y = torch.randn(300, 6, generator=torch.Generator().manual_seed(1)) * 2.0
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)
    with pytest.raises(ValueError, match="same E"):
        frechet_distance(x, torch.randn(10, 5))


@pytest.fixture(scope="module")
def clips():
    records, audio = zip(*(synth_record(7, i, RATE, 4.0) for i in range(6)))
    return [r["attributes"] for r in records], np.stack(audio).astype(np.float32) / 32767.0


def test_repeated_clips_have_zero_diversity_in_both_embedding_spaces(clips):
    _, audio = clips
    settings = front_end_settings(CodecConfig(), RATE)
    mels = clip_mels(audio, RATE, settings)
    embedder, _ = train_embedder(EmbedConfig(channels=16, dim=8, steps=10, batch_size=6), mels)
    space = fit_hand_features(mels, use_recon=False)
    spaces = {"reward": embed_audio(embedder, audio, RATE), "hand": hand_features(space, audio, RATE)}
    for name, emb in spaces.items():
        same = emb[:2, None].expand(2, 3, -1)  # B=2 prompts x G=3 copies of one clip
        different = emb.reshape(2, 3, -1)
        assert np.allclose(pairwise_diversity(same), 0.0, atol=1e-6), name
        assert np.allclose(vendi_score(same), 1.0, atol=1e-5), name
        assert (pairwise_diversity(different) > 1e-3).all(), name
        assert frechet_distance(emb, emb) == pytest.approx(0.0, abs=1e-4)
    assert pairwise_diversity(spaces["hand"].reshape(2, 3, -1)).mean() > 0.5
