"""The main job: every stage in dependency order, skipping stages whose outputs match their config.

A stage reruns when its marker is missing, its hash differs, it is forced, or a stage it depends
on ran in this invocation.

Stages run as soon as the stages they depend on have finished. On the CPU of a machine with more
than one core, stages that may share it (``concurrent``: the judges, the students, the offline
distillation, the fronts' and the students' evaluations) run on a pool of worker processes, one
per core, each with ``cores // workers`` torch threads; a worker that finishes takes the ready
stage with the longest chain of estimated work still behind it (the critical path), so no core
waits for the slowest of a batch and the students start as soon as their inputs exist. Small
models spend most of a sampling step in per-operation overhead that a second thread does not
shorten, so two one-thread processes finish sooner than two two-thread runs in turn. Any other
stage (the data, the final statistics) runs in this process with every core, when no worker is
busy. On a GPU every stage runs in this process, one after the other (they would share the card).
Each stage's marker is written as soon as it finishes; progress bars are off in the worker
processes, and each logs its own lines.

Each stage writes into ``<run_dir>/<stage>/`` and, when it finishes, a ``stage.json`` marker holding
the hash of the config sections it reads plus the hashes of the stages it depends on. A stage is
skipped when its marker matches; ``force`` reruns named stages (and so everything downstream,
whose upstream hash changes). When a stage fails, no new stage starts; the running ones finish
(their markers are written) and the first failure is raised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicdistill.config import Config, config_hash, config_to_dict, save_config
from musicdistill.runtime import resolve_device
from musicdistill.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

MARKER = "stage.json"
STARTED = "stage.started.json"


@dataclass(frozen=True)
class Stage:
    """One step of the main job.

    ``run(cfg, run_dir, out_dir, resume)`` does the work and returns a JSON-serialisable summary;
    ``resume`` is True when an earlier attempt with the same hash started and did not finish.
    ``reads`` names the config sections (or dotted keys) whose values decide whether it must rerun.
    ``concurrent`` (True, or a module-level function of the config, so that it pickles for a worker
    process) says whether it may run on a pool worker beside other stages.
    """

    name: str
    run: Callable[[Config, Path, Path, bool], dict[str, Any]]
    reads: tuple[str, ...]
    after: tuple[str, ...] = ()
    estimate_s: float = 30.0
    doc: str = ""
    concurrent: bool | Callable[[Config], bool] = False

    def shares(self, cfg: Config) -> bool:
        """Whether this stage may run on a pool worker beside others (``concurrent``, or its answer for ``cfg``)."""
        return bool(self.concurrent(cfg) if callable(self.concurrent) else self.concurrent)


@dataclass
class StageResult:
    name: str
    skipped: bool
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def stage_hash(stage: Stage, cfg: Config, upstream: dict[str, str]) -> str:
    parts: dict[str, Any] = {}
    for name in stage.reads:
        value: Any = cfg
        for attr in name.split(
            "."
        ):  # a section ('distill'), a key ('run.merges'), an entry ('run.students.x')
            value = value.get(attr) if isinstance(value, dict) else getattr(value, attr)
        parts[name] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
    parts["__upstream__"] = {name: upstream[name] for name in stage.after}
    return config_hash(parts)


def _read_marker(out_dir: Path, name: str = MARKER) -> dict[str, Any] | None:
    path = out_dir / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _order(stages: list[Stage]) -> list[Stage]:
    names = {s.name for s in stages}
    for s in stages:
        missing = [a for a in s.after if a not in names]
        if missing:
            raise ValueError(f"stage {s.name} depends on unknown stage(s) {missing}")
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(a in {d.name for d in done} for a in s.after)]
        if not ready:
            raise ValueError(f"stage dependencies form a cycle among {[s.name for s in pending]}")
        done.append(ready[0])
        pending.remove(ready[0])
    return done


def _plan(
    stage: Stage,
    cfg: Config,
    hashes: dict[str, str],
    ran: set[str],
    force: tuple[str, ...],
    only: tuple[str, ...],
) -> tuple[str, str | None]:
    """(hash, why it is skipped or None when it runs) of one stage, given what ran before it."""
    h = stage_hash(stage, cfg, hashes)
    marker = _read_marker(cfg.run_dir / stage.name)
    if only and stage.name not in only:
        return h, "not selected"
    upstream_ran = any(a in ran for a in stage.after)
    if marker and marker.get("hash") == h and stage.name not in force and not upstream_ran:
        return h, "up to date"
    return h, None


def critical_path(stages: list[Stage]) -> dict[str, float]:
    """Each stage's estimated seconds plus the longest chain of estimates that depends on it."""
    children: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for a in s.after:
            children[a].append(s.name)
    estimate = {s.name: s.estimate_s for s in stages}
    path: dict[str, float] = {}
    for s in reversed(_order(stages)):
        path[s.name] = estimate[s.name] + max((path[c] for c in children[s.name]), default=0.0)
    return path


