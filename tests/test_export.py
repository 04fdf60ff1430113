"""``musicdistill export``: a transformers MusicGen folder whose own ``generate`` needs no CFG and gives
our tokens, a self-contained native folder, and a model card with beta, gamma, lambda and the claims."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import musicdistill
from musicdistill.api.export import export
from musicdistill.cli import main
from musicdistill.config import config_to_dict, load_config, save_config
from musicdistill.generation.sampling import sample_tokens
from musicdistill.storage.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "demo"))
sys.path.insert(0, str(ROOT / "tests"))
from test_demo import build_demo_run  # noqa: E402

CLAIMS = [
    {"id": "C2", "statement": "the student matches the teacher", "verdict": "holds"},
    {"id": "C4", "statement": "a merge beats the CFG front", "verdict": "unresolved"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    paths = build_demo_run(tmp_path_factory.mktemp("export") / "run")
    save_config(load_config(None, ["distill.gamma=2.5"]), paths["root"] / "config.yaml")
    (paths["root"] / "evaluate").mkdir()
    (paths["root"] / "evaluate" / "metrics.json").write_text(json.dumps({"claims": CLAIMS}))
    return paths["root"]


def test_a_native_merge_exports_to_a_folder_that_loads_alone(run: Path, tmp_path: Path) -> None:
    out = export(run, tmp_path / "merge-0.5", "merge", lam=0.5)
    assert {"model.safetensors", "config.yaml", "provenance.json", "codec", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    exported = musicdistill.load(out, device="cpu")
    original = musicdistill.load(run, "merge", lam=0.5, device="cpu")
    assert exported.default_cfg_scale == 1.0
    a, _ = exported.generate("calm piano", duration=0.5, seed=1)
    b, _ = original.generate("calm piano", duration=0.5, seed=1)
    np.testing.assert_array_equal(a, b)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| λ (merge coefficient, 0 = quality, 1 = diversity) | 0.5 |" in card
    assert "| C4 | unresolved | a merge beats the CFG front |" in card and "| C2 | holds |" in card


def test_the_card_of_a_student_names_beta_and_gamma(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", "--run", str(run), "--role", "diversity", "--out", str(tmp_path / "div")]) == 0
    card = (tmp_path / "div" / "README.md").read_text(encoding="utf-8")
    assert "| β (diversity reward weight) | 15 |" in card
    assert "| γ (CFG scale of the teacher) | 2.5 |" in card
    assert "exported:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--run", "RUN"], "--run needs --role"),
        (["--ckpt", "RUN", "--role", "merge"], "pass --run instead of --ckpt"),
        (["--run", "RUN", "--role", "merge"], "lam is for the role 'merge'"),
    ],
)
def test_bad_export_arguments_say_the_fix(run: Path, tmp_path: Path, capsys, argv, match) -> None:
    argv = [str(run) if a == "RUN" else a for a in argv]
    assert main(["export", *argv, "--out", str(tmp_path / "x")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def capture_codes(hf, monkeypatch) -> dict[str, torch.Tensor]:
    """A dict that receives the codes ``[B, K, T]`` transformers' ``generate`` decodes (``"codes"``)."""
    captured: dict[str, torch.Tensor] = {}
    decode = hf.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured["codes"] = codes[0].clone()  # [1, B, K, T] -> [B, K, T]
        return decode(codes, *args, **kwargs)

    monkeypatch.setattr(hf.audio_encoder, "decode", capture)
    return captured


@pytest.fixture(scope="module")
def musicgen_student(tmp_path_factory) -> Path:
    """A tiny random MusicGen folder and a 'distilled' checkpoint of its decoder (perturbed weights)."""
    pytest.importorskip("transformers")
    from musicgen_fixture import build_tiny_musicgen

    from musicdistill.model.musicgen import MusicgenBackbone

    root = tmp_path_factory.mktemp("mg")
    model, tokenizer = build_tiny_musicgen()
    model.generation_config.guidance_scale = 3.0  # what musicgen-small ships
    model.save_pretrained(root / "musicgen")
    tokenizer.save_pretrained(root / "musicgen")
    backbone = MusicgenBackbone.from_musicgen(model)
    gen = torch.Generator().manual_seed(5)
    state = {
        k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
        for k, v in backbone.state_dict().items()
    }
    cfg = load_config(
        None,
        ["model.backbone=musicgen", f"model.pretrained={root / 'musicgen'}", "generate.temperature=0.9"],
    )
    prov = {"kind": "distilled", "backbone": "musicgen", "pretrained": str(root / "musicgen"), "beta": 0.0}
    return save_checkpoint(
        root / "student", state, config_to_dict(cfg), {**prov, "gamma": 3.0, "role": "quality"}
    )


