"""Replication: the main job once per seed, each with every seed changed, then one pooled report.

``musicdistill replicate CONFIG --seeds 2,3,4`` runs the main job (:func:`main_job_stages`) into
``<runs_dir>/<name>-seed<seed>/`` for each seed in turn. :func:`reseed` sets **every** ``seed`` key of
the config to the seed (found by walking the config's dataclasses, so a new section's seed is
covered; ``data.seed`` too, so the prompts, the judges' training data and the held-out split are
fresh), while the shipped base (``pretrain.from_dir``, ``codec.from_dir``) stays. A seed whose run
is up to date is skipped by the runner's own stage markers, so an interrupted replication resumes.

The runs are then pooled (:func:`musicdistill.evaluation.pooled.pooled_claims`: a hierarchical
bootstrap over seeds, then prompts within each seed) into
``<runs_dir>/<name>-replicate-<seeds joined by _>/``: ``pooled.json``, a self-contained
``report.html`` and ``pooled.md`` (the same tables in markdown, for ``bench/RESULTS.md``); also
``timings.json``, each seed's wall time.

**Development and reporting seeds.** Seeds from :data:`DEVELOPMENT_SEEDS_FROM` up are development
seeds: trials (tuning) run on them only. Seeds below it are reporting seeds, whose pooled verdicts
are the ones quoted; a reporting seed must be one no trial has touched.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from musicdistill.config import Config
from musicdistill.evaluation.pooled import METRICS_FILE, PER_PROMPT_FILE, pooled_claims
from musicdistill.pipeline.main_job import main_job_stages
from musicdistill.pipeline.replicate_report import render_html, render_markdown
from musicdistill.pipeline.runner import MARKER, Stage, run_stages
from musicdistill.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

#: seeds from this one up are development seeds (trials); those below are reporting seeds
DEVELOPMENT_SEEDS_FROM = 100
SEED_KEY = "seed"
POOLED_FILE, REPORT_FILE, MARKDOWN_FILE, TIMINGS_FILE = (
    "pooled.json",
    "report.html",
    "pooled.md",
    "timings.json",
)


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def seed_kind(seed: int) -> str:
    """``"development"`` for seeds >= :data:`DEVELOPMENT_SEEDS_FROM` (trials), else ``"reporting"``."""
    return "development" if seed >= DEVELOPMENT_SEEDS_FROM else "reporting"


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds, in order, once checked: integers >= 0, no repeats, at least two."""
    seeds = list(seeds)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"--seeds {bad}: every seed must be an integer >= 0, e.g. --seeds 2,3,4")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(
            f"--seeds {','.join(map(str, seeds))}: seed(s) {repeated} appear more than once; each seed "
            "is one run and would be counted twice in the pooled bootstrap"
        )
    if len(seeds) < 2:
        raise ValueError(
            f"--seeds {','.join(map(str, seeds)) or '(none)'}: give at least two distinct seeds to pool "
            "(e.g. --seeds 2,3,4); one seed is what `musicdistill run` reports"
        )
    return seeds


def parse_seeds(text: str) -> list[int]:
    """``"2,3,4"`` -> ``[2, 3, 4]``, checked by :func:`check_seeds`."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    seeds = []
    for part in parts:
        try:
            seeds.append(int(part))
        except ValueError:
            raise ValueError(
                f"--seeds {text}: {part!r} is not an integer; give comma-separated integers >= 0, e.g. "
                "--seeds 2,3,4"
            ) from None
    return check_seeds(seeds)


def _reseed(value: Any, seed: int, path: str, found: list[str]) -> Any:
    """``value`` with every ``seed`` key set to ``seed`` (dataclasses in place; dicts and lists copied)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            where = f"{path}{f.name}"
            if f.name == SEED_KEY and isinstance(current, int) and not isinstance(current, bool):
                setattr(value, f.name, seed)
                found.append(where)
            else:
                setattr(value, f.name, _reseed(current, seed, where + ".", found))
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == SEED_KEY and isinstance(item, int) and not isinstance(item, bool):
                out[key] = seed
                found.append(f"{path}{key}")
            else:
                out[key] = _reseed(item, seed, f"{path}{key}.", found)
        return out
    if isinstance(value, list):
        return [_reseed(item, seed, f"{path}{i}.", found) for i, item in enumerate(value)]
    return value