def concurrency_workers(cfg: Config, count: int) -> int:
    """Worker processes for ``count`` stages that may run together; 0 = run them one by one."""
    cores = os.cpu_count() or 1
    if count < 2 or cores < 2 or resolve_device(cfg.device).type != "cpu":
        return 0
    return min(count, cores)


def concurrency_threads(cfg: Config, count: int) -> int:
    """Torch threads per worker process when ``count`` stages may run together; 0 = one by one."""
    workers = concurrency_workers(cfg, count)
    return max(1, (os.cpu_count() or 1) // workers) if workers else 0


_WATCHING: list[int] = []  # the parent a worker process watches (set once per worker)


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker process: end it as soon as ``parent`` (the main job) is gone, killed or not, so a
    stopped run leaves no stage computing on its own."""
    if _WATCHING:
        return
    _WATCHING.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child_stage(
    stage: Stage, cfg: Config, out_dir: Path, resume: bool, threads: int, level: int, parent: int = 0
) -> tuple[dict[str, Any], float]:
    """Run one stage in a worker process (spawned: fresh interpreter, own torch threads, no progress
    bars); the worker ends with ``parent`` (the main job's pid) when it is given."""
    import torch

    if parent:
        _exit_with_parent(parent)
    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(  # force: a worker runs several stages, each logs under its own name
        level=level,
        format=f"%(asctime)s %(levelname)s [{stage.name}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    summary = stage.run(cfg, cfg.run_dir, out_dir, resume) or {}
    return summary, time.perf_counter() - t0


def _start(stage: Stage, cfg: Config, h: str, force: tuple[str, ...]) -> tuple[Path, bool]:
    """Prepare a stage's folder and started-marker; returns (out_dir, resume)."""
    out_dir = cfg.run_dir / stage.name
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _read_marker(out_dir, STARTED)
    resume = bool(started and started.get("hash") == h and stage.name not in force)
    (out_dir / MARKER).unlink(missing_ok=True)
    atomic_write_text(out_dir / STARTED, json.dumps({"stage": stage.name, "hash": h}))
    return out_dir, resume


def _finish(stage: Stage, out_dir: Path, h: str, summary: dict[str, Any], seconds: float) -> None:
    marker = {
        "stage": stage.name,
        "hash": h,
        "seconds": round(seconds, 2),
        "summary": summary,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(out_dir / MARKER, json.dumps(marker, indent=2, sort_keys=True))


@dataclass
class _Running:
    """A stage on a pool worker."""

    stage: Stage
    out_dir: Path


class _Schedule:
    """The run's bookkeeping: which stages finished (ran or skipped), their hashes and results."""

    def __init__(
        self, cfg: Config, stages: list[Stage], force: tuple[str, ...], only: tuple[str, ...]
    ) -> None:
        self.cfg, self.force, self.only = cfg, force, only
        self.ordered = _order(stages)
        self.position = {s.name: i for i, s in enumerate(self.ordered)}
        self.path = critical_path(self.ordered)
        self.hashes: dict[str, str] = {}
        self.ran: set[str] = set()
        self.finished: set[str] = set()
        self.started: set[str] = set()
        self.results: list[StageResult] = []
        self.remaining = sum(s.estimate_s for s in self.ordered)
        self.t_start = time.perf_counter()

    def label(self, stage: Stage) -> str:
        return f"[{self.position[stage.name] + 1}/{len(self.ordered)}] {stage.name}"

    def ready(self) -> list[Stage]:
        """Stages not started whose inputs have all finished, planned (those to skip are skipped here)."""
        while True:
            ready = [
                s
                for s in self.ordered
                if s.name not in self.started and all(a in self.finished for a in s.after)
            ]
            skipped = False
            for stage in ready:
                h, why = _plan(stage, self.cfg, self.hashes, self.ran, self.force, self.only)
                self.hashes[stage.name] = h
                if why is not None:
                    self.skip(stage, why)
                    skipped = True
            if not skipped:
                return ready

    def skip(self, stage: Stage, why: str) -> None:
        log.info("%s: skipped (%s)", self.label(stage), why)
        self.started.add(stage.name)
        self.finished.add(stage.name)
        self.remaining -= stage.estimate_s
        summary = (_read_marker(self.cfg.run_dir / stage.name) or {}).get("summary", {})
        self.results.append(StageResult(stage.name, True, 0.0, summary, why))

    def begin(self, stage: Stage, where: str) -> tuple[Path, bool]:
        self.started.add(stage.name)
        log.info(
            "%s: running%s (estimated %.0fs, about %.0fs of work left in all) - %s",
            self.label(stage),
            where,
            stage.estimate_s,
            self.remaining,
            stage.doc,
        )
        return _start(stage, self.cfg, self.hashes[stage.name], self.force)

    def done(self, stage: Stage, out_dir: Path, summary: dict[str, Any], seconds: float) -> None:
        _finish(stage, out_dir, self.hashes[stage.name], summary, seconds)
        self.remaining -= stage.estimate_s
        log.info(
            "%s: done in %.1fs (%.0fs elapsed)",
            self.label(stage),
            seconds,
            time.perf_counter() - self.t_start,
        )
        self.results.append(StageResult(stage.name, False, seconds, summary))
        self.ran.add(stage.name)
        self.finished.add(stage.name)

    def by_path(self, stages: list[Stage]) -> list[Stage]:
        """Longest chain of work behind first, then declared order."""
        return sorted(stages, key=lambda s: (-self.path[s.name], self.position[s.name]))


def _run_here(schedule: _Schedule, stage: Stage) -> None:
    """Run one stage in this process, with every torch thread."""
    out_dir, resume = schedule.begin(stage, "")
    t0 = time.perf_counter()
    summary = stage.run(schedule.cfg, schedule.cfg.run_dir, out_dir, resume) or {}
    schedule.done(stage, out_dir, summary, time.perf_counter() - t0)


def _pool_workers(cfg: Config, stages: list[Stage]) -> int:
    """Pool workers for the run: one per core (at most one per stage that may share), 0 = no pool."""
    return concurrency_workers(cfg, sum(s.shares(cfg) for s in stages))


def run_stages(
    cfg: Config,
    stages: list[Stage],
    force: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> list[StageResult]:
    """Run ``stages`` in dependency order under ``cfg.run_dir``; returns what each did."""
    known = {s.name for s in stages}
    for name in (*force, *only):
        if name not in known:
            raise ValueError(f"unknown stage '{name}'; stages are: {', '.join(s.name for s in stages)}")
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    schedule = _Schedule(cfg, stages, force, only)
    workers = _pool_workers(cfg, schedule.ordered)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers else 0
    if workers:
        _run_pooled(schedule, workers, threads)
    else:
        while ready := schedule.ready():
            _run_here(schedule, ready[0])
    order = schedule.position
    results = sorted(schedule.results, key=lambda r: order[r.name])
    timing = {r.name: {"skipped": r.skipped, "seconds": round(r.seconds, 2)} for r in results}
    atomic_write_text(run_dir / "timings.json", json.dumps(timing, indent=2))
    return results


def _run_pooled(schedule: _Schedule, workers: int, threads: int) -> None:
    """Run the stages with a pool of ``workers`` spawned processes for those that may share the machine.

    A stage that may not share runs here once no worker is busy; while one waits, no new stage starts
    on the pool. The first failure is raised once the running stages have ended.
    """
    cfg = schedule.cfg
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    failed: list[BaseException] = []
    running: dict[Future, _Running] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        while True:
            ready = [] if failed else schedule.ready()
            alone = [s for s in ready if not s.shares(cfg)]
            if alone and not running:
                _run_here(schedule, alone[0])
                continue
            if not alone:
                for stage in schedule.by_path(ready)[: workers - len(running)]:
                    where = f" on a worker process ({threads} thread{'s' if threads > 1 else ''})"
                    out_dir, resume = schedule.begin(stage, where)
                    future = pool.submit(
                        _child_stage, stage, cfg, out_dir, resume, threads, level, os.getpid()
                    )
                    running[future] = _Running(stage, out_dir)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                exc = future.exception()
                if exc is not None:
                    log.error("%s failed: %s", job.stage.name, exc)
                    failed.append(exc)
                    continue
                summary, seconds = future.result()
                schedule.done(job.stage, job.out_dir, summary, seconds)
    if failed:
        raise failed[0]
