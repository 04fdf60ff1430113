"""The main job: every stage in order, skipping stages whose outputs match their config.

A stage reruns when its marker is missing, its hash differs, it is forced, or a stage it depends
on ran in this invocation.

Each stage writes into ``<run_dir>/<stage>/`` and, when it finishes, a ``stage.json`` marker holding
the hash of the config sections it reads plus the hashes of the stages it depends on. A stage is
skipped when its marker matches; ``force`` reruns named stages (and so everything downstream,
whose upstream hash changes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicdistill.atomic import atomic_write_text
from musicdistill.config import Config, config_hash, config_to_dict, save_config

log = logging.getLogger(__name__)

MARKER = "stage.json"
STARTED = "stage.started.json"


@dataclass(frozen=True)
class Stage:
    """One step of the main job.

    ``run(cfg, run_dir, out_dir, resume)`` does the work and returns a JSON-serialisable summary;
    ``resume`` is True when an earlier attempt with the same hash started and did not finish.
    ``reads`` names the config sections whose values decide whether it must rerun.
    """

    name: str
    run: Callable[[Config, Path, Path, bool], dict[str, Any]]
    reads: tuple[str, ...]
    after: tuple[str, ...] = ()
    estimate_s: float = 30.0
    doc: str = ""


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
        value = getattr(cfg, name)
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
    for i, stage in enumerate(ordered, 1):
        out_dir = run_dir / stage.name
        h = stage_hash(stage, cfg, hashes)
        hashes[stage.name] = h
        marker = _read_marker(out_dir)
        selected = not only or stage.name in only
        upstream_ran = any(a in ran for a in stage.after)
        if not selected or (marker and marker.get("hash") == h and stage.name not in force and not upstream_ran):
            why = "not selected" if not selected else "up to date"
            log.info("[%d/%d] %s: skipped (%s)", i, len(ordered), stage.name, why)
            remaining -= stage.estimate_s
            results.append(StageResult(stage.name, True, 0.0, (marker or {}).get("summary", {}), why))
            continue
        log.info(
            "[%d/%d] %s: running (estimated %.0fs for this stage, about %.0fs left in all) - %s",
            i, len(ordered), stage.name, stage.estimate_s, remaining, stage.doc,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        started = _read_marker(out_dir, STARTED)
        resume = bool(started and started.get("hash") == h and stage.name not in force)
        (out_dir / MARKER).unlink(missing_ok=True)
        atomic_write_text(out_dir / STARTED, json.dumps({"stage": stage.name, "hash": h}))
        t0 = time.perf_counter()
        summary = stage.run(cfg, run_dir, out_dir, resume) or {}
        seconds = time.perf_counter() - t0
        remaining -= stage.estimate_s
        marker = {"stage": stage.name, "hash": h, "seconds": round(seconds, 2), "summary": summary,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(out_dir / MARKER, json.dumps(marker, indent=2, sort_keys=True))
        log.info("[%d/%d] %s: done in %.1fs (%.0fs elapsed)", i, len(ordered), stage.name, seconds,
                 time.perf_counter() - t_start)
        results.append(StageResult(stage.name, False, seconds, summary))
        ran.add(stage.name)
    timing = {r.name: {"skipped": r.skipped, "seconds": round(r.seconds, 2)} for r in results}
    atomic_write_text(run_dir / "timings.json", json.dumps(timing, indent=2))
    return results
