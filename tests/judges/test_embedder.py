"""The contrastive audio embedder, the joint text-audio scorer and the transformers CLAP adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicdistill.cli import main
from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig, EmbedConfig, ScorerConfig
from musicdistill.data.synth import synth_record, synthesize_dataset
from musicdistill.judges.embedder import (
    chunk_pair_starts,
    chunk_retrieval_accuracy,
    embed_audio,
    embed_mel,
    info_nce,
    load_embedder,
    random_band_shift,
    random_eq,
    save_embedder,
    train_embedder,
)
from musicdistill.judges.log_mel import clip_mels, codec_shares_front_end, front_end_settings, waveform_mels
from musicdistill.judges.scorer import (
    ClapScorer,
    JointScorer,
    load_scorer,
    save_scorer,
    sentence_embeddings,
    text_adherence,
    text_to_audio_recall,
    train_scorer,
)
from musicdistill.model.text import load_text_encoder
from musicdistill.storage.model_files import MODEL_JSON, MODEL_WEIGHTS

RATE = 16000
SETTINGS = front_end_settings(CodecConfig(), RATE)
TINY = EmbedConfig(channels=32, dim=16, steps=40, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def clips():
    """16 synthesised 4-s clips: (records, float32 audio [16, 64000])."""
    records, pcm = zip(*(synth_record(3, i, RATE, 4.0) for i in range(16)))
    return list(records), np.stack(pcm).astype(np.float32) / 32767.0


@pytest.fixture(scope="module")
def mels(clips):
    codec = fit_codec(
        CodecConfig(cardinality=16, kmeans_iters=3, max_fit_frames=1000), torch.from_numpy(clips[1]), RATE
    )
    assert codec_shares_front_end(codec, SETTINGS)
    return clip_mels(clips[1], RATE, SETTINGS, codec)


@pytest.fixture(scope="module")
def trained(mels):
    return train_embedder(TINY, mels)


# --------------------------------------------------------------------------------------------
# Embedder
# --------------------------------------------------------------------------------------------


def test_info_nce_prefers_matching_pairs():
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    shuffled = a[torch.roll(torch.arange(8), 1)]
    assert info_nce(a, a, 0.1) < 0.05 < info_nce(a, shuffled, 0.1)
    assert info_nce(a, shuffled, 0.1) == pytest.approx(float(info_nce(shuffled, a, 0.1)))


def test_chunk_pairs_never_overlap_and_stay_inside_the_clip():
    first, second = chunk_pair_starts(500, 100, 37, torch.Generator().manual_seed(0))
    assert ((first - second).abs() >= 37).all()
    assert (torch.minimum(first, second) >= 0).all() and (torch.maximum(first, second) + 37 <= 100).all()
    assert (first < second).any() and (first > second).any()  # both orders occur
    with pytest.raises(ValueError, match="chunk_seconds"):
        chunk_pair_starts(4, 60, 31, torch.Generator())


def test_reconstructions_have_the_real_shape(mels):
    assert mels.recon is not None and mels.recon.shape == mels.real.shape == (16, 128, 100)
    assert not torch.equal(mels.recon, mels.real)


def test_training_reduces_the_infonce_loss(trained):
    _, history = trained
    losses = [h["loss"] for h in history]
    assert len(losses) == TINY.steps
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_embeddings_are_unit_norm_and_the_audio_path_matches_the_mel_path(trained, clips):
    embedder, _ = trained
    audio = clips[1][:5]
    z = embed_audio(embedder, audio, RATE)
    assert z.shape == (5, 16) and torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(z, embed_mel(embedder, waveform_mels(embedder.mel, audio, RATE)), atol=1e-6)
    z22 = embed_audio(embedder, torch.from_numpy(audio)[:, None], RATE)  # [N, 1, S] is accepted too
    assert torch.allclose(z, z22, atol=1e-6)
    with pytest.raises(ValueError, match="mono"):
        embed_audio(embedder, torch.zeros(2, 2, 100), RATE)


def test_trained_embedder_finds_partner_chunks_above_chance(trained, mels):
    embedder, _ = trained
    accuracy = chunk_retrieval_accuracy(embedder, mels, batch_size=16, rounds=4)
    assert accuracy > 3 * (1 / 16)


def test_embedder_save_load_round_trip_and_tamper_check(trained, clips, tmp_path):
    embedder, _ = trained
    save_embedder(embedder, tmp_path / "emb", metrics={"top1": 1.0})
    loaded = load_embedder(tmp_path / "emb")
    assert loaded.chunk_frames == embedder.chunk_frames and loaded.settings == embedder.settings
    assert torch.equal(embed_audio(loaded, clips[1][:3], RATE), embed_audio(embedder, clips[1][:3], RATE))
    assert json.loads((tmp_path / "emb" / MODEL_JSON).read_text())["metrics"] == {"top1": 1.0}
    weights = tmp_path / "emb" / MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="sha256"):
        load_embedder(tmp_path / "emb")
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_embedder(tmp_path)


def test_embed_train_cli_on_tiny_data(tmp_path):
    synthesize_dataset(tmp_path / "data", 24, seed=5, workers=1)
    out = tmp_path / "emb"
    code = main(
        [
            "embed",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "embed.steps=3",
            "embed.batch_size=8",
            "embed.channels=8",
            "embed.dim=8",
        ]
    )
    assert code == 0
    meta = json.loads((out / MODEL_JSON).read_text())
    assert meta["kind"] == "embedder" and meta["metrics"]["steps"] == 3 and (out / "config.yaml").is_file()
    assert load_embedder(out).dim == 8
    assert main(["embed", "train", "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2


# --------------------------------------------------------------------------------------------
# Joint scorer
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder("minilm")


def test_sentence_embeddings_match_mean_pooled_unpadded_states(text_encoder):
    prompts = ["a slow flute melody", "Fast bells with a rock beat, high register", "a slow flute melody"]
    pooled = sentence_embeddings(text_encoder, prompts, batch_size=2)
    cond = text_encoder.encode(prompts[:2])
    mask = cond.mask.float()[..., None]
    reference = torch.nn.functional.normalize((cond.states * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(pooled[:2], reference, atol=1e-5)
    assert torch.equal(pooled[0], pooled[2])


def test_joint_scorer_trains_scores_and_round_trips(clips, mels, text_encoder, tmp_path):
    records = clips[0]
    captions = [r["caption"] for r in records]
    cfg = ScorerConfig(channels=16, dim=16, text_hidden=32, steps=30, batch_size=16, crop_seconds=3.0)
    scorer, history = train_scorer(cfg, captions, mels, text_encoder)
    assert np.mean([h["loss"] for h in history[-5:]]) < np.mean([h["loss"] for h in history[:5]])
    scores = text_adherence(scorer, captions[:4], clips[1][:4], RATE)
    assert scores.shape == (4,) and bool(((scores >= -1) & (scores <= 1)).all())
    found = text_to_audio_recall(
        scorer,
        captions,
        mels.real.float(),
        num_candidates=16,
        rounds=2,
        attributes=[r["attributes"] for r in records],
    )
    assert found["chance"] == 1 / 16 and found["stated_match_at_1"] >= found["recall_at_1"]
    save_scorer(scorer, tmp_path / "scorer")
    loaded = load_scorer(tmp_path / "scorer")
    assert isinstance(loaded, JointScorer)
    loaded.text_encoder = text_encoder
    assert torch.allclose(text_adherence(loaded, captions[:4], clips[1][:4], RATE), scores, atol=1e-5)
    with pytest.raises(ValueError, match="one clip per prompt"):
        text_adherence(scorer, captions[:3], clips[1][:4], RATE)


# --------------------------------------------------------------------------------------------
# transformers CLAP adapter
# --------------------------------------------------------------------------------------------


def _tiny_clap(directory) -> None:
    """A random-weight ClapModel and a processor (16 mel bins, 2-s window, a character-level tokenizer)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for ch in "abcdefghijklmnopqrstuvwxyz\u0120":
        vocab[ch] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(
        vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt")
    )
    extractor = ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=48000,
        hop_length=480,
        max_length_s=2,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    config = ClapConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "max_position_embeddings": 64,
            "projection_dim": 8,
        },
        audio_config={
            "spec_size": 64,
            "num_mel_bins": 16,
            "patch_size": 2,
            "patch_stride": 2,
            "window_size": 4,
            "hidden_size": 16,
            "patch_embeds_hidden_size": 8,
            "depths": [1, 1],
            "num_attention_heads": [2, 2],
            "projection_dim": 8,
            "enable_fusion": False,
        },
        projection_dim=8,
    )
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(directory / "clap")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory / "clap")


