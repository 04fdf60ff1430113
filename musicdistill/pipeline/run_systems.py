"""Which systems a main-job run compares, and under which names and roles.

:func:`main_job_systems` lists them for a run folder: the base's CFG and temperature fronts, the
students of ``run.students`` (the conditioned student at each w of ``run.conditioned_w``), the
merges of ``run.merges`` and the offline student; :func:`part_systems` picks one evaluation part's
(the fronts, one student, the merges), which its own stage evaluates as soon as its checkpoints
exist (:mod:`musicdistill.pipeline.main_job`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicdistill.config import Config, ConfigError
from musicdistill.config.students import Merge, Student, lambda_folder, parse_merges, parse_students


def merge_dir(run_dir: Path, merge: Merge, lam: float) -> Path:
    """``<run>/merges/<a>-<b>/lam_<λ>``."""
    return run_dir / "merges" / merge.folder / lambda_folder(lam)


def student_system_name(student: Student) -> str:
    """A student's display name in the evaluation: ``diversity (beta=30)``."""
    return f"{student.name} (beta={student.beta:g})"


def merge_system_name(merge: Merge, lam: float, students: list[Student]) -> str:
    """``merge lambda=0.5`` for the quality-diversity pair, ``merge a-b lambda=0.5`` for any other."""
    roles = {s.name: s.role for s in students}
    if (roles.get(merge.a), roles.get(merge.b)) == ("quality", "diversity"):
        return f"merge lambda={lam:g}"
    return f"merge {merge.folder} lambda={lam:g}"


def conditioned_weights(cfg: Config) -> list[float]:
    """``run.conditioned_w``, checked: distinct numbers in [0, 1], sorted."""
    raw = cfg.run.conditioned_w
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0.0 <= w <= 1.0 for w in raw)
    ):
        raise ConfigError(f"run.conditioned_w={raw!r} must be a non-empty list of numbers in [0, 1]")
    return sorted({float(w) for w in raw})


def main_job_systems(cfg: Config, run_dir: Path) -> list[dict[str, Any]]:
    """The systems the main job compares: the base's CFG and temperature fronts, the students, the merges.

    Every system carries its role (base, teacher, quality, diversity, control, student, merge,
    offline), so the claims never guess it. The base without CFG at temperature 1 (``base``) is on
    both fronts and is evaluated once; the teacher's scale ``distill.gamma`` is always on the CFG
    front. A merge's ends, λ = 0 and λ = 1, are the students themselves, so only the λ strictly
    between are evaluated. The offline student is evaluated with ``run.compare_offline`` (claim C5).
    """
    base = str(run_dir / "base")
    gamma = float(cfg.distill.gamma)

    def system(
        name: str, checkpoint: str, role: str, cfg_scale: float = 1.0, temperature: float = 1.0, **extra: Any
    ) -> dict[str, Any]:
        families = {
            "base": "base",
            "teacher": "base + CFG",
            "merge": "merged",
            "offline": "distilled offline",
        }
        family = families.get(role, "distilled")
        if role == "base":
            family = "base + CFG" if cfg_scale != 1.0 else "base, temperature"
        return {
            "name": name,
            "checkpoint": checkpoint,
            "family": family,
            "role": role,
            "cfg_scale": float(cfg_scale),
            "temperature": float(temperature),
            **extra,
        }

    temperatures = sorted({float(t) for t in cfg.run.temperatures} - {1.0})
    scales = sorted(({float(g) for g in cfg.run.cfg_scales} | {gamma}) - {1.0})
    systems = [system("base", base, "base")]
    systems += [system(f"base T={t:g}", base, "base", temperature=t) for t in temperatures]
    systems += [
        system(f"base CFG {g:g}", base, "teacher" if g == gamma else "base", cfg_scale=g) for g in scales
    ]
    students = parse_students(cfg)
    for s in students:
        if s.role == "conditioned":  # one checkpoint, evaluated at each w of run.conditioned_w
            systems += [
                system(f"conditioned w={w:g}", str(run_dir / s.name), "conditioned", w=w)
                for w in conditioned_weights(cfg)
            ]
        else:
            systems.append(system(student_system_name(s), str(run_dir / s.name), s.role))
    for merge in parse_merges(cfg, students):
        systems += [
            system(
                merge_system_name(merge, lam, students),
                str(merge_dir(run_dir, merge, lam)),
                "merge",
                lam=lam,
                merge_of=[merge.a, merge.b],
            )
            for lam in merge.lambdas
        ]
    if cfg.run.compare_offline:
        systems.append(system("offline (beta=0)", str(run_dir / "offline"), "offline"))
    return systems


def part_systems(cfg: Config, run_dir: Path, part: str) -> list[dict[str, Any]]:
    """The main job's systems of one evaluation part: ``front`` (the base without CFG, its temperature
    and CFG fronts, the teacher among them), ``merges``, or a student's folder name (``quality``,
    ``offline``, ...); none when ``evaluate.systems`` names the systems."""
    if cfg.evaluate.systems:
        return []
    systems = main_job_systems(cfg, run_dir)
    if part == "front":
        return [s for s in systems if s["role"] in ("base", "teacher")]
    if part == "merges":
        return [s for s in systems if s["role"] == "merge"]
    return [s for s in systems if s["checkpoint"] == str(run_dir / part)]


def evaluation_parts(cfg: Config) -> list[str]:
    """The parts evaluated in stages of their own: the fronts, each student, the offline student, the merges."""
    return ["front", *(s.name for s in parse_students(cfg)), "offline", "merges"]


def part_stage_name(part: str) -> str:
    """``front`` keeps its name; another part's evaluation is ``eval_<part>``."""
    return part if part == "front" else f"eval_{part}"