def reseed(cfg: Config, seed: int) -> Config:
    """A copy of ``cfg`` with every ``seed`` key (of every section, and inside mapping-valued keys such
    as a student's ``distill``) set to ``seed`` and ``name`` = ``<name>-seed<seed>``.

    Everything else stays, the shipped base (``pretrain.from_dir``, ``codec.from_dir``) included.
    """
    return _reseeded(cfg, seed)[0]


def reseeded_keys(cfg: Config) -> list[str]:
    """The dotted keys :func:`reseed` sets, e.g. ``['data.seed', 'codec.seed', ...]``."""
    return _reseeded(cfg, 0)[1]


def _reseeded(cfg: Config, seed: int) -> tuple[Config, list[str]]:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    found: list[str] = []
    out = _reseed(copy.deepcopy(cfg), seed, "", found)
    out.name = seed_run_name(cfg.name, seed)
    return out, found


def seed_run_name(name: str, seed: int) -> str:
    """The run name of one seed: ``default`` -> ``default-seed3``."""
    return f"{name}-seed{seed}"


def seed_run_dir(cfg: Config, seed: int) -> Path:
    return Path(cfg.runs_dir) / seed_run_name(cfg.name, seed)


def replicate_dir(cfg: Config, seeds: Sequence[int]) -> Path:
    """``<runs_dir>/<name>-replicate-<seeds joined by _>``: where the pooled report goes."""
    return Path(cfg.runs_dir) / f"{cfg.name}-replicate-{'_'.join(str(s) for s in seeds)}"


def missing_runs(cfg: Config, seeds: Sequence[int]) -> list[Path]:
    """The seeds' run folders that have no finished evaluation (per_prompt.csv and metrics.json)."""
    runs = [seed_run_dir(cfg, s) for s in seeds]
    return [r for r in runs if not ((r / PER_PROMPT_FILE).is_file() and (r / METRICS_FILE).is_file())]


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def read_timings(out: Path) -> dict[str, dict[str, Any]]:
    """``timings.json`` of a replication folder: seed (as text) -> wall seconds and stages run."""
    path = out / TIMINGS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is not JSON; the seeds' wall times are taken from their stage markers", path)
        return {}
    return raw if isinstance(raw, dict) else {}


def stage_seconds(run_dir: Path) -> float | None:
    """The sum of the seconds in a run's stage markers (``<stage>/stage.json``); None when there are none."""
    total, found = 0.0, False
    for marker in sorted(run_dir.glob(f"*/{MARKER}")):
        try:
            seconds = json.loads(marker.read_text(encoding="utf-8")).get("seconds")
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(seconds, (int, float)):
            total, found = total + float(seconds), True
    return total if found else None


