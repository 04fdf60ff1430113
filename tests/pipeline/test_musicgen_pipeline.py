"""The main job on a pretrained MusicGen (``configs/musicgen-small.yaml``), with a tiny random MusicGen on disk.

The tiny model (from tests/model/test_musicgen.py) stands in for facebook/musicgen-small: a T5, a
4 x 64-code EnCodec at 24 kHz / 75 Hz and a 2-layer decoder, saved with ``save_pretrained`` the way
``huggingface-cli download`` lays out the real one. Its EnCodec is also saved on its own, as
``facebook/encodec_32khz`` is. Everything runs offline (HF_HUB_OFFLINE=1, see conftest.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from musicdistill.cli import main as cli_main
from musicdistill.codec.encodec_adapters import HFEncodecCodec
from musicdistill.config import CodecConfig, load_config
from musicdistill.data.tokens import load_token_set
from musicdistill.demo.loading import load_engine
from musicdistill.demo.requests import DemoRequest
from musicdistill.demo.run_folders import DemoPaths
from musicdistill.generation.sampling import generate
from musicdistill.merging import merge_checkpoints
from musicdistill.model.loading import (
    load_generator,
    resolve_codec_dir,
    save_musicgen_base,
    text_encoder_name,
)
from musicdistill.model.musicgen import MusicgenBackbone, musicgen_codec
from musicdistill.pipeline.main_job import main_job_stages
from musicdistill.pipeline.runner import run_stages
from musicdistill.storage.checkpoint import MODEL_FILE, file_sha256, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from musicgen_fixture import build_tiny_musicgen  # noqa: E402

K, V, SAMPLE_RATE, FRAME_RATE = 4, 64, 24000, 75.0
CLIPS = [  # (caption, split, frequency in Hz)
    ("a low sine drone", "train", 110.0),
    ("a bright whistle", "train", 880.0),
    ("a middle hum", "train", 330.0),
    ("a high beep", "train", 1320.0),
    ("a soft tone", "valid", 220.0),
    ("a sharp tone", "test", 660.0),
    ("a quiet tone", "test", 440.0),  # evaluation compares with at least two real held-out clips
]
FAST_STAGES = ("data", "codec", "tokens", "base", "quality")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``musicgen``: a MusicGen directory (model + tokenizer); ``encodec``: its EnCodec on its own."""
    root = tmp_path_factory.mktemp("models")
    model, tokenizer = build_tiny_musicgen()
    model.save_pretrained(root / "musicgen")
    tokenizer.save_pretrained(root / "musicgen")
    model.audio_encoder.save_pretrained(root / "encodec")
    return {"musicgen": root / "musicgen", "encodec": root / "encodec"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Seven captioned 0.6 s tones at 24 kHz: four for training, one for validation, two for test."""
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(int(0.6 * SAMPLE_RATE)) / SAMPLE_RATE
    rows = []
    for i, (caption, split, freq) in enumerate(CLIPS):
        sf.write(root / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SAMPLE_RATE)
        rows.append(json.dumps({"path": f"clip{i}.wav", "caption": caption, "split": split}))
    path = root / "manifest.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def musicgen_config(runs_dir: Path, models: dict[str, Path], manifest: Path, *extra: str):
    """``configs/musicgen-small.yaml`` pointed at the tiny models, shortened to seconds on a CPU."""
    overrides = [
        f"runs_dir={runs_dir}",
        "name=mg",
        "device=cpu",
        f"data.manifest={manifest}",
        f"data.sample_rate={SAMPLE_RATE}",
        "data.duration=0.5",
        "data.workers=1",
        "data.min_duration=0.1",
        f"codec.pretrained={models['encodec']}",
        f"model.pretrained={models['musicgen']}",
        "distill.steps=2",
        "distill.prompts_per_step=2",
        "distill.lr=0.001",
        "distill.warmup_steps=0",
        "distill.bf16=false",
        "distill.eval_prompts=1",
        "distill.eval_every=2",
        "distill.ckpt_every=2",
        "generate.top_k=0",  # the tiny model has V = 64 codes, fewer than MusicGen's top_k=250
        *extra,
    ]
    return load_config(ROOT / "configs" / "musicgen-small.yaml", overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory, models, manifest) -> Path:
    """A run folder after the data, codec, tokens, base and quality (2 distillation steps) stages."""
    cfg = musicgen_config(tmp_path_factory.mktemp("runs"), models, manifest)
    results = run_stages(cfg, main_job_stages(), only=FAST_STAGES)
    assert [r.name for r in results if not r.skipped] == list(FAST_STAGES)
    return cfg.run_dir


def test_codec_and_tokens_use_the_encodec_the_musicgen_reads(run):
    meta = json.loads((run / "codec" / "codec.json").read_text())
    assert (meta["kind"], meta["num_codebooks"], meta["cardinality"]) == ("encodec_hf", K, V)
    tokens = load_token_set(run / "tokens")
    assert tokens.codes.shape[:2] == (len(CLIPS), K)
    assert tokens.num_frames == round(0.5 * FRAME_RATE)
    assert int(tokens.codes.min()) >= 0 and int(tokens.codes.max()) < V


def test_base_stage_exports_the_pretrained_decoder_unchanged(run, models):
    base = load_checkpoint(run / "base")
    prov = base.provenance
    assert (prov["kind"], prov["backbone"], prov["step"]) == ("base", "musicgen", 0)
    assert prov["pretrained"] == str(models["musicgen"].resolve())
    assert resolve_codec_dir(run / "base", prov) == (run / "codec").resolve()
    assert base.config["model"]["backbone"] == "musicgen"
    pretrained = MusicgenBackbone.from_pretrained(models["musicgen"]).state_dict()
    assert base.state_dict.keys() == pretrained.keys()
    assert all(torch.equal(base.state_dict[k], pretrained[k]) for k in pretrained)
    assert not (run / "base" / "checkpoints").exists()  # nothing was trained


def test_distilled_musicgen_records_its_base_and_moved_away_from_it(run, models):
    base, quality = load_checkpoint(run / "base"), load_checkpoint(run / "quality")
    prov = quality.provenance
    assert (prov["kind"], prov["beta"], prov["step"]) == ("distilled", 0.0, 2)
    assert prov["base_hash"] == file_sha256(run / "base" / MODEL_FILE)
    assert (prov["backbone"], prov["pretrained"]) == ("musicgen", str(models["musicgen"].resolve()))
    changed = [k for k in base.state_dict if not torch.equal(base.state_dict[k], quality.state_dict[k])]
    assert "enc_to_dec_proj.weight" in changed and any(k.startswith("decoder.lm_heads") for k in changed)


def test_merged_musicgen_loads_and_generates_audio(run, models, tmp_path):
    out = merge_checkpoints(run / "base", run / "quality", 0.5, out=tmp_path / "merged")
    base, quality, merged = (load_checkpoint(d) for d in (run / "base", run / "quality", out))
    key = "enc_to_dec_proj.weight"
    torch.testing.assert_close(merged.state_dict[key], (base.state_dict[key] + quality.state_dict[key]) / 2)
    assert (merged.provenance["backbone"], merged.provenance["pretrained"]) == (
        "musicgen",
        str(models["musicgen"].resolve()),
    )

    loaded = load_generator(out)
    assert isinstance(loaded.model, MusicgenBackbone) and not loaded.model.training
    assert loaded.text_encoder.name == text_encoder_name(out) == str(models["musicgen"].resolve())
    assert isinstance(loaded.codec, HFEncodecCodec) and loaded.codec.sample_rate == SAMPLE_RATE
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], merged.state_dict[k]) for k in merged.state_dict)
    result = generate(
        loaded.model,
        ["a low sine drone"],
        num_samples=2,
        duration=0.2,
        cfg_scale=3.0,
        codec=loaded.codec,
        text_encoder=loaded.text_encoder,
    )
    assert result.codes.shape == (2, K, round(0.2 * FRAME_RATE))
    assert result.audio.shape[:2] == (2, 1) and torch.isfinite(result.audio).all()


def test_demo_engine_serves_musicgen_checkpoints_with_a_cfg_teacher(run):
    paths = DemoPaths(quality=run / "quality", diversity=run / "base", teacher=run / "base")
    engine = load_engine(paths)  # the base is the quality model's own base, so the two merge
    assert isinstance(engine.teacher.model, MusicgenBackbone)
    assert engine.teacher.text_encoder is engine.student.text_encoder  # one T5 for both
    request = DemoRequest(
        prompt="a low sine drone",
        lam=0.5,
        num_variations=2,
        duration=0.2,
        seed=0,
        temperature=1.0,
        compare_teacher=True,
    )
    student, teacher = engine.run(request).systems
    assert (student.rows_per_sample, teacher.rows_per_sample) == (1, 2)
    assert student.audio.shape[0] == teacher.audio.shape[0] == 2 and student.sample_rate == SAMPLE_RATE


def test_codec_falls_back_to_the_encodec_inside_the_musicgen_directory(models):
    own = musicgen_codec(CodecConfig(kind="melrvq"), models["musicgen"], SAMPLE_RATE)
    separate = HFEncodecCodec.from_pretrained(str(models["encodec"]), num_codebooks=K)
    assert (own.num_codebooks, own.cardinality, own.frame_rate) == (K, V, FRAME_RATE)
    wav = torch.sin(torch.linspace(0, 300, 4800)).view(1, 1, -1)
    assert torch.equal(own.encode(wav, SAMPLE_RATE), separate.encode(wav, SAMPLE_RATE))
    with pytest.raises(ValueError, match="codec.num_codebooks=4"):
        musicgen_codec(CodecConfig(kind="encodec_hf", num_codebooks=2), models["musicgen"], SAMPLE_RATE)


def test_a_moved_musicgen_directory_is_found_through_config_yaml(tmp_path, models, manifest):
    moved = tmp_path / "musicgen-copy"
    shutil.copytree(models["musicgen"], moved)
    cfg = musicgen_config(tmp_path, {**models, "musicgen": moved}, manifest)
    ckpt = save_musicgen_base(cfg, tmp_path / "base")
    moved.rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="set model.pretrained in"):
        load_generator(ckpt)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    config["model"]["pretrained"] = str(tmp_path / "elsewhere")
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_generator(ckpt, with_codec=False)
    assert loaded.codec is None and loaded.text_encoder.name == str((tmp_path / "elsewhere").resolve())


def test_pretrain_command_refuses_a_musicgen_backbone(tmp_path, capsys):
    code = cli_main(
        ["pretrain", "--config", str(ROOT / "configs" / "musicgen-small.yaml"), f"runs_dir={tmp_path}"]
    )
    assert code == 2
    assert "musicdistill run CONFIG --only codec --only base" in capsys.readouterr().err


@pytest.mark.slow
def test_whole_main_job_on_a_tiny_musicgen(tmp_path, models, manifest):
    """Every stage, judges and evaluation included; user data has no attribute labels, so no oracle."""
    cfg = musicgen_config(
        tmp_path,
        models,
        manifest,
        "embed.steps=2",
        "embed.batch_size=4",
        "embed.chunk_seconds=0.2",
        "scorer.steps=2",
        "scorer.batch_size=4",
        "scorer.crop_seconds=0.3",
        "run.students={quality: {role: quality}, diversity: {role: diversity, beta: 1.0}}",
        "run.merges=[{a: quality, b: diversity, lambdas: [0.5]}]",
        "evaluate.num_prompts=1",
        "evaluate.samples_per_prompt=2",
        "evaluate.bootstrap=100",
        "run.cfg_scales=[3.0]",
        "run.temperatures=[]",
        "evaluate.save_prompts=0",
    )
    results = run_stages(cfg, main_job_stages(cfg))
    assert all(not r.skipped for r in results)
    run = cfg.run_dir
    assert (run / "embedder").is_dir() and (run / "scorer").is_dir() and not (run / "oracle").exists()
    assert (
        load_checkpoint(run / "merges" / "quality-diversity" / "lam_0.50").provenance["backbone"]
        == "musicgen"
    )
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert {"base", "base CFG 3", "quality (beta=0)", "merge lambda=0.5"} <= set(metrics["systems"])
