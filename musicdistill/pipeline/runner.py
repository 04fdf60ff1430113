"""The main job: every stage in order, skipping stages whose outputs match their config.

A stage reruns when its marker is missing, its hash differs, it is forced, or a stage it depends
on ran in this invocation.

Consecutive stages marked ``concurrent`` that do not depend on each other (the students, the
offline distillation, the CFG front's evaluation) share a pool of worker processes when the run is
on the CPU and the machine has more than one core: one worker per core (at most one per stage),
each with ``cores // workers`` torch threads. A worker that finishes takes the next stage in order,
so no core waits for the slowest stage of a batch. Small models spend most of a sampling step in
per-operation overhead that a second thread does not shorten, so two one-thread processes finish
sooner than two two-thread runs in turn. On a GPU the stages run one after the other (they would
share the card). Each stage's marker is written as soon as it finishes; progress bars are off in
the child processes, and each logs its own lines.

Each stage writes into ``<run_dir>/<stage>/`` and, when it finishes, a ``stage.json`` marker holding
the hash of the config sections it reads plus the hashes of the stages it depends on. A stage is
skipped when its marker matches; ``force`` reruns named stages (and so everything downstream,
whose upstream hash changes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
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
    """

    name: str
    run: Callable[[Config, Path, Path, bool], dict[str, Any]]
    reads: tuple[str, ...]
    after: tuple[str, ...] = ()
    estimate_s: float = 30.0
    doc: str = ""
    concurrent: bool = False


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


def _child_stage(
    stage: Stage, cfg: Config, out_dir: Path, resume: bool, threads: int, level: int
) -> tuple[dict[str, Any], float]:
    """Run one stage in a worker process (spawned: fresh interpreter, own torch threads, no progress bars)."""
    import torch

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


def _run_together(
    batch: list[tuple[Stage, str, Path, bool]],
    cfg: Config,
    workers: int,
    threads: int,
    on_done: Callable[[Stage, float], None],
) -> None:
    """Run stages on ``workers`` spawned processes, each stage as soon as a worker is free, in order.

    Each finished stage gets its marker at once and is reported to ``on_done``; the first failure is
    raised after every stage has ended.
    """
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    failed: list[BaseException] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, tuple[Stage, str, Path]] = {
            pool.submit(_child_stage, stage, cfg, out_dir, resume, threads, level): (stage, h, out_dir)
            for stage, h, out_dir, resume in batch
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                stage, h, out_dir = pending.pop(future)
                exc = future.exception()
                if exc is not None:
                    log.error("%s failed: %s", stage.name, exc)
                    failed.append(exc)
                    continue
                summary, seconds = future.result()
                _finish(stage, out_dir, h, summary, seconds)
                on_done(stage, seconds)
    if failed:
        raise failed[0]


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
    ordered = _order(stages)
    hashes: dict[str, str] = {}
    results: list[StageResult] = []
    ran: set[str] = set()
    remaining = sum(s.estimate_s for s in ordered)
    t_start = time.perf_counter()
    i = 0
    while i < len(ordered):
        stage = ordered[i]
        h, why = _plan(stage, cfg, hashes, ran, force, only)
        hashes[stage.name] = h
        if why is not None:
            log.info("[%d/%d] %s: skipped (%s)", i + 1, len(ordered), stage.name, why)
            remaining -= stage.estimate_s
            results.append(
                StageResult(
                    stage.name, True, 0.0, (_read_marker(run_dir / stage.name) or {}).get("summary", {}), why
                )
            )
            i += 1
            continue
        batch = [(stage, h)]
        while stage.concurrent and i + len(batch) < len(ordered):
            nxt = ordered[i + len(batch)]
            if not nxt.concurrent or any(a in {s.name for s, _ in batch} for a in nxt.after):
                break
            nh, nwhy = _plan(nxt, cfg, hashes, ran, force, only)
            if nwhy is not None:
                break
            hashes[nxt.name] = nh
            batch.append((nxt, nh))
        workers = concurrency_workers(cfg, len(batch))
        if not workers:
            batch = batch[:1]
        threads = concurrency_threads(cfg, len(batch))
        names = " + ".join(s.name for s, _ in batch)
        estimate = sum(s.estimate_s for s, _ in batch) / max(1, workers)
        log.info(
            "[%d/%d] %s: running%s (estimated %.0fs, about %.0fs left in all) - %s",
            i + 1,
            len(ordered),
            names,
            f" on {workers} processes, {threads} thread(s) each" if len(batch) > 1 else "",
            estimate,
            remaining,
            "; ".join(s.doc for s, _ in batch),
        )

        def done(s: Stage, seconds: float, summary: dict[str, Any] | None = None, position: int = i) -> None:
            nonlocal remaining
            remaining -= s.estimate_s
            log.info(
                "[%d/%d] %s: done in %.1fs (%.0fs elapsed)",
                position + 1,
                len(ordered),
                s.name,
                seconds,
                time.perf_counter() - t_start,
            )
            marker = (
                summary if summary is not None else (_read_marker(run_dir / s.name) or {}).get("summary", {})
            )
            results.append(StageResult(s.name, False, seconds, marker))
            ran.add(s.name)

        started = [(s, sh, *_start(s, cfg, sh, force)) for s, sh in batch]
        if len(batch) > 1:
            _run_together(started, cfg, workers, threads, done)
        else:
            t0 = time.perf_counter()
            summary = stage.run(cfg, run_dir, started[0][2], started[0][3]) or {}
            seconds = time.perf_counter() - t0
            _finish(stage, started[0][2], h, summary, seconds)
            done(stage, seconds, summary)
        i += len(batch)
    order = {s.name: n for n, s in enumerate(ordered)}
    results.sort(key=lambda r: order[r.name])
    timing = {r.name: {"skipped": r.skipped, "seconds": round(r.seconds, 2)} for r in results}
    atomic_write_text(run_dir / "timings.json", json.dumps(timing, indent=2))
    return results