def seed_rows(cfg: Config, seeds: Sequence[int], timings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per seed: its kind, run folder and wall time (this replication's, or its stage markers')."""
    rows = []
    for seed in seeds:
        run = seed_run_dir(cfg, seed)
        timing = timings.get(str(seed))
        row: dict[str, Any] = {"seed": seed, "kind": seed_kind(seed), "run": str(run)}
        if timing is not None:
            row |= {
                "wall_s": timing.get("wall_s"),
                "stages_run": timing.get("stages_run", []),
                "stages": timing.get("stages"),
                "timing": "wall time of the replicate command's last pass that ran stages for this seed",
            }
        else:
            row |= {
                "wall_s": stage_seconds(run),
                "timing": "sum of the run's stage markers (it was not run by this replication)",
            }
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Running and pooling
# --------------------------------------------------------------------------------------------


def replicate(
    cfg: Config,
    seeds: Sequence[int],
    force: Sequence[str] = (),
    stages_of: Callable[[Config], list[Stage]] = main_job_stages,
) -> dict[str, Any]:
    """Run the main job once per seed (sequentially, resumable), then pool them (:func:`analyze`).

    ``stages_of(cfg)`` gives the stages of one seed's run (the main job's by default). Returns the
    pooled result that ``pooled.json`` holds.
    """
    seeds = check_seeds(seeds)
    out = replicate_dir(cfg, seeds)
    timings = read_timings(out)
    started = time.perf_counter()
    for i, seed in enumerate(seeds, start=1):
        run_cfg = reseed(cfg, seed)
        log.info(
            "seed %d (%d of %d, a %s seed): the main job into %s",
            seed,
            i,
            len(seeds),
            seed_kind(seed),
            run_cfg.run_dir,
        )
        t0 = time.perf_counter()
        results = run_stages(run_cfg, stages_of(run_cfg), force=tuple(force))
        wall = time.perf_counter() - t0
        ran = [r.name for r in results if not r.skipped]
        if ran or str(seed) not in timings:
            timings[str(seed)] = {
                "wall_s": round(wall, 1),
                "stages_run": ran,
                "stages": len(results),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            atomic_write_text(out / TIMINGS_FILE, json.dumps(timings, indent=2, sort_keys=True))
        log.info(
            "seed %d: done in %.0f s (%d of %d stages ran; %.0f s since the first seed)",
            seed,
            wall,
            len(ran),
            len(results),
            time.perf_counter() - started,
        )
    return analyze(cfg, seeds)


def analyze(cfg: Config, seeds: Sequence[int]) -> dict[str, Any]:
    """Pool the seeds' finished runs and write ``pooled.json``, ``report.html`` and ``pooled.md``.

    Uses ``evaluate.bootstrap`` resamples; the pooled draws are seeded with ``evaluate.seed``, each
    seed's own with its run's evaluation seed. Raises FileNotFoundError naming a missing run.
    """
    seeds = check_seeds(seeds)
    missing = missing_runs(cfg, seeds)
    if missing:
        raise FileNotFoundError(
            "no finished evaluation in "
            + ", ".join(str(m) for m in missing)
            + f"; run the seeds first: musicdistill replicate <config> --seeds {','.join(map(str, seeds))}"
        )
    out = replicate_dir(cfg, seeds)
    runs = [seed_run_dir(cfg, s) for s in seeds]
    result = pooled_claims(runs, num_resamples=cfg.evaluate.bootstrap, seed=cfg.evaluate.seed)
    rows = seed_rows(cfg, seeds, read_timings(out))
    known = [r["wall_s"] for r in rows if isinstance(r.get("wall_s"), (int, float))]
    result["replicate"] = {
        "name": cfg.name,
        "folder": str(out),
        "seeds": rows,
        "development_seeds_from": DEVELOPMENT_SEEDS_FROM,
        "reseeded_keys": reseeded_keys(cfg),
        "kept": {"pretrain.from_dir": cfg.pretrain.from_dir, "codec.from_dir": cfg.codec.from_dir},
        "total_wall_s": round(sum(known), 1) if len(known) == len(rows) else None,
    }
    write_outputs(out, result)
    return result


def write_outputs(out: Path, result: dict[str, Any]) -> dict[str, Path]:
    """``pooled.json``, ``report.html`` and ``pooled.md`` in ``out``, each written atomically."""
    paths = {
        "json": atomic_write_text(out / POOLED_FILE, json.dumps(result, indent=2)),
        "html": atomic_write_text(out / REPORT_FILE, render_html(result)),
        "markdown": atomic_write_text(out / MARKDOWN_FILE, render_markdown(result)),
    }
    log.info("pooled report: %s", paths["html"])
    return paths