def test_transformers_generate_on_the_export_runs_no_cfg_and_gives_our_greedy_tokens(
    musicgen_student: Path, tmp_path: Path, monkeypatch
) -> None:
    from musicgen_fixture import FRAMES, K
    from transformers import AutoTokenizer, GenerationConfig, MusicgenForConditionalGeneration

    out = export(musicgen_student, tmp_path / "hf")
    config = GenerationConfig.from_pretrained(out)
    assert (config.guidance_scale, config.do_sample, config.temperature) == (1.0, True, 0.9)
    assert "CC-BY-NC 4.0" in (out / "README.md").read_text(encoding="utf-8")
    hf = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    rows: list[int] = []
    captured = capture_codes(hf, monkeypatch)
    hook = hf.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    prompts = ["calm piano", "fast drums and bass"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt", return_token_type_ids=False)
    try:  # the exported generation_config as it is; greedy, since seeded draws differ by design
        hf.generate(**batch, do_sample=False, max_new_tokens=FRAMES + K - 1)
    finally:
        hook.remove()
    assert set(rows) == {len(prompts) * K}  # one row per sample and codebook: no CFG rows
    ours = musicdistill.load(musicgen_student, device="cpu")
    cond = ours.loaded.text_encoder.encode(prompts)
    codes, _ = sample_tokens(ours.loaded.model, cond, FRAMES, temperature=0.0, cfg_scale=1.0)
    assert torch.equal(codes, captured["codes"])
    assert len(torch.unique(codes)) > 8


def test_transformers_seeded_sampling_on_the_export_gives_our_multinomial_tokens(
    musicgen_student: Path, tmp_path: Path, monkeypatch
) -> None:
    from musicgen_fixture import FRAMES, K
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from musicdistill.generation.spec import SamplingSpec

    out = export(musicgen_student, tmp_path / "hf")
    hf = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    captured = capture_codes(hf, monkeypatch)
    prompts = ["calm piano", "fast drums and bass"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt", return_token_type_ids=False)
    torch.manual_seed(7)  # transformers draws from the global generator
    hf.generate(**batch, max_new_tokens=FRAMES + K - 1)  # the exported config: sampling at T = 0.9, no CFG
    ours = musicdistill.load(musicgen_student, device="cpu")
    spec = SamplingSpec(cfg_scale=1.0, temperature=0.9, draw="multinomial")
    codes, _ = sample_tokens(
        ours.loaded.model,
        ours.loaded.text_encoder.encode(prompts),
        FRAMES,
        spec=spec,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(codes, captured["codes"])
    greedy, _ = sample_tokens(
        ours.loaded.model, ours.loaded.text_encoder.encode(prompts), FRAMES, temperature=0.0
    )
    assert not torch.equal(codes, greedy)  # sampled, not the greedy sequence


@pytest.fixture(scope="module")
def conditioned_musicgen(musicgen_student: Path, tmp_path_factory) -> Path:
    """``musicgen_student`` with a trained-looking diversity dial (role conditioned)."""
    from musicdistill.storage.checkpoint import load_checkpoint

    ck = load_checkpoint(musicgen_student)
    text_dim = ck.state_dict["enc_to_dec_proj.weight"].shape[1]
    gen = torch.Generator().manual_seed(6)
    state = dict(ck.state_dict) | {
        "dial.inp.weight": torch.randn(4, 1, generator=gen),
        "dial.inp.bias": torch.randn(4, generator=gen),
        "dial.out.weight": torch.randn(text_dim, 4, generator=gen),
        "dial.out.bias": torch.randn(text_dim, generator=gen),
    }
    cfg = dict(ck.config)
    prov = {
        **ck.provenance,
        "role": "conditioned",
        "dial": {"hidden": 4, "w_range": [0.0, 1.0], "beta_max": 30.0},
    }
    return save_checkpoint(tmp_path_factory.mktemp("cmg") / "conditioned", state, cfg, prov)


def test_a_musicgen_dial_starts_at_zero_and_exports_for_transformers_at_one_w(
    musicgen_student: Path, conditioned_musicgen: Path, tmp_path: Path, monkeypatch
) -> None:
    from musicgen_fixture import FRAMES, K
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    plain = musicdistill.load(musicgen_student, device="cpu")
    prompts = ["calm piano", "fast drums and bass"]
    cond = plain.loaded.text_encoder.encode(prompts)
    reference, _ = sample_tokens(plain.loaded.model, cond, FRAMES, temperature=0.0, cfg_scale=1.0)
    plain.loaded.model.attach_dial(4)  # fresh: output layer at zero, so nothing changes for any w
    for w in (0.0, 1.0):
        codes, _ = sample_tokens(
            plain.loaded.model, cond.with_dial(w), FRAMES, temperature=0.0, cfg_scale=1.0
        )
        assert torch.equal(codes, reference)

    ours = musicdistill.load(conditioned_musicgen, device="cpu")
    assert ours.conditioned
    with pytest.raises(ValueError, match="pass the w to export it at"):
        export(conditioned_musicgen, tmp_path / "no_w")
    out = export(conditioned_musicgen, tmp_path / "hf", w=0.8)
    assert "diversity weight w" in (out / "README.md").read_text(encoding="utf-8")
    hf = MusicgenForConditionalGeneration.from_pretrained(out).eval()
    captured = capture_codes(hf, monkeypatch)
    batch = AutoTokenizer.from_pretrained(out)(
        prompts, padding=True, return_tensors="pt", return_token_type_ids=False
    )
    hf.generate(**batch, do_sample=False, guidance_scale=1.0, max_new_tokens=FRAMES + K - 1)
    at_w, _ = sample_tokens(ours.loaded.model, cond.with_dial(0.8), FRAMES, temperature=0.0, cfg_scale=1.0)
    at_zero, _ = sample_tokens(ours.loaded.model, cond.with_dial(0.0), FRAMES, temperature=0.0, cfg_scale=1.0)
    assert torch.equal(at_w, captured["codes"]) and not torch.equal(at_w, at_zero)
