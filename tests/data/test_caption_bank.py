"""The caption bank: encode once, save, load, select rows; pretraining and the scorer read it."""

from __future__ import annotations

import pytest
import torch

from musicdistill.data.caption_bank import encode_captions, load_captions, save_captions, sentence_vectors
from musicdistill.model.text import TextCondition


class FakeEncoder:
    """Deterministic 'encoder': a prompt of n words -> n states of width 6 derived from its characters."""

    name = "fake"

    def encode(self, prompts):
        length = max(len(p.split()) for p in prompts)
        states = torch.zeros(len(prompts), length, 6)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            for j, word in enumerate(p.split()):
                g = torch.Generator().manual_seed(sum(map(ord, word)))
                states[i, j] = torch.randn(6, generator=g)
                mask[i, j] = True
        return TextCondition(states, mask)

    def clear_cache(self):
        pass


CAPTIONS = ["a bright pluck", "slow organ in a minor", "a bright pluck", "drums", "warm bass line with drums"]


def test_round_trip_keeps_every_caption_and_its_states(tmp_path):
    encoded = encode_captions(FakeEncoder(), CAPTIONS)
    assert encoded.captions == sorted(set(CAPTIONS), key=lambda c: (len(c), c))  # by length: little padding
    save_captions(encoded, tmp_path)
    loaded = load_captions(tmp_path, "fake")
    assert loaded.captions == encoded.captions
    torch.testing.assert_close(loaded.cond.mask, encoded.cond.mask[:, : loaded.cond.mask.shape[1]])
    torch.testing.assert_close(
        loaded.cond.states, encoded.cond.states[:, : loaded.cond.states.shape[1]], atol=2e-3, rtol=2e-3
    )  # stored as float16


def test_bank_rows_give_each_clip_its_own_caption(tmp_path):
    encoded = encode_captions(FakeEncoder(), CAPTIONS)
    clips = ["drums", "a bright pluck", "drums"]
    bank = encoded.bank(clips)
    cond = bank.batch(torch.arange(3))
    direct = FakeEncoder().encode(clips)
    for i in range(3):
        n = int(direct.mask[i].sum())
        torch.testing.assert_close(cond.states[i, :n], direct.states[i, :n])
        assert int(cond.mask[i].sum()) == n


def test_unknown_caption_and_wrong_encoder_are_named(tmp_path):
    encoded = encode_captions(FakeEncoder(), CAPTIONS)
    with pytest.raises(KeyError, match="--force captions"):
        encoded.bank(["never encoded"])
    save_captions(encoded, tmp_path)
    with pytest.raises(ValueError, match="text.encoder"):
        load_captions(tmp_path, "minilm")
    with pytest.raises(FileNotFoundError, match="captions stage"):
        load_captions(tmp_path / "missing")


def test_sentence_vectors_are_normalised_masked_means():
    encoded = encode_captions(FakeEncoder(), CAPTIONS)
    vectors = sentence_vectors(encoded, ["drums", "a bright pluck"])
    direct = FakeEncoder().encode(["a bright pluck"])
    expected = torch.nn.functional.normalize(direct.states[0].mean(0), dim=0)
    torch.testing.assert_close(vectors[1], expected)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2))
