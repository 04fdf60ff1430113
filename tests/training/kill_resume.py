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


def torchrun(processes: int) -> list[str]:
    """The launcher prefix that runs a script on ``processes`` local processes (gloo on the CPU),
    rendezvousing on a free port (``--standalone``)."""
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def run_script(
    script: Path, out: Path, steps: int, *extra: str, launcher: list[str] | None = None
) -> subprocess.Popen:
    """Start ``script OUT STEPS EXTRA...`` on one thread per process, with the repository on the path,
    in a session of its own (:func:`kill_tree` also reaches the workers a launcher starts)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *(launcher or []), str(script), str(out), str(steps), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _children() -> dict[int, list[int]]:
    """Each live process's children, from ``/proc`` (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process under it, and wait until none runs. torchrun starts each
    worker in a session of its own, so killing the launcher's process group alone leaves the
    workers training (and writing snapshots) beside the resumed run."""
    pids = [proc.pid, *_descendants(proc.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a killed process is still running"


def finish(proc: subprocess.Popen) -> None:
    assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()


def reference_and_resumed(
    script: Path,
    ref: Path,
    killed: Path,
    steps: int,
    kill_after: int,
    *extra: str,
    launcher: list[str] | None = None,
) -> None:
    """Run ``script`` into ``ref``; into ``killed`` SIGKILL it (the launcher and every process under
    it) once snapshot ``kill_after`` is published, then resume it there to the end."""
    finish(run_script(script, ref, steps, *extra, launcher=launcher))
    proc = run_script(script, killed, steps, *extra, "--step-sleep", "2", launcher=launcher)
    pointer = killed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        pointer.is_file() and pointer.read_text().strip() == f"step_{kill_after:07d}"
    ):
        time.sleep(0.05)
    kill_tree(proc)
    assert not (killed / "model.safetensors").exists(), "the run finished before it was killed"
    finish(run_script(script, killed, steps, *extra, "--resume", launcher=launcher))


def assert_same_tensors(a: Path, b: Path) -> None:
    """Two safetensors files hold the same names and bit-identical tensors."""
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def slow_snapshots(seconds: float) -> None:
    """Sleep after every snapshot the loop kit or a sharded run writes, so that a test can kill the
    run right after one."""
    import musicdistill.training.distill as distill_loop

    def slowed(original):
        def slow_snapshot(*args, **kwargs):
            result = original(*args, **kwargs)
            time.sleep(seconds)
            return result

        return slow_snapshot

    loop.save_snapshot = slowed(loop.save_snapshot)
    distill_loop.save_sharded_snapshot = slowed(distill_loop.save_sharded_snapshot)
