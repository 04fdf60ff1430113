"""The diversity measures as judges: names, the primary measure, shared oracle readings, the evaluation's
per-prompt columns, and the validation on real clips (groups sharing every attribute must score lower
than groups that vary the unstated ones, under every measure)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import musicdistill.judges.judging as judging
from musicdistill.codec.factory import fit_codec
from musicdistill.config import CodecConfig, EmbedConfig, OracleConfig, SecondEmbedConfig
from musicdistill.data.synth import synth_record
from musicdistill.data.tokens import encode_clips
from musicdistill.evaluation.evaluate import EvalPrompts, score_system
from musicdistill.evaluation.metrics import bootstrap_ci
from musicdistill.judges.embedder import save_embedder, train_embedder
from musicdistill.judges.judging import (
    DIVERSITY_MEASURES,
    CodedClips,
    Judges,
    build_judges,
    diversity_measures,
    primary_diversity_measure,
    spectral_judge,
)
from musicdistill.judges.log_mel import clip_mels, front_end_settings
from musicdistill.judges.oracle import fit_oracle, save_oracle
from musicdistill.judges.reference_groups import reference_groups
from musicdistill.judges.second_embedder import save_second_embedder, train_second_embedder

RATE = 16000


def groups_as_codes(codec, groups) -> dict[str, torch.Tensor]:
    return {
        kind: encode_clips(codec, torch.from_numpy(audio.reshape(-1, audio.shape[-1])), RATE)
        for kind, audio in groups.audio.items()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A small codec, an oracle and untrained-but-saved embedders fitted on 48 clips of 1 s."""
    root = tmp_path_factory.mktemp("measures")
    records, pcm = zip(*(synth_record(8, i, RATE, 1.0) for i in range(48)))
    audio = torch.from_numpy(np.stack(pcm).astype(np.float32) / 32767.0)
    codec_cfg = CodecConfig(n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000)
    codec = fit_codec(codec_cfg, audio, RATE)
    mels = clip_mels(audio, RATE, front_end_settings(codec_cfg, RATE), codec)
    save_oracle(fit_oracle(OracleConfig(iters=20), mels, [r["attributes"] for r in records]), root / "oracle")
    reward, _ = train_embedder(EmbedConfig(channels=8, dim=8, chunk_seconds=0.4, steps=2, batch_size=8), mels)
    save_embedder(reward, root / "embedder")
    second, _ = train_second_embedder(
        SecondEmbedConfig(
            channels=4, hidden=16, dim=8, expander=16, chunk_seconds=0.5, steps=2, batch_size=8
        ),
        mels,
    )
    save_second_embedder(second, root / "second_embedder")
    judges = build_judges(
        torch.device("cpu"), root / "embedder", root / "oracle", second_dir=root / "second_embedder"
    )
    return {"codec": codec, "judges": judges, "audio": audio, "records": list(records)}


def test_every_measure_has_its_stable_name(small) -> None:
    judges = small["judges"]
    assert judges.second is not None and judges.attribute_diversity is not None
    codes = small["codec"].encode(small["audio"][:12].unsqueeze(1), RATE)
    attributes = [r["attributes"] for r in small["records"][:12:3]]
    out = diversity_measures(CodedClips(small["codec"], codes), attributes, 3, judges)
    assert tuple(sorted(out)) == tuple(sorted(DIVERSITY_MEASURES))
    for name, values in out.items():
        assert values.shape == (4,), name
    with pytest.raises(ValueError, match="G >= 2"):
        diversity_measures(CodedClips(small["codec"], codes), attributes, 2, judges)


def test_the_oracle_reads_each_set_of_clips_once(small, monkeypatch) -> None:
    calls = []
    real = judging.hand_features_mel
    monkeypatch.setattr(judging, "hand_features_mel", lambda o, m: calls.append(len(m)) or real(o, m))
    judges = small["judges"]
    clips = CodedClips(small["codec"], small["codec"].encode(small["audio"][:8].unsqueeze(1), RATE))
    attributes = [r["attributes"] for r in small["records"][:8]]
    judges.adherence(clips, attributes)
    judges.attribute_diversity(clips, attributes[::2], 2)
    judges.expected_attribute_diversity(clips, attributes[::2], 2)
    judges.independent(clips)
    assert calls == [8]


