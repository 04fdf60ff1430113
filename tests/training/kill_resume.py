"""Resume after SIGKILL, checked the same way for every training loop (pretraining, distillation).

A fixture script ``SCRIPT OUT STEPS [--resume] [--step-sleep S]`` runs a real loop on tiny parts. The
check runs it once uninterrupted, once killed right after a given snapshot, then resumes the killed
run; the caller compares the two final parameter files bit for bit (:func:`assert_same_tensors`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import musicdistill.loop_kit as loop

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: Path, out: Path, steps: int, *extra: str) -> subprocess.Popen:
    """Start ``script OUT STEPS EXTRA...`` on one thread, with the repository on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(steps), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(proc: subprocess.Popen) -> None:
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()


def reference_and_resumed(script: Path, ref: Path, killed: Path, steps: int, kill_after: int) -> None:
    """Run ``script`` into ``ref``; into ``killed`` SIGKILL it once snapshot ``kill_after`` is published,
    then resume it there to the end."""
    finish(run_script(script, ref, steps))
    proc = run_script(script, killed, steps, "--step-sleep", "2")
    pointer = killed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        pointer.is_file() and pointer.read_text().strip() == f"step_{kill_after:07d}"
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "model.safetensors").exists(), "the run finished before it was killed"
    finish(run_script(script, killed, steps, "--resume"))


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two safetensors files hold the same names and bit-identical tensors."""
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def slow_snapshots(seconds: float) -> None:
    """Sleep after every snapshot the loop kit writes, so that a test can kill the run right after one."""
    original = loop.save_snapshot

    def slow_snapshot(*args, **kwargs):
        result = original(*args, **kwargs)
        time.sleep(seconds)
        return result

    loop.save_snapshot = slow_snapshot
