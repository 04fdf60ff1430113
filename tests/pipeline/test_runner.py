"""The stage runner: order, skipping by config hash, forcing, resuming an interrupted stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicdistill.config import load_config
from musicdistill.pipeline.runner import Stage, run_stages


def _stages(calls: list[tuple[str, bool]], fail_in: str | None = None) -> list[Stage]:
    def make(name: str):
        def run(cfg, run_dir: Path, out: Path, resume: bool) -> dict:
            calls.append((name, resume))
            if name == fail_in:
                raise RuntimeError("boom")
            (out / "result.txt").write_text(name)
            return {"name": name}

        return run

    return [
        Stage("b", make("b"), reads=("codec",), after=("a",)),
        Stage("a", make("a"), reads=("data",)),
        Stage("c", make("c"), reads=("model", "device"), after=("b",)),
    ]


def test_order_skip_and_rerun_downstream(tmp_path: Path) -> None:
    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=r"])
    calls: list[tuple[str, bool]] = []
    run_stages(cfg, _stages(calls))
    assert [c[0] for c in calls] == ["a", "b", "c"]
    calls.clear()
    results = run_stages(cfg, _stages(calls))
    assert calls == [] and all(r.skipped for r in results)
    # a change read by stage b reruns b and everything after it, not a
    cfg2 = load_config(None, [f"runs_dir={tmp_path}", "name=r", "codec.cardinality=64"])
    run_stages(cfg2, _stages(calls))
    assert [c[0] for c in calls] == ["b", "c"]
    calls.clear()
    run_stages(cfg2, _stages(calls), force=("a",))
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert (tmp_path / "r" / "config.yaml").is_file() and (tmp_path / "r" / "timings.json").is_file()


def test_interrupted_stage_resumes(tmp_path: Path) -> None:
    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=r"])
    calls: list[tuple[str, bool]] = []
    with pytest.raises(RuntimeError):
        run_stages(cfg, _stages(calls, fail_in="b"))
    calls.clear()
    run_stages(cfg, _stages(calls))
    assert calls == [("b", True), ("c", False)]


def test_unknown_stage_named(tmp_path: Path) -> None:
    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    with pytest.raises(ValueError, match="unknown stage 'z'"):
        run_stages(cfg, _stages([]), force=("z",))


# Stages that may run at the same time must be importable by a spawned process: module-level functions.
def concurrent_stage(cfg, run_dir: Path, out: Path, resume: bool) -> dict:
    import os

    import torch

    if out.name == "bad" and not (run_dir / "fixed").exists():
        raise RuntimeError("bad stage failed")
    (out / "pid.txt").write_text(f"{os.getpid()} {torch.get_num_threads()}")
    return {"pid": os.getpid()}


def _concurrent_stages() -> list[Stage]:
    return [
        Stage("good", concurrent_stage, reads=("distill",), concurrent=True),
        Stage("bad", concurrent_stage, reads=("distill",), concurrent=True),
    ]


def test_concurrent_stages_run_in_separate_processes_and_a_failure_keeps_the_other(tmp_path: Path) -> None:
    import os

    from musicdistill.pipeline.runner import concurrency_threads

    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=r", "device=cpu"])
    threads = concurrency_threads(cfg, 2)
    if not threads:
        pytest.skip("one CPU core: concurrent stages run one after the other")
    with pytest.raises(RuntimeError, match="bad stage failed"):
        run_stages(cfg, _concurrent_stages())
    run = tmp_path / "r"
    pid, used = (run / "good" / "pid.txt").read_text().split()
    assert int(pid) != os.getpid() and int(used) == threads
    assert (run / "good" / "stage.json").is_file() and not (run / "bad" / "stage.json").is_file()
    (run / "fixed").write_text("")
    results = run_stages(cfg, _concurrent_stages())
    assert [(r.name, r.skipped) for r in results] == [("good", True), ("bad", False)]
    assert (run / "bad" / "stage.json").is_file()


def always(cfg) -> bool:
    return True


def timed_stage(cfg, run_dir: Path, out: Path, resume: bool) -> dict:
    """Sleeps as long as its name says (``slow``: 2 s, else 0.2 s) and records when it ran."""
    import time

    start = time.time()
    time.sleep(2.0 if out.name == "slow" else 0.2)
    (out / "times.txt").write_text(f"{start} {time.time()}")
    return {}


def test_a_stage_starts_when_its_inputs_finish_and_one_that_needs_the_machine_waits(tmp_path: Path) -> None:
    from musicdistill.pipeline.runner import concurrency_workers

    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=r", "device=cpu"])
    if not concurrency_workers(cfg, 2):
        pytest.skip("one CPU core: stages run one after the other")
    stages = [
        Stage("slow", timed_stage, reads=("data",), concurrent=True, estimate_s=100),
        Stage("quick", timed_stage, reads=("data",), concurrent=True, estimate_s=1),
        Stage("next", timed_stage, reads=("data",), after=("quick",), concurrent=always),
        Stage("alone", timed_stage, reads=("data",), after=("next",)),
    ]
    run_stages(cfg, stages)

    def times(name: str) -> tuple[float, float]:
        start, end = (tmp_path / "r" / name / "times.txt").read_text().split()
        return float(start), float(end)

    slow, nxt, alone = times("slow"), times("next"), times("alone")
    assert nxt[0] >= times("quick")[1] and nxt[1] < slow[1]  # no wait for the batch's slowest stage
    assert alone[0] >= slow[1]  # a stage that needs every core waits until no worker is busy


def test_critical_path_counts_the_work_behind_a_stage() -> None:
    from musicdistill.pipeline.runner import critical_path

    def noop(cfg, run_dir: Path, out: Path, resume: bool) -> dict:
        return {}

    stages = [
        Stage("a", noop, reads=(), estimate_s=10),
        Stage("b", noop, reads=(), after=("a",), estimate_s=100),
        Stage("c", noop, reads=(), after=("a",), estimate_s=5),
        Stage("d", noop, reads=(), after=("b", "c"), estimate_s=1),
    ]
    assert critical_path(stages) == {"a": 111, "b": 101, "c": 6, "d": 1}


def sleeping_stage(cfg, run_dir: Path, out: Path, resume: bool) -> dict:
    """Writes its pid, then sleeps long enough to be killed."""
    import os
    import time

    (out / "pid.txt").write_text(str(os.getpid()))
    time.sleep(60)
    return {}


_KILL_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from musicdistill.config import load_config
from musicdistill.pipeline.runner import Stage, run_stages
from test_runner import sleeping_stage
cfg = load_config(None, ["runs_dir={runs}", "name=r", "device=cpu"])
stages = [Stage(n, sleeping_stage, reads=("data",), concurrent=True) for n in ("a", "b")]
run_stages(cfg, stages)
"""


def test_killing_the_main_job_ends_its_worker_processes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from musicdistill.pipeline.runner import concurrency_workers

    if not concurrency_workers(load_config(None, ["device=cpu"]), 2):
        pytest.skip("one CPU core: stages run in the main process")
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).resolve().parent), runs=str(tmp_path))
    main = subprocess.Popen([sys.executable, "-c", script])
    pid_file = tmp_path / "r" / "a" / "pid.txt"
    deadline = time.time() + 60
    while not pid_file.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert pid_file.is_file(), "the pooled stage never started"
    worker = int(pid_file.read_text())
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        stat = Path(f"/proc/{worker}/stat")
        if not stat.is_file() or stat.read_text().split(")")[-1].split()[0] in ("Z", "X"):
            return  # gone, or a zombie waiting to be reaped: it runs no more
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the worker process outlived the killed main job by 15 s")
