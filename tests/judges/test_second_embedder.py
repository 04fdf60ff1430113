"""The second embedder (2-D conv, VICReg) and the disjoint halves the two learned embedders train on."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from musicdistill.cli import main
from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig, Config, EmbedConfig, SecondEmbedConfig
from musicdistill.data.manifest import Entry, split_for_caption
from musicdistill.data.synth import synth_record, synthesize_dataset
from musicdistill.judges.embedder import fit_and_save_embedder, load_embedder
from musicdistill.judges.halves import HALVES, embedder_half, half_mask, select_half
from musicdistill.judges.log_mel import LabelledMels, clip_mels, front_end_settings
from musicdistill.judges.second_embedder import (
    SpectroConvEncoder,
    build_second_embedder,
    embed_audio_second,
    embed_mel_second,
    fit_and_save_second_embedder,
    load_second_embedder,
    mask_spans,
    representations,
    save_second_embedder,
    train_second_embedder,
    vicreg_loss,
    view_pair_starts,
)
from musicdistill.storage.model_files import MODEL_JSON

RATE = 16000
CODEC = CodecConfig(n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000)
SETTINGS = front_end_settings(CODEC, RATE)
TINY = SecondEmbedConfig(
    channels=4, hidden=16, dim=8, expander=32, chunk_seconds=1.0, steps=25, batch_size=16
)


@pytest.fixture(scope="module")
def data():
    """24 synthesised 2-s clips: records, their log-mels with codec reconstructions."""
    records, pcm = zip(*(synth_record(11, i, RATE, 2.0) for i in range(24)))
    audio = torch.from_numpy(np.stack(pcm).astype(np.float32) / 32767.0)
    codec = fit_codec(CODEC, audio, RATE)
    return list(records), audio, clip_mels(audio, RATE, SETTINGS, codec)


@pytest.fixture(scope="module")
def trained(data):
    return train_second_embedder(TINY, data[2].select(list(range(16))))


# --------------------------------------------------------------------------------------------
# Objective and views
# --------------------------------------------------------------------------------------------


def test_vicreg_terms() -> None:
    gen = torch.Generator().manual_seed(0)
    spread = 1.5 * torch.randn(4096, 8, generator=gen)
    loss, parts = vicreg_loss(spread, spread, 25.0, 25.0, 1.0)
    assert parts["invariance"] == 0.0 and parts["variance"] < 0.01 and parts["covariance"] < 0.1
    _, shifted = vicreg_loss(spread, spread + torch.randn(4096, 8, generator=gen), 25.0, 25.0, 1.0)
    assert shifted["invariance"] == pytest.approx(1.0, abs=0.15)
    collapsed = torch.zeros(4096, 8)
    _, parts = vicreg_loss(collapsed, collapsed, 25.0, 25.0, 1.0)
    assert parts["variance"] == pytest.approx(0.99, abs=0.01)
    correlated = spread[:, :1].repeat(1, 8)
    _, parts = vicreg_loss(correlated, correlated, 25.0, 25.0, 1.0)
    assert parts["covariance"] > 30.0
    loss, parts = vicreg_loss(spread, spread + 0.1, 2.0, 3.0, 0.5)
    assert float(loss) == pytest.approx(
        2 * parts["invariance"] + 3 * parts["variance"] + 0.5 * parts["covariance"]
    )
    with pytest.raises(ValueError, match="VICReg"):
        vicreg_loss(spread[:1], spread[:1], 1, 1, 1)


def test_views_cover_the_same_segment_within_the_shift() -> None:
    first, second = view_pair_starts(2000, 100, 37, 5, torch.Generator().manual_seed(0))
    assert ((first - second).abs() <= 5).all() and (first - second).abs().max() == 5
    for s in (first, second):
        assert s.min() >= 0 and (s + 37).max() <= 100
    with pytest.raises(ValueError, match="chunk_seconds"):
        view_pair_starts(1, 10, 11, 0, torch.Generator())


def test_masks_fill_one_span_of_at_most_the_fraction() -> None:
    x = torch.randn(64, 20, 30)
    fill = torch.full((20,), 7.0)
    for axis, size in ((1, 20), (2, 30)):
        out = mask_spans(x, fill, 0.25, axis, torch.Generator().manual_seed(axis))
        hit = out == 7.0
        other = 2 if axis == 1 else 1
        assert (hit.all(dim=other) == hit.any(dim=other)).all()  # whole bands / whole frames
        widths = hit.any(dim=other).sum(-1)
        assert widths.max() <= int(0.25 * size) and widths.max() > 0
        assert torch.equal(out[~hit], x[~hit])


# --------------------------------------------------------------------------------------------
# Training, embedding, saving
# --------------------------------------------------------------------------------------------


def test_encoder_accepts_any_length_and_rejects_too_few_bands() -> None:
    encoder = SpectroConvEncoder(32, 4, 16, 8).eval()
    for frames in (4, 37, 101):
        assert encoder(torch.randn(3, 32, frames)).shape == (3, 8)
    with pytest.raises(ValueError, match="16 mel bands"):
        SpectroConvEncoder(8, 4, 16, 8)


def test_training_lowers_the_loss_and_standardises_the_training_representations(data, trained) -> None:
    embedder, history = trained
    assert len(history) == TINY.steps
    first, last = np.mean([h["loss"] for h in history[:5]]), np.mean([h["loss"] for h in history[-5:]])
    assert last < first
    assert not embedder.training and not any(p.requires_grad for p in embedder.parameters())
    standardised = (
        representations(embedder, data[2].real[:16].float()) - embedder.out_mean
    ) / embedder.out_std
    assert standardised.mean(0).abs().max() < 1e-3
    assert standardised.std(0).mean() == pytest.approx(1.0, abs=1e-3)


def test_embeddings_are_normalised_and_mel_and_audio_paths_agree(data, trained) -> None:
    embedder, _ = trained
    mel = data[2].real[16:].float()
    z = embed_mel_second(embedder, mel)
    assert z.shape == (8, TINY.dim) and torch.allclose(z.norm(dim=-1), torch.ones(8), atol=1e-5)
    # the stored log-mels are float16; the audio path computes them in float32
    assert torch.allclose(embed_audio_second(embedder, data[1][16:], RATE), z, atol=3e-3)
    # a clip shorter than the training view is one window
    assert embed_mel_second(embedder, mel[:, :, :10]).shape == (8, TINY.dim)


def test_save_and_load_round_trip(tmp_path, data, trained) -> None:
    embedder, _ = trained
    save_second_embedder(embedder, tmp_path / "second", {"note": 1})
    loaded = load_second_embedder(tmp_path / "second")
    mel = data[2].real[16:].float()
    assert torch.equal(embed_mel_second(loaded, mel), embed_mel_second(embedder, mel))
    meta = json.loads((tmp_path / "second" / MODEL_JSON).read_text())
    assert meta["kind"] == "second_embedder" and meta["config"]["steps"] == TINY.steps
    with pytest.raises(ValueError, match="not a 'embedder'"):
        load_embedder(tmp_path / "second")


def test_a_view_longer_than_the_clip_is_cut_to_the_clip(data) -> None:
    cfg = SecondEmbedConfig(
        channels=4, hidden=16, dim=8, expander=16, chunk_seconds=5.0, steps=2, batch_size=8
    )
    embedder, _ = train_second_embedder(cfg, data[2])
    assert embedder.chunk_frames == data[2].num_frames
    assert build_second_embedder(cfg, SETTINGS).chunk_frames > data[2].num_frames


# --------------------------------------------------------------------------------------------
# Disjoint halves
# --------------------------------------------------------------------------------------------


def test_halves_are_deterministic_balanced_and_unrelated_to_the_splits() -> None:
    captions = [f"caption number {i}" for i in range(4000)]
    halves = [embedder_half(c) for c in captions]
    assert set(halves) == set(HALVES)
    assert abs(Counter(halves)["reward"] / len(captions) - 0.5) < 0.03
    assert halves == [embedder_half(c) for c in captions]
    assert embedder_half("  caption number 7 ") == embedder_half("caption number 7")
    train = [h for c, h in zip(captions, halves) if split_for_caption(c) == "train"]
    assert abs(Counter(train)["reward"] / len(train) - 0.5) < 0.03
    mask = half_mask(captions, "reward")
    assert np.array_equal(mask, ~half_mask(captions, "second"))
    with pytest.raises(ValueError, match="half="):
        half_mask(captions, "third")


def _labelled(records, mels) -> LabelledMels:
    entries = [Entry(path=r["path"], caption=r["caption"], attributes=r["attributes"]) for r in records]
    return LabelledMels(entries, mels)


def test_the_two_embedders_train_on_disjoint_halves(tmp_path, data) -> None:
    records, _, mels = data
    train = _labelled(records, mels)
    cfg = Config(
        embed=EmbedConfig(channels=8, dim=8, chunk_seconds=0.5, steps=2, batch_size=8),
        second_embed=SecondEmbedConfig(
            channels=4, hidden=16, dim=8, expander=16, chunk_seconds=1.0, steps=2, batch_size=8
        ),
    )
    reward = fit_and_save_embedder(cfg, train, None, tmp_path / "embedder")
    second = fit_and_save_second_embedder(cfg, train, None, tmp_path / "second_embedder")
    assert (reward["train_half"], second["train_half"]) == ("reward", "second")
    assert reward["train_clips"] + second["train_clips"] == len(train)
    reward_captions = {e.caption for e in select_half(train, "reward", "x").entries}
    second_captions = {e.caption for e in select_half(train, "second", "x").entries}
    assert reward_captions.isdisjoint(second_captions)
    assert len(reward_captions) == reward["train_clips"] and len(second_captions) == second["train_clips"]


def test_a_half_with_fewer_than_two_clips_is_an_error(data) -> None:
    records, _, mels = data
    rows = [i for i, r in enumerate(records) if embedder_half(r["caption"]) == "reward"][:1]
    rows += [i for i, r in enumerate(records) if embedder_half(r["caption"]) == "second"][:3]
    train = _labelled([records[i] for i in rows], mels.select(rows))
    with pytest.raises(ValueError, match="'reward' half .* holds 1 of the 4"):
        select_half(train, "reward", "embedder")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_embed_second_command_writes_a_model_folder(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    synthesize_dataset(data, 40, seed=2, sample_rate=RATE, duration=2.0, workers=1)
    out = tmp_path / "second"
    overrides = [
        "data.duration=2.0",
        "codec.n_mels=32",
        "second_embed.channels=4",
        "second_embed.hidden=16",
        "second_embed.dim=8",
        "second_embed.expander=16",
        "second_embed.chunk_seconds=1.0",
        "second_embed.steps=3",
        "second_embed.batch_size=8",
    ]
    assert main(["embed", "second", "--data", str(data), "--out", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "wrote second embedder" in printed and '"train_half": "second"' in printed
    embedder = load_second_embedder(out)
    assert embedder.dim == 8 and (out / "config.yaml").is_file()
