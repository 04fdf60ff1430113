"""Where a demo's checkpoints are: :class:`DemoPaths`, read from a run folder by :func:`find_run_checkpoints`.

A run (``musicdistill run``) holds several students; each says its role (or β) in its
``provenance.json``. The demo serves the merge of the quality and diversity students, or the run's
conditioned student (``--dial``), with the base as its CFG teacher and the reward embedder for its
diversity read-out when they are there.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicdistill.storage.checkpoint import MODEL_FILE, PROVENANCE_FILE

log = logging.getLogger(__name__)

#: folder names inside a pipeline run (``musicdistill run``)
RUN_TEACHER = "base"
RUN_EMBEDDER = "embedder"

#: what the slider sets: ``auto`` (a run's conditioned student when it has one), ``merge`` or ``conditioned``
DIALS = ("auto", "merge", "conditioned")


@dataclass(frozen=True)
class DemoPaths:
    """Checkpoint folders of the systems the demo serves: the merge's two students, or one conditioned
    student (``conditioned``, which the demo then serves instead); teacher and embedder are optional."""

    quality: Path | None
    diversity: Path | None
    teacher: Path | None = None
    embedder: Path | None = None
    conditioned: Path | None = None


def _distilled_students(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The run's sub-folders holding an on-policy distilled checkpoint, with their provenance."""
    found = []
    for path in sorted(p for p in run.iterdir() if p.is_dir()):
        prov_path = path / PROVENANCE_FILE
        if not (path / MODEL_FILE).is_file() or not prov_path.is_file():
            continue
        try:
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            log.warning("--run %s: %s is unreadable (%s); skipping that folder", run, prov_path, err)
            continue
        beta = prov.get("beta") if isinstance(prov, dict) else None
        if (
            isinstance(beta, (int, float))
            and math.isfinite(beta)
            and prov.get("mode", "on_policy") == "on_policy"
        ):
            found.append((path, prov))
    return found


def find_run_checkpoints(run: str | Path, dial: str = "auto") -> DemoPaths:
    """The demo's folders in a run, read from each checkpoint's ``provenance.json``: the student with
    role ``quality`` (else the one with β = 0), the student with role ``diversity`` (else the one with
    the largest β > 0), teacher ``base`` and embedder ``embedder``. A control (β = 0 with the
    diversity student's settings) is never picked. With ``dial`` ``auto`` (a run's conditioned
    student when it has one, else the merge) or ``conditioned``, the student with role
    ``conditioned`` is served instead of the merge; ``merge`` serves the merge.

    Raises FileNotFoundError listing every missing folder when the models the dial needs are
    missing; a missing teacher or embedder is logged and left out.
    """
    if dial not in DIALS:
        raise ValueError(f"--dial {dial}: choose one of {', '.join(DIALS)}")
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(
            f"--run {run}: no such folder; pass the folder of a 'musicdistill run' pipeline run"
        )
    teacher, embedder = run / RUN_TEACHER, run / RUN_EMBEDDER
    students = _distilled_students(run)
    by_role = {prov.get("role"): path for path, prov in reversed(students) if prov.get("role")}
    conditioned = by_role.get("conditioned")
    if dial == "conditioned" and conditioned is None:
        raise FileNotFoundError(
            f"--run {run} has no conditioned student (a student with role conditioned); run the main job "
            "with run.conditioned=true, or use --dial merge"
        )
    if conditioned is not None and dial != "merge":
        for name, folder in (("teacher", teacher), ("embedder", embedder)):
            if not folder.exists():
                log.warning("--run %s: no %s at %s; continuing without it", run, name, folder)
        return DemoPaths(
            quality=None,
            diversity=None,
            teacher=teacher if (teacher / MODEL_FILE).is_file() else None,
            embedder=embedder if embedder.is_dir() else None,
            conditioned=conditioned,
        )
    unroled = [(float(prov["beta"]), path) for path, prov in students if not prov.get("role")]
    quality = by_role.get("quality") or next((p for b, p in unroled if b == 0), None)
    candidates = sorted((b, p) for b, p in unroled if b > 0)
    diversity = by_role.get("diversity") or (candidates[-1][1] if candidates else None)
    missing = []
    if quality is None:
        missing.append(f"a student with role quality (beta = 0) under {run}")
    if diversity is None:
        missing.append(f"a student with role diversity (beta > 0) under {run}")
    if not (teacher / MODEL_FILE).is_file():
        missing.append(f"{teacher} (the base model, the CFG teacher; optional)")
    if not embedder.is_dir():
        missing.append(f"{embedder} (the reward embedder; optional)")
    if quality is None or diversity is None:
        raise FileNotFoundError(
            f"--run {run} is missing: "
            + "; ".join(missing)
            + ". Finish the run with 'musicdistill run', or pass --quality and --diversity explicitly."
        )
    for item in missing:
        log.warning("--run %s: not found, continuing without it: %s", run, item)
    if "diversity" not in by_role and len(candidates) > 1:
        log.info(
            "--run %s has several diversity models %s; using beta=%g",
            run,
            [p.name for _, p in candidates],
            candidates[-1][0],
        )
    return DemoPaths(
        quality=quality,
        diversity=diversity,
        teacher=teacher if (teacher / MODEL_FILE).is_file() else None,
        embedder=embedder if embedder.is_dir() else None,
    )
