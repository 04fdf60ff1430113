"""bench/view_breakdown.py: feature groups and per-group distances on synthetic features of known answer."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.oracle import clip_features, num_lags

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("view_breakdown", ROOT / "bench" / "view_breakdown.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["view_breakdown"] = module
    spec.loader.exec_module(module)
    return module


vb = _load()


def test_groups_tile_the_oracle_feature_vector():
    settings = {"n_mels": 8, "sample_rate": 1000, "hop_length": 100, "fmin": 0.0, "fmax": 500.0}
    lags = num_lags(settings)
    width = clip_features(torch.randn(2, 8, 40), settings).shape[1]
    for fine in (False, True):
        groups = vb.feature_groups(8, lags, fine)
        vb.check_groups(groups, width)
        assert [s.stop - s.start for s in groups.values()][:3] == [8, 8, 8]
        assert list(groups.values())[-1] == slice(width - 12, width)
    coarse = vb.feature_groups(8, lags)
    assert [s.stop - s.start for s in coarse.values()] == [8, 8, 8, 24, 4 * lags, 12]
    with pytest.raises(ValueError):
        vb.check_groups(coarse, width + 1)


def test_pair_distance_matches_explicit_pairs():
    x = np.random.default_rng(0).normal(size=(3, 5, 4))
    explicit = [
        np.mean([np.sum((x[b, i] - x[b, j]) ** 2) for i, j in itertools.combinations(range(5), 2)])
        for b in range(3)
    ]
    np.testing.assert_allclose(vb.pair_mean_sq_distance(x), explicit)


def test_known_answer_per_group():
    # one prompt, two samples, groups a (dims 0-1) and b (dims 2-3): the samples differ only in b
    features = np.array([[[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]])
    groups = {"a": slice(0, 2), "b": slice(2, 4)}
    out = vb.breakdown(features, groups)
    assert out["a"]["cosine"][0] == pytest.approx(0.0)
    assert out["b"]["cosine"][0] == pytest.approx(1.0)  # orthogonal within b
    assert out["a"]["spread"][0] == pytest.approx(0.0)
    assert out["b"]["spread"][0] == pytest.approx(1.0)  # |(1,-1)|^2 / 2
    assert vb.shares(out) == pytest.approx({"a": 0.0, "b": 1.0})
    # whole vectors (1,0,1,0), (1,0,0,1): 1 - cos = 1/2, all of it from b
    assert out["a"]["contribution"][0] == pytest.approx(0.0)
    assert out["b"]["contribution"][0] == pytest.approx(0.5)


def test_contributions_add_up_to_the_whole_vector_view():
    features = np.random.default_rng(1).normal(size=(6, 4, 10))
    groups = {"a": slice(0, 3), "b": slice(3, 7), "c": slice(7, 10)}
    out = vb.breakdown(features, groups)
    total = sum(out[g]["contribution"] for g in groups)
    np.testing.assert_allclose(total, pairwise_diversity(features), atol=1e-12)
    assert sum(vb.shares(out).values()) == pytest.approx(1.0)
