"""The memory plan: its tables for the public MusicGen sizes, its choice of setting, the command,
and its figures against the measured peak tensor memory of small runs on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musicdistill.config import load_config
from musicdistill.training.memory_plan import GIB, MUSICGEN_SIZES, distill_memory, model_size_of
from musicdistill.training.memory_probe import TensorMemoryProbe
from musicdistill.training.plan_report import recommend, settings_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_resume import ROOT, torchrun  # noqa: E402

MEMORY_FIXTURE = Path(__file__).resolve().parent / "memory_fixture.py"


def test_musicgen_sizes_match_the_published_decoders() -> None:
    params = {name: size.params / 1e9 for name, size in MUSICGEN_SIZES.items()}
    assert params["musicgen-small"] == pytest.approx(0.42, abs=0.01)
    assert params["musicgen-medium"] == pytest.approx(1.84, abs=0.02)
    assert params["musicgen-large"] == pytest.approx(3.26, abs=0.03)


def test_ddp_keeps_everything_whole_and_fsdp_divides_it_by_the_gpus() -> None:
    dc = load_config(None, ["distill.prompts_per_step=8", "distill.group_size=4"]).distill
    large = MUSICGEN_SIZES["musicgen-large"]
    ddp = distill_memory(large, dc, 500, 8, "ddp")
    fsdp = distill_memory(large, dc, 500, 8, "fsdp", teacher="shard")
    p = large.params
    assert (ddp.weights, ddp.gradients, ddp.optimizer, ddp.teacher) == (4 * p, 4 * p, 8 * p, 4 * p)
    assert (fsdp.weights, fsdp.optimizer, fsdp.teacher) == (4 * p / 8, 8 * p / 8, 4 * p / 8)
    assert fsdp.rollouts > ddp.rollouts  # FSDP gathers the whole student (bf16) to sample
    # the arithmetic: 13 GB fp32 weights, 13 GB gradients, 26 GB AdamW for musicgen-large
    assert ddp.weights / 1e9 == pytest.approx(13.0, abs=0.1) and ddp.optimizer / 1e9 == pytest.approx(
        26.1, abs=0.2
    )
    settings = settings_for(large, dc, 500, 8)
    assert not settings[0].fits(40 * GIB) and settings[2].fits(40 * GIB)
    assert recommend(settings, 8, 40) == "use: distill.parallel=fsdp distill.fsdp_teacher=replicate"
    assert not settings[0].fits(80 * GIB)  # DDP's buckets put it past an 80 GB card
    small = settings_for(MUSICGEN_SIZES["musicgen-small"], dc, 500, 8)
    assert recommend(small, 8, 80) == "use: distill.parallel=ddp"
    assert recommend(settings, 1, 16).startswith("nothing fits 1 GPU(s) of 16 GiB")


def test_activation_checkpointing_shrinks_the_student_pass() -> None:
    dc = load_config(None, []).distill
    size = MUSICGEN_SIZES["musicgen-medium"]
    plain = distill_memory(size, dc, 500, 4, "fsdp")
    ckpt = distill_memory(
        size, dc.__class__(**{**dc.__dict__, "activation_checkpointing": True}), 500, 4, "fsdp"
    )
    assert ckpt.student_pass < plain.student_pass and ckpt.weights == plain.weights


def test_plan_command_prints_the_table_and_a_setting(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "musicdistill", "plan", "--config", str(ROOT / "configs" / "default.yaml")]
    proc = subprocess.run(
        [*args, "--gpus", "8", "--gpu-memory", "40", "--model", "musicgen-large", "--seconds", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "musicgen-large: 3,257.0M trainable parameters" in proc.stdout
    assert "phase: student pass" in proc.stdout and "use: distill.parallel=fsdp" in proc.stdout
    native = subprocess.run([*args, "--gpus", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert native.returncode == 0 and "native generator:" in native.stdout, native.stderr
    bad = subprocess.run([*args, "--gpus", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--gpus 0 must be >= 1" in bad.stderr
    missing = [
        *args[:-1],
        str(ROOT / "configs" / "musicgen-small.yaml"),
        f"model.pretrained={tmp_path / 'none'}",
    ]
    no_folder = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=120)
    assert no_folder.returncode != 0 and "config.json is missing" in no_folder.stderr
    assert "--model musicgen-small" in no_folder.stderr


def test_probe_counts_live_tensors_and_their_peak() -> None:
    with TensorMemoryProbe() as probe:
        a = torch.zeros(1000)  # 4,000 bytes
        b = torch.zeros(500)  # 2,000
        del a
        c = torch.zeros(250)  # 1,000
    assert probe.peak == 6000 and probe.live == 3000
    del b, c


def _measured(tmp_path: Path, *extra: str, processes: int = 1) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = torchrun(processes) if processes > 1 else []
    out = tmp_path / "m" / "d"
    proc = subprocess.run(
        [sys.executable, *launcher, str(MEMORY_FIXTURE), str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("memory_rank*.json"))]


@pytest.mark.parametrize(
    "extra,processes",
    [((), 1), (("--musicgen",), 1), (("--parallel", "ddp"), 2), (("--parallel", "fsdp"), 2)],
    ids=["native", "musicgen", "ddp-2", "fsdp-2"],
)
def test_plan_is_within_20_percent_of_the_measured_peak(tmp_path: Path, extra: tuple, processes: int) -> None:
    records = _measured(tmp_path, *extra, processes=processes)
    assert len(records) == processes
    for r in records:
        assert abs(r["measured"] / r["planned"] - 1) <= 0.20, r


def test_model_size_of_a_live_generator_counts_its_parameters() -> None:
    from musicdistill.model.generator import build_generator

    cfg = load_config(None, ["model.dim=64", "model.layers=3", "model.heads=4"])
    with torch.device("meta"):
        g = build_generator(cfg.model, 4, 128, 32)
    size = model_size_of(g)
    assert size.params == sum(p.numel() for p in g.parameters())
    assert (size.layers, size.dim, size.ffn) == (3, 64, 256)
    assert size.root_params == size.params - 3 * sum(p.numel() for p in g.blocks[0].parameters())
