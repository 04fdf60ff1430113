"""The public Python API: ``musicdistill.load`` on checkpoints, run folders (roles, merges) and
MusicGen folders; ``Model.generate``; the README's and docs' Python examples, executed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import musicdistill
from musicdistill.config import load_config, save_config
from musicdistill.storage.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "demo"))
sys.path.insert(0, str(ROOT / "tests"))
from test_demo import build_demo_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run folder: base, a beta = 0 and a beta = 15 student, and the run's config."""
    paths = build_demo_run(tmp_path_factory.mktemp("api") / "run")
    save_config(
        load_config(None, ["distill.gamma=2.5", "generate.cfg_scale=4.0"]), paths["root"] / "config.yaml"
    )
    return paths["root"]


def test_import_is_light_and_lists_the_api() -> None:
    assert {"load", "Model", "distill", "merge", "evaluate", "save_wav"} <= set(dir(musicdistill))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        musicdistill.nope  # noqa: B018


def test_a_checkpoint_generates_audio_the_same_for_the_same_seed(run: Path) -> None:
    model = musicdistill.load(run / "distill_beta0", device="cpu")
    assert model.default_cfg_scale == 1.0  # a distilled student samples without CFG
    audio, sample_rate = model.generate(["calm piano", "fast drums"], num_samples=2, duration=0.5, seed=3)
    assert audio.shape[0] == 4 and audio.dtype == np.float32 and sample_rate == 16000
    assert abs(audio.shape[1] / sample_rate - 0.5) < 0.1
    again, _ = model.generate(["calm piano", "fast drums"], num_samples=2, duration=0.5, seed=3)
    np.testing.assert_array_equal(audio, again)
    with pytest.raises(ValueError, match="temperature"):
        model.generate("calm piano", temperature=-1.0)


def test_run_roles_pick_the_students_and_the_teacher_scale(run: Path) -> None:
    assert musicdistill.load(run, "teacher", device="cpu").default_cfg_scale == 2.5
    assert musicdistill.load(run, "base", device="cpu").default_cfg_scale == 4.0
    quality = musicdistill.load(run, "quality", device="cpu")
    assert "quality" in quality.source and quality.default_cfg_scale == 1.0


def test_a_merge_is_the_lerp_of_the_two_students(run: Path) -> None:
    a = load_checkpoint(run / "distill_beta0").state_dict
    b = load_checkpoint(run / "distill_beta15").state_dict
    merged = musicdistill.load(run, "merge", lam=0.3, device="cpu")
    assert merged.default_cfg_scale == 1.0 and merged.provenance["lam"] == 0.3
    state = merged.loaded.model.state_dict()
    for key, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(state[key], 0.7 * value + 0.3 * b[key])
    musicdistill.load(run, "merge", lam=0.0, device="cpu")  # the ends are the students themselves


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, "pass a role, one of base, teacher, quality"),
        (("merge",), {}, ValueError, "lam is for the role 'merge'"),
        (("quality",), {"lam": 0.5}, ValueError, "lam is for the role 'merge'"),
        (("merge",), {"lam": 1.5}, ValueError, r"outside \[0, 1\] \(0 = the quality student"),
        (("control",), {}, FileNotFoundError, "no control student"),
    ],
)
def test_bad_roles_are_named_with_the_fix(run: Path, args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        musicdistill.load(run, *args, device="cpu", **kwargs)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        musicdistill.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        musicdistill.load(tmp_path, "quality")


def test_a_transformers_musicgen_folder_loads_with_its_guidance(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from musicgen_fixture import build_tiny_musicgen

    model, tokenizer = build_tiny_musicgen()
    model.generation_config.guidance_scale = 2.0
    model.save_pretrained(tmp_path / "mg")
    tokenizer.save_pretrained(tmp_path / "mg")
    loaded = musicdistill.load(tmp_path / "mg", device="cpu")
    assert loaded.default_cfg_scale == 2.0
    audio, sample_rate = loaded.generate("calm piano", duration=0.1, seed=0)
    assert audio.shape[0] == 1 and sample_rate == 24000


def python_examples(text: str) -> list[str]:
    """The ```python blocks of a Markdown text."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_every_python_example_in_the_readme_and_docs_runs(run: Path, tmp_path: Path, monkeypatch) -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    examples = [(f, code) for f in files for code in python_examples(f.read_text(encoding="utf-8"))]
    assert any(f.name == "README.md" for f, _ in examples), "the README shows the Python API"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "default").symlink_to(run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for file, code in examples:
        exec(compile(code, f"{file.name} example", "exec"), {"__name__": "__example__"})
    assert (tmp_path / "calm.wav").is_file()
