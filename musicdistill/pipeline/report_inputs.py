"""What the report reads from a run folder: JSON files and training histories (missing or unreadable
ones are logged and read as absent), the resolved config, the offline runs, the evaluate stage's
metrics, claims and roles, the demo command and the machine writing the report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
from pathlib import Path
from typing import Any

import yaml

from musicdistill.config import DistillConfig
from musicdistill.evaluation.claims import Claim, claims_from_metrics
from musicdistill.evaluation.roles import Roles, find_roles
from musicdistill.storage.checkpoint import MODEL_FILE, PROVENANCE_FILE
from musicdistill.storage.history import read_rows

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when missing or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); the report shows it as not run", path, err)
        return None


def read_history(folder: Path) -> list[dict[str, Any]]:
    """A training history's rows; empty when missing or unreadable (logged)."""
    try:
        return read_rows(folder)
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s/history.jsonl is unreadable (%s); its curves are left out", folder, err)
        return []


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config (``config.yaml``) as a plain mapping; empty when missing."""
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s is unreadable (%s); using the defaults", path, err)
        raw = {}
    return raw if isinstance(raw, dict) else {}


def teacher_gamma(config: dict[str, Any]) -> float:
    """``distill.gamma``: the CFG scale of the teacher the students were distilled from."""
    return float((config.get("distill") or {}).get("gamma", DistillConfig().gamma))


def offline_runs(run_dir: Path) -> dict[str, Path]:
    """Sub-folders holding an offline β = 0 distillation (``mode`` teacher or dataset), by folder name."""
    found = {}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        prov = read_json(folder / PROVENANCE_FILE)
        if (
            isinstance(prov, dict)
            and prov.get("kind") == "distilled"
            and prov.get("beta") == 0
            and prov.get("mode") in ("teacher", "dataset")
        ):
            found[folder.name] = folder
    return found


def student_names(run_dir: Path) -> list[str]:
    """The students of the run's ``run.students`` (its saved config), in order; older runs: quality, diversity."""
    students = (read_run_config(run_dir).get("run") or {}).get("students")
    if isinstance(students, dict):
        return [name for name, spec in students.items() if spec is not None]
    return ["quality", "diversity"]


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """``evaluate/metrics.json``, or None when the evaluate stage has not written it."""
    metrics = read_json(run_dir / "evaluate" / "metrics.json")
    return metrics if isinstance(metrics, dict) else None


def run_claims(run_dir: Path) -> list[Claim]:
    """C1-C6 for the run in ``run_dir``, as its evaluate stage decided them (``evaluate/metrics.json``);
    every one "not run" when the file is missing or predates the paired statistics."""
    return claims_from_metrics(read_metrics(run_dir))


def run_roles(metrics: dict[str, Any] | None, config: dict[str, Any]) -> Roles | None:
    """The roles metrics.json records (an older file: found from its systems and ``distill.gamma``)."""
    if metrics is None:
        return None
    stored = metrics.get("roles")
    if isinstance(stored, dict):
        try:
            return Roles(**{**stored, "merges": tuple(stored.get("merges") or ())})
        except TypeError as err:
            log.warning("evaluate/metrics.json roles are unreadable (%s); finding them again", err)
    return find_roles(metrics.get("systems") or {}, teacher_gamma(config))


def demo_command(run_dir: Path) -> str | None:
    """The command serving the quality-diversity demo on this run's checkpoints (None before both exist)."""
    if all((run_dir / name / MODEL_FILE).is_file() for name in ("quality", "diversity")):
        return f"musicdistill demo --run {shlex.quote(str(run_dir))}"
    return None


def machine_line() -> str:
    """The machine writing the report: OS, CPU, cores, memory, torch and accelerator."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{memory}; "
        f"torch {torch.__version__}, {gpu}; Python {platform.python_version()}"
    )