def test_clap_adapter_scores_resampled_audio(tmp_path):
    _tiny_clap(tmp_path)
    scorer = load_scorer(tmp_path / "clap")
    assert isinstance(scorer, ClapScorer) and scorer.sample_rate == 48000
    wav = torch.from_numpy(
        np.stack([synth_record(4, i, RATE, 1.0)[1] for i in range(3)]).astype(np.float32) / 32767
    )
    prompts = ["slow flute", "fast bells", "deep bass"]
    scores = text_adherence(scorer, prompts, wav, RATE)
    text, audio = scorer.embed_text(prompts), scorer.embed_audio(wav, RATE)
    assert text.shape == audio.shape == (3, 8)
    assert torch.allclose(scores, (text * audio).sum(-1), atol=1e-6)
    assert torch.allclose(audio, scorer.embed_audio(wav, RATE), atol=1e-6)  # 1-s clips: no random crop
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="CLAP"):
        load_scorer(tmp_path / "other")


def test_random_eq_tilts_each_view_smoothly_and_zero_strength_is_identity() -> None:
    x = torch.randn(4, 32, 10)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(random_eq(x, 0.0, gen), x)
    y = random_eq(x, 1.0, torch.Generator().manual_seed(0))
    shift = y - x  # [B, D, T]: one curve per view, the same at every frame
    assert torch.allclose(shift, shift[:, :, :1].expand_as(shift), atol=1e-6)
    assert not torch.allclose(shift[0], shift[1])
    curve = shift[:, :, 0]
    assert (
        curve.diff(dim=1).abs().max(dim=1).values < curve.abs().max(dim=1).values
    ).all()  # smooth over bands


def test_random_band_shift_moves_each_view_by_whole_bands_within_the_limit() -> None:
    x = torch.arange(10, dtype=torch.float32)[None, :, None].expand(6, 10, 3).clone()  # band index as value
    assert torch.equal(random_band_shift(x, 0, torch.Generator().manual_seed(0)), x)
    y = random_band_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    shifts = (x[:, 5, 0] - y[:, 5, 0]).tolist()  # a middle band reads the band `shift` below it
    assert all(s in (-2.0, -1.0, 0.0, 1.0, 2.0) for s in shifts) and len(set(shifts)) > 1
    for row, s in zip(y, shifts):
        assert torch.equal(
            row[:, 0], (torch.arange(10) - s).clamp(0, 9).float()
        )  # edges repeat the edge band
        assert torch.equal(row[:, 0], row[:, 2])  # the same shift at every frame