def test_score_system_writes_the_new_per_prompt_columns(small) -> None:
    codes = small["codec"].encode(small["audio"][:8].unsqueeze(1), RATE)
    prompts = EvalPrompts(
        prompts=[r["caption"] for r in small["records"][:8:2]],
        attributes=[r["attributes"] for r in small["records"][:8:2]],
    )
    per, embeddings = score_system(CodedClips(small["codec"], codes), prompts, 2, small["judges"])
    for name in ("attribute_diversity", "diversity_second", "vendi_second", "diversity_independent"):
        assert len(per[name]) == 4, name
    assert "second" in embeddings


def test_the_primary_measure_is_attribute_diversity_where_defined_else_the_second_embedder() -> None:
    columns = {
        "attribute_diversity": [0.2, math.nan],
        "diversity_second": [0.5, 0.4],
        "diversity_reward": [0.1],
    }
    assert primary_diversity_measure(columns) == "attribute_diversity"
    columns["attribute_diversity"] = [math.nan, math.nan]  # every prompt states every attribute
    assert primary_diversity_measure(columns) == "diversity_second"
    assert primary_diversity_measure({"diversity_reward": [0.3]}) is None


def test_spectral_features_rank_varied_groups_above_same_attribute_groups() -> None:
    """The no-training view (spectral features of the audio) on real clips: the paired interval of
    vary - same over 32 prompts clears 0."""
    groups = reference_groups(32, 3, seed=3, sample_rate=RATE, duration=2.0)
    judges = Judges(independent=spectral_judge)
    scores = {
        kind: diversity_measures(
            CodedClips(_AudioCodec(), torch.from_numpy(a.reshape(-1, a.shape[-1]))),
            groups.attributes,
            3,
            judges,
        )["diversity_independent"]
        for kind, a in groups.audio.items()
    }
    assert bootstrap_ci(scores["vary"] - scores["same"], num_resamples=2000).low > 0


class _AudioCodec:
    """A stand-in codec whose 'codes' are the audio itself (no decode_mel: judges read audio)."""

    sample_rate = RATE

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


@pytest.mark.slow
def test_every_measure_ranks_varied_groups_above_same_attribute_groups_on_real_clips() -> None:
    """bench/validate_measures.py's first check at a small scale: judges trained on 320 clips of 4 s,
    24 fresh prompts x 3 clips per group, read through the codec; the paired interval must clear 0."""
    records, pcm = zip(*(synth_record(5, i, RATE, 4.0) for i in range(320)))
    audio = torch.from_numpy(np.stack(pcm).astype(np.float32) / 32767.0)
    codec_cfg = CodecConfig(n_mels=64, num_codebooks=4, cardinality=32, kmeans_iters=5, max_fit_frames=5000)
    codec = fit_codec(codec_cfg, audio, RATE)
    mels = clip_mels(audio, RATE, front_end_settings(codec_cfg, RATE), codec)
    oracle = fit_oracle(OracleConfig(iters=50), mels, [r["attributes"] for r in records])
    reward, _ = train_embedder(
        EmbedConfig(channels=16, dim=16, chunk_seconds=0.8, steps=30, batch_size=32), mels
    )
    second, _ = train_second_embedder(
        SecondEmbedConfig(
            channels=4, hidden=32, dim=16, expander=32, chunk_seconds=1.0, steps=30, batch_size=32
        ),
        mels,
    )
    independent, adherence = judging.oracle_judges(oracle)
    judges = Judges(
        independent=independent,
        reward=judging.reward_judge(reward),
        second=judging.second_judge(second),
        adherence=adherence,
        attribute_diversity=judging.attribute_diversity_judge(oracle),
    )
    groups = reference_groups(24, 3, seed=1, sample_rate=RATE, duration=4.0)
    scores = {
        kind: diversity_measures(CodedClips(codec, codes), groups.attributes, 3, judges)
        for kind, codes in groups_as_codes(codec, groups).items()
    }
    for name in DIVERSITY_MEASURES:
        diff = bootstrap_ci(scores["vary"][name] - scores["same"][name], num_resamples=2000)
        assert diff.low > 0, f"{name}: vary - same = {diff}"
