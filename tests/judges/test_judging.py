"""The judges of codes: which rendering each reads (decode_mel or audio), and that distillation and
evaluation share them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig, EmbedConfig, OracleConfig, ScorerConfig
from musicdistill.data.synth import synth_record
from musicdistill.judges.embedder import build_embedder, embed_audio, embed_mel, save_embedder
from musicdistill.judges.judging import CodedClips, build_judges, golden_metric_fn, reward_embed_fn
from musicdistill.judges.log_mel import clip_mels, front_end_settings
from musicdistill.judges.oracle import (
    attribute_adherence,
    fit_oracle,
    hand_features,
    hand_features_mel,
    predict_attributes,
    predict_attributes_mel,
    save_oracle,
)
from musicdistill.judges.scorer import build_scorer, save_scorer, text_adherence, text_adherence_mel
from musicdistill.judges.spectral import spectral_embedding, spectral_features
from musicdistill.model.text import load_text_encoder

RATE = 16000
CODEC = CodecConfig(
    n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000, griffin_lim_iters=4
)


class CountingCodec:
    """A codec's decoding entry points, counted; ``with_mel=False`` hides the log-mel ones, as EnCodec has none."""

    def __init__(self, codec, with_mel: bool) -> None:
        self.codec, self.calls = codec, []
        self.sample_rate = codec.sample_rate
        if with_mel:
            self.settings, self.encode_mel, self.decode_mel = (
                codec.settings,
                codec.encode_mel,
                self._decode_mel,
            )

    def _decode_mel(self, codes: torch.Tensor) -> torch.Tensor:
        self.calls.append(("decode_mel", codes.shape[0]))
        return self.codec.decode_mel(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self.calls.append(("decode", codes.shape[0]))
        return self.codec.decode(codes)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    """A tiny mel codec, codes of 8 synthesised clips, and saved oracle, (untrained) embedder and scorer."""
    root = tmp_path_factory.mktemp("judges")
    records = [synth_record(3, i, RATE, 1.0) for i in range(8)]
    audio = torch.from_numpy(np.stack([pcm / 32767.0 for _, pcm in records]).astype(np.float32))
    codec = fit_codec(CODEC, audio, RATE)
    settings = front_end_settings(CODEC, RATE)
    mels = clip_mels(audio, RATE, settings, codec)
    attributes = [r["attributes"] for r, _ in records]
    oracle = fit_oracle(OracleConfig(), mels, attributes)
    save_oracle(oracle, root / "oracle")
    torch.manual_seed(0)
    embedder = build_embedder(EmbedConfig(channels=8, dim=8, chunk_seconds=0.5), settings)
    embedder.encoder.set_statistics(mels.real.float())
    save_embedder(embedder, root / "embedder")
    text_encoder = load_text_encoder("minilm")
    scorer = build_scorer(
        ScorerConfig(channels=8, dim=8, text_hidden=16),
        settings,
        text_encoder.model.config.hidden_size,
        text_encoder,
    )
    scorer.audio.set_statistics(mels.real.float())
    save_scorer(scorer, root / "scorer")
    judges = build_judges(torch.device("cpu"), root / "embedder", root / "oracle", root / "scorer")
    return {
        "root": root,
        "codec": codec,
        "codes": codec.encode(audio.unsqueeze(1), RATE),
        "oracle": oracle,
        "embedder": embedder,
        "scorer": scorer,
        "judges": judges,
        "attributes": attributes,
        "prompts": [r["caption"] for r, _ in records],
    }


def test_with_the_mel_codec_every_judge_reads_decode_mel_once_and_never_audio(parts) -> None:
    codec, codes, oracle, judges = parts["codec"], parts["codes"], parts["oracle"], parts["judges"]
    counting = CountingCodec(codec, with_mel=True)
    clips = CodedClips(counting, codes)
    mel = codec.decode_mel(codes)
    adherence = judges.adherence(clips, parts["attributes"])
    wanted = [
        attribute_adherence(p, a) for p, a in zip(predict_attributes_mel(oracle, mel), parts["attributes"])
    ]
    np.testing.assert_allclose(adherence, wanted)
    assert torch.allclose(judges.independent(clips), F.normalize(hand_features_mel(oracle, mel), dim=-1))
    assert torch.allclose(judges.reward(clips), embed_mel(parts["embedder"], mel), atol=1e-6)
    scores = judges.text_adherence(parts["prompts"], clips)
    assert np.allclose(scores, text_adherence_mel(parts["scorer"], parts["prompts"], mel).numpy(), atol=1e-6)
    assert counting.calls == [("decode_mel", 8)]


def test_without_decode_mel_every_judge_reads_the_audio_decoded_once(parts) -> None:
    codec, codes, oracle, judges = parts["codec"], parts["codes"], parts["oracle"], parts["judges"]
    counting = CountingCodec(codec, with_mel=False)
    clips = CodedClips(counting, codes)
    wav = codec.decode(codes)[:, 0]
    adherence = judges.adherence(clips, parts["attributes"])
    predicted = predict_attributes(oracle, wav, RATE)
    np.testing.assert_allclose(
        adherence, [attribute_adherence(p, a) for p, a in zip(predicted, parts["attributes"])]
    )
    assert torch.allclose(judges.independent(clips), F.normalize(hand_features(oracle, wav, RATE), dim=-1))
    assert torch.allclose(judges.reward(clips), embed_audio(parts["embedder"], wav, RATE), atol=1e-6)
    scores = judges.text_adherence(parts["prompts"], clips)
    assert np.allclose(
        scores, text_adherence(parts["scorer"], parts["prompts"], wav, RATE).numpy(), atol=1e-6
    )
    assert counting.calls == [("decode", 8)]


def test_the_oracle_reads_mels_and_audio_differently(parts) -> None:
    """The two renderings are not interchangeable (otherwise the tests above could not tell them apart)."""
    codec, codes, oracle = parts["codec"], parts["codes"], parts["oracle"]
    from_mel = hand_features_mel(oracle, codec.decode_mel(codes))
    from_audio = hand_features(oracle, codec.decode(codes)[:, 0], RATE)
    assert not torch.allclose(from_mel, from_audio, atol=1e-3)


def test_distillation_reward_and_golden_metric_are_the_evaluation_judges(parts) -> None:
    codec, codes, judges, root = parts["codec"], parts["codes"], parts["judges"], parts["root"]
    reward = reward_embed_fn(root / "embedder", codec, torch.device("cpu"))
    assert torch.allclose(reward(codes), judges.reward(CodedClips(codec, codes)), atol=1e-6)
    golden = golden_metric_fn(root / "oracle", codec)
    attributes = [None, *parts["attributes"][1:]]
    per_clip = judges.adherence(CodedClips(codec, codes), attributes)
    assert math.isnan(per_clip[0])
    assert golden(codes, attributes) == pytest.approx(float(np.nanmean(per_clip)))
    assert math.isnan(golden(codes, [None] * len(attributes)))


def test_without_an_oracle_the_independent_embedding_is_spectral_features_of_the_rendering(parts) -> None:
    codec, codes = parts["codec"], parts["codes"]
    judges = build_judges(torch.device("cpu"))
    assert judges.reward is judges.adherence is judges.text_adherence is None
    on_mel = judges.independent(CodedClips(codec, codes))
    assert torch.allclose(on_mel, spectral_features(codec.decode_mel(codes)))
    on_audio = judges.independent(CodedClips(CountingCodec(codec, with_mel=False), codes))
    assert torch.allclose(on_audio, spectral_embedding(codec.decode(codes)[:, 0], RATE))
    assert on_mel.shape == (8, 2 * CODEC.n_mels) and torch.allclose(on_mel.norm(dim=-1), torch.ones(8))


def test_audio_rows_decode_only_the_rows_asked_for_unless_all_are_decoded(parts) -> None:
    codec, codes = parts["codec"], parts["codes"]
    counting = CountingCodec(codec, with_mel=True)
    clips = CodedClips(counting, codes)
    assert clips.audio_rows(3).shape == (3, codes.shape[-1] * codec.settings.hop_length)
    assert counting.calls == [("decode", 3)]
    clips.audio()
    assert torch.equal(clips.audio_rows(3), clips.audio()[:3]) and counting.calls == [
        ("decode", 3),
        ("decode", 8),
    ]


def test_adherence_needs_one_attribute_entry_per_clip(parts) -> None:
    clips = CodedClips(parts["codec"], parts["codes"])
    with pytest.raises(ValueError, match="one per clip"):
        parts["judges"].adherence(clips, parts["attributes"][:3])
