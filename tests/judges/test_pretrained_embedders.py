"""Pretrained audio embedders from local folders (tiny random CLAP and wav2vec 2.0 models): the
reward and the Fréchet space without training one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicdistill.data.synth import synth_record
from musicdistill.judges.judging import build_judges, reward_embed_fn
from musicdistill.judges.pretrained_embedders import (
    ClapAudioEmbedder,
    HiddenStateEmbedder,
    load_audio_embedder,
)
from musicdistill.pipeline.stages import link_pretrained_embedder

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
from test_embedder import _tiny_clap  # noqa: E402

RATE = 16000


def clips(n: int = 3, seconds: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(
        np.stack([synth_record(4, i, RATE, seconds)[1] for i in range(n)]).astype(np.float32) / 32767
    )


def tiny_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0).save_pretrained(folder)
    return folder


def test_a_clap_folder_embeds_audio_as_the_reward(tmp_path: Path) -> None:
    _tiny_clap(tmp_path)
    embedder = load_audio_embedder(tmp_path / "clap")
    assert isinstance(embedder, ClapAudioEmbedder) and "CLAP" in embedder.name
    emb = embedder.embed_audio(clips(), RATE)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_an_audio_encoder_folder_is_mean_pooled_and_deterministic(tmp_path: Path) -> None:
    embedder = load_audio_embedder(tiny_wav2vec2(tmp_path / "w2v"))
    assert isinstance(embedder, HiddenStateEmbedder) and embedder.sample_rate == 16000
    first = embedder.embed_audio(clips(), RATE)
    assert first.shape == (3, 16)
    torch.testing.assert_close(first, embedder.embed_audio(clips(), RATE))
    assert not torch.allclose(first[0], first[1])  # different clips, different embeddings
    torch.testing.assert_close(
        embedder.embed_audio(clips()[:, ::2].contiguous(), RATE // 2).norm(dim=-1), torch.ones(3)
    )


REMOTE_CODE = """
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class TinyAudioConfig(PretrainedConfig):
    model_type = "tiny_audio"

    def __init__(self, hidden_size=8, **kwargs):
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class TinyAudioModel(PreTrainedModel):
    config_class = TinyAudioConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Conv1d(1, config.hidden_size, 400, stride=320)
        self.post_init()

    def forward(self, input_values, **kwargs):
        return BaseModelOutput(last_hidden_state=self.proj(input_values.unsqueeze(1)).transpose(1, 2))
"""


def tiny_remote_code_model(folder: Path) -> Path:
    """A folder whose model is Python code of its own (``auto_map``), as the released MERT's is."""
    import importlib.util

    from transformers import Wav2Vec2FeatureExtractor

    source = folder.parent / "modeling_tiny_audio.py"
    source.write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("modeling_tiny_audio", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_tiny_audio"] = module  # save_pretrained copies the module's file
    spec.loader.exec_module(module)
    module.TinyAudioConfig.register_for_auto_class()
    module.TinyAudioModel.register_for_auto_class("AutoModel")
    torch.manual_seed(0)
    module.TinyAudioModel(module.TinyAudioConfig()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0).save_pretrained(folder)
    del sys.modules["modeling_tiny_audio"]
    return folder


def test_folders_it_cannot_use_are_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither model.json"):
        load_audio_embedder(tmp_path)
    (tmp_path / "remote").mkdir()
    (tmp_path / "remote" / "config.json").write_text(
        json.dumps({"model_type": "mert_model", "auto_map": {"AutoModel": "modeling_MERT.MERTModel"}})
    )
    with pytest.raises(ValueError, match="embed.trust_remote_code=true"):
        load_audio_embedder(tmp_path / "remote")


def test_a_folder_with_its_own_code_loads_only_when_trusted(tmp_path: Path, monkeypatch) -> None:
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(
        dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules")
    )  # transformers copies the code there
    folder = tiny_remote_code_model(tmp_path / "mert_like")
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="runs no code from model folders unless told to"):
        load_audio_embedder(folder)
    embedder = load_audio_embedder(folder, trust_remote_code=True)
    assert isinstance(embedder, HiddenStateEmbedder) and embedder.sample_rate == 24000
    emb = embedder.embed_audio(clips(), RATE)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_the_run_links_a_pretrained_embedder_and_its_judges_name_it(tmp_path: Path) -> None:
    from test_demo import build_demo_run

    from musicdistill.codec.factory import load_codec

    run = build_demo_run(tmp_path / "run")
    source = tiny_wav2vec2(tmp_path / "w2v")
    summary = link_pretrained_embedder(source, run["root"] / "embedder")
    assert (run["root"] / "embedder").is_symlink() and summary["pretrained"] == str(source.resolve())
    judges = build_judges(torch.device("cpu"), embedder_dir=run["root"] / "embedder")
    assert "Wav2Vec2Model" in judges.reward_name
    codec = load_codec(run["root"] / "codec")
    codes = torch.randint(0, codec.cardinality, (4, codec.num_codebooks, 30))
    reward = reward_embed_fn(run["root"] / "embedder", codec, torch.device("cpu"))(codes)
    assert reward.shape == (4, 16)
    link_pretrained_embedder(source, run["root"] / "embedder")  # again: the link is replaced
    assert (run["root"] / "embedder").resolve() == source.resolve()
