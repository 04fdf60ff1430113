"""Sharded distillation (distill.parallel=fsdp) on the CPU with gloo: two processes against one,
FSDP against DDP on-policy, the tiny native model and a tiny random MusicGen, SIGKILL and resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_resume import ROOT, assert_same_tensors, reference_and_resumed, torchrun  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "distill_fixture.py"


def _run(out: Path, steps: int, *extra: str, processes: int = 1) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = torchrun(processes) if processes > 1 else []
    proc = subprocess.run(
        [sys.executable, *launcher, str(FIXTURE), str(out), str(steps), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (out.parent / "launch.log").write_text(proc.stdout + proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if "Error" in line and "Warning" not in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + proc.stdout[-2000:]


def _assert_close(a: Path, b: Path, atol: float = 1e-5) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=atol, rtol=1e-4, msg=key)


@pytest.mark.parametrize("musicgen", [False, True], ids=["native", "musicgen"])
def test_two_fsdp_processes_match_one_process(tmp_path: Path, musicgen: bool) -> None:
    """Offline distillation (every rank holds the same teacher pool and takes half of each step's
    rows): two sharded processes end where one process does, within fp32 tolerance."""
    extra = ["--mode", "teacher", *(["--musicgen"] if musicgen else [])]
    _run(tmp_path / "one" / "d", 3, *extra)
    _run(tmp_path / "fsdp" / "d", 3, *extra, "--parallel", "fsdp", processes=2)
    _assert_close(tmp_path / "one" / "d" / "model.safetensors", tmp_path / "fsdp" / "d" / "model.safetensors")
    shards = list((tmp_path / "fsdp" / "d" / "checkpoints").glob("step_*/shards/*.safetensors"))
    assert len(shards) >= 2  # each rank wrote its own shards


def test_a_replicated_teacher_and_activation_checkpointing_change_no_result(tmp_path: Path) -> None:
    """The teacher replicated instead of sharded, and each block recomputed in the backward: the same
    parameters as one process, within fp32 tolerance (on the CPU the replica stays fp32)."""
    extra = ["--mode", "teacher"]
    _run(tmp_path / "one" / "d", 3, *extra)
    options = ["--parallel", "fsdp", "--teacher", "replicate", "--checkpointing"]
    _run(tmp_path / "fsdp" / "d", 3, *extra, *options, processes=2)
    _assert_close(tmp_path / "one" / "d" / "model.safetensors", tmp_path / "fsdp" / "d" / "model.safetensors")
    log = (tmp_path / "fsdp" / "launch.log").read_text()
    assert "the student sharded with activation checkpointing, the teacher replicated" in log


def test_fsdp_on_policy_matches_ddp(tmp_path: Path) -> None:
    """On-policy (each rank samples its own rollouts through the gathered student, with the diversity
    reward): the sharded run ends where DDP does on the same processes, within fp32 tolerance."""
    _run(tmp_path / "ddp" / "d", 3, "--parallel", "ddp", processes=2)
    _run(tmp_path / "fsdp" / "d", 3, "--parallel", "fsdp", processes=2)
    _assert_close(tmp_path / "ddp" / "d" / "model.safetensors", tmp_path / "fsdp" / "d" / "model.safetensors")


def test_fsdp_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    ref, killed = tmp_path / "ref" / "d", tmp_path / "k" / "d"
    reference_and_resumed(FIXTURE, ref, killed, 6, 2, "--parallel", "fsdp", launcher=torchrun(2))
    assert_same_tensors(ref / "model.safetensors", killed / "model.safetensors")


def test_a_sharded_snapshot_is_not_resumed_as_a_whole_one(tmp_path: Path) -> None:
    out = tmp_path / "f" / "d"
    _run(out, 2, "--parallel", "fsdp", processes=2)
    proc = subprocess.run(
        [sys.executable, str(FIXTURE), str(out), "4", "--resume"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "holds shards written by an FSDP run" in proc.stderr


def test_a_model_without_blocks_is_refused_with_the_setting_to_use() -> None:
    from torch import nn

    from musicdistill.training.fsdp import blocks_of

    with pytest.raises(ValueError, match="use distill.parallel=ddp for it"):
        blocks_of(nn.Linear(2, 2))


def test_a_single_process_run_ignores_fsdp_and_trains_whole(tmp_path: Path) -> None:
    """Without torchrun there is nothing to shard: the student trains whole and writes whole snapshots."""
    _run(tmp_path / "one" / "d", 2, "--parallel", "fsdp")
    snaps = list((tmp_path / "one" / "d" / "checkpoints").glob("step_*"))
    assert snaps and all((s / "model.safetensors").is_file() and not (s / "shards").exists() for s in snaps)
