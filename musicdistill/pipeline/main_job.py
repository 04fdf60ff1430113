"""The main job's stage graph: every stage of ``musicdistill run``, what it reads and what it comes after.

The stages' work is in :mod:`musicdistill.pipeline.stages`; when they run is decided by
:mod:`musicdistill.pipeline.runner`. One distillation stage per student of ``run.students``, one
evaluation stage per part (:func:`musicdistill.pipeline.run_systems.evaluation_parts`).
"""

from __future__ import annotations

import functools

from musicdistill.config import Config
from musicdistill.config.students import parse_merges, parse_students
from musicdistill.pipeline.run_systems import evaluation_parts, part_stage_name
from musicdistill.pipeline.runner import Stage
from musicdistill.pipeline.stages import (
    stage_captions,
    stage_codec,
    stage_data,
    stage_eval_judges,
    stage_evaluate,
    stage_evaluate_part,
    stage_judges,
    stage_merges,
    stage_offline,
    stage_pretrain,
    stage_report,
    stage_student,
    stage_tokens,
)

#: what decides the base's fronts (the front stage's results), and so every evaluation's too
FRONT_READS = ("evaluate", "generate", "device", "run.cfg_scales", "run.temperatures", "distill.gamma")

#: what decides one student's (or the merges') evaluation besides its checkpoint
SYSTEM_EVAL_READS = ("evaluate", "generate", "device")


def copies_codec(cfg: Config) -> bool:
    """The codec stage copies ``codec.from_dir`` (so it may share the machine) rather than fitting one."""
    return bool(cfg.codec.from_dir)


def copies_base(cfg: Config) -> bool:
    """The base stage copies ``pretrain.from_dir`` (so it may share the machine) rather than pretraining."""
    return bool(cfg.pretrain.from_dir)


def student_stages(cfg: Config) -> list[Stage]:
    """One distillation stage per student of ``run.students``, named after it; each reruns when the
    distill section or its own entry changes (a control: its diversity student's entry too)."""
    stages = []
    for student in parse_students(cfg):
        reads = ["distill", "device", f"run.students.{student.name}"]
        if student.settings_of:
            reads.append(f"run.students.{student.settings_of}")
        if student.role == "conditioned":
            reads = [
                "distill",
                "device",
                f"run.students.{student.settings_of}",
                "run.conditioned",
                "run.conditioned_hidden",
                "run.conditioned_dial_lr_scale",
            ]
        stages.append(
            Stage(
                student.name,
                functools.partial(stage_student, student=student),
                reads=tuple(reads),
                after=("base", "judges"),
                estimate_s=340,
                doc=f"distil the CFG teacher into a CFG-free student: {student.role}, beta = {student.beta:g}",
                concurrent=True,
            )
        )
    return stages


def evaluation_part_stages(cfg: Config) -> list[Stage]:
    """One evaluation stage per part (:func:`evaluation_parts`), run as soon as its checkpoints exist."""
    judges = ("tokens", "judges", "eval_judges")
    stages = [
        Stage(
            "front",
            functools.partial(stage_evaluate_part, part="front"),
            reads=FRONT_READS,
            after=("base", *judges),
            estimate_s=250,
            doc="evaluate the base's CFG and temperature fronts (beside the students)",
            concurrent=True,
        )
    ]
    for part in evaluation_parts(cfg)[1:]:
        extra = {
            "offline": ("run.compare_offline",),
            "merges": ("run.merges",),
            "conditioned": ("run.conditioned_w",),
        }.get(part, ())
        stages.append(
            Stage(
                part_stage_name(part),
                functools.partial(stage_evaluate_part, part=part),
                reads=(*SYSTEM_EVAL_READS, *extra),
                after=(part, *judges),
                estimate_s=60 if part == "merges" else 20,
                doc=f"evaluate the {part} checkpoint{'s' if part == 'merges' else ''} on the held-out prompts",
                concurrent=True,
            )
        )
    return stages


def main_job_stages(cfg: Config | None = None) -> list[Stage]:
    """Every stage of the main job, in order (the students and merges of ``cfg``; the defaults' without)."""
    cfg = cfg or Config()
    students = parse_students(cfg)
    merges = parse_merges(cfg, students)
    parts = evaluation_part_stages(cfg)
    return [
        Stage(
            "data",
            stage_data,
            reads=("data",),
            estimate_s=15,
            doc="synthesise the built-in captioned music (or check the user's manifest)",
        ),
        Stage(
            "codec",
            stage_codec,
            reads=("data", "codec"),
            after=("data",),
            estimate_s=40,
            doc="fit the offline codec on the training audio (or copy codec.from_dir)",
            concurrent=copies_codec,
        ),
        Stage(
            "tokens",
            stage_tokens,
            reads=("data", "codec"),
            after=("codec",),
            estimate_s=15,
            doc="encode every clip to codec tokens",
            concurrent=True,
        ),
        Stage(
            "captions",
            stage_captions,
            reads=("data", "text", "model"),
            after=("data",),
            estimate_s=30,
            doc="encode every caption once with the frozen text encoder",
            concurrent=True,
        ),
        Stage(
            "judges",
            stage_judges,
            reads=("data", "embed", "oracle"),
            after=("codec",),
            estimate_s=35,
            doc="train the judges the distillation reads: the reward embedder and the attribute oracle",
            concurrent=True,
        ),
        Stage(
            "eval_judges",
            stage_eval_judges,
            reads=("data", "second_embed", "scorer"),
            after=("codec", "captions"),
            estimate_s=40,
            doc="train the judges only the evaluation reads: the second embedder and the text-audio scorer",
            concurrent=True,
        ),
        Stage(
            "base",
            stage_pretrain,
            reads=("text", "model", "pretrain", "device"),
            after=("tokens", "captions"),
            estimate_s=280,
            doc="pretrain the base generator with condition dropout (or copy pretrain.from_dir)",
            concurrent=copies_base,
        ),
        *student_stages(cfg),
        Stage(
            "offline",
            stage_offline,
            reads=("distill", "run.compare_offline", "device"),
            after=("base", "judges"),
            estimate_s=130,
            doc="optional (run.compare_offline): offline distillation on teacher samples, for claim C5",
            concurrent=True,
        ),
        Stage(
            "merges",
            stage_merges,
            reads=("run.merges",),
            after=tuple(dict.fromkeys(n for m in merges for n in (m.a, m.b))),
            estimate_s=1,
            doc="LERP the students of run.merges at each lambda",
            concurrent=True,
        ),
        *parts,
        Stage(
            "evaluate",
            stage_evaluate,
            reads=(
                *FRONT_READS,
                "run.compare_offline",
                "run.students",
                "run.merges",
                "run.conditioned",
                "run.conditioned_w",
            ),
            after=("merges", "offline", *(s.name for s in students), *(p.name for p in parts)),
            estimate_s=15,
            doc="every system's results on the held-out prompts, the claims' statistics, the Pareto plot",
        ),
        Stage(
            "report",
            stage_report,
            reads=("distill",),
            after=("evaluate", "offline"),
            estimate_s=5,
            doc="write report.html: claims C1-C6, metrics, curves, audio, timings",
        ),
    ]
