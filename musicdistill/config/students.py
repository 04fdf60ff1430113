"""The students and merges the main job declares: ``run.students`` and ``run.merges``.

``run.students`` maps a name to one student's settings::

    students:
      quality:   {role: quality, beta: 0}
      diversity: {role: diversity, beta: 30, distill: {lr: 0.0001, divergence: jeffreys}}
      control:   {role: control}

- ``role`` says what part the student plays in the claims: ``quality`` (β = 0, C2 and C5),
  ``diversity`` (β > 0, C3 and C4), ``control`` (the diversity student's own settings with β = 0, so
  that β is the only difference C3 measures) or ``student`` (trained and evaluated, no claim);
- ``beta`` is the weight of the diversity reward (a control has none: it is 0);
- ``distill`` holds the distill keys in which the student differs from the ``distill`` section (a
  control has none: it takes its diversity student's).

A name is the student's folder in the run (``<run>/<name>``) and its stage; ``null`` in place of a
student's settings drops it (``run.students.control=null``). ``run.merges`` lists LERP merges
between two named students, each ``{a: quality, b: diversity, lambdas: [0.25, 0.5, 0.75]}``
(λ = 0 is ``a``, λ = 1 is ``b``), written to ``<run>/merges/<a>-<b>/lam_<λ>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from musicdistill.config.schema import Config, ConfigError, DistillConfig

ROLES = ("quality", "diversity", "control", "student")
#: roles the claims read; a run has at most one student of each
SINGLE_ROLES = ("quality", "diversity", "control", "conditioned")
#: the conditioned student's name (added by run.conditioned)
CONDITIONED = "conditioned"
STUDENT_KEYS = ("role", "beta", "distill")
MERGE_KEYS = ("a", "b", "lambdas")
#: folders of a run that a student may not take as its name
RESERVED_NAMES = (
    "data",
    "codec",
    "tokens",
    "captions",
    "judges",
    "eval_judges",
    "base",
    "offline",
    "merges",
    "front",
    "evaluate",
    "report",
    "embedder",
    "second_embedder",
    "oracle",
    "scorer",
)
#: distill keys each student's stage sets itself
SET_BY_JOB = {"beta": "the student's own 'beta'", "mode": "the main job (students distil on-policy)"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Student:
    """One student of the main job: its name (= folder and stage), role, β and distill changes."""

    name: str
    role: str
    beta: float
    distill: dict[str, Any]
    control_of: str | None = None
    settings_of: str | None = (
        None  # the student whose distill keys it copies (a control, the conditioned student)
    )
    dial_hidden: int = 0  # > 0: a conditioned student with a diversity dial of this width
    dial_lr_scale: float = 1.0  # its dial's learning rate, a multiple of the student's


@dataclass(frozen=True)
class Merge:
    """LERP merges of students ``a`` (λ = 0) and ``b`` (λ = 1) at each of ``lambdas``."""

    a: str
    b: str
    lambdas: tuple[float, ...]

    @property
    def folder(self) -> str:
        """The merges' folder under ``<run>/merges``: ``<a>-<b>``."""
        return f"{self.a}-{self.b}"


def lambda_folder(lam: float) -> str:
    """A merge's folder name at ``lam`` under ``<run>/merges/<a>-<b>``: ``lam_0.25`` (two decimals)."""
    return f"lam_{lam:.2f}"


def _where(name: str, key: str | None = None) -> str:
    return f"run.students.{name}" + (f".{key}" if key else "")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"run.students: the name {name!r} must be lowercase letters, digits and '_' starting with a "
            "letter (it names the student's folder and stage), e.g. 'diversity_b60'"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(
            f"run.students.{name}: '{name}' is a folder of every run ({', '.join(RESERVED_NAMES)}); "
            "give the student another name"
        )
    if name.startswith("eval_"):
        raise ConfigError(
            f"run.students.{name}: names starting with 'eval_' are the evaluation stages' folders "
            "(eval_<student>); give the student another name"
        )
    return name


def _check_distill_changes(where: str, changes: Any) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise ConfigError(
            f"{where}: expected a mapping of distill keys (e.g. {{lr: 0.0001}}), got {changes!r}"
        )
    names = [f.name for f in dataclasses.fields(DistillConfig)]
    for key in changes:
        if key in SET_BY_JOB:
            raise ConfigError(f"{where}.{key} is set by {SET_BY_JOB[key]}; remove it from {where}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(names))}"
            raise ConfigError(f"{where}.{key}: not a key of the distill section{hint}")
    return dict(changes)


def _parse_student(name: str, raw: Any) -> Student:
    where = _where(name)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: expected a mapping with role and beta (e.g. {{role: quality, beta: 0}}), got {raw!r}"
        )
    unknown = [k for k in raw if k not in STUDENT_KEYS]
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: not a student setting; a student has {', '.join(STUDENT_KEYS)}"
        )
    role = raw.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}.role={role!r}: choose one of {', '.join(ROLES)}")
    if role == "control":
        extra = [k for k in ("beta", "distill") if k in raw]
        if extra:
            raise ConfigError(
                f"{where}.{extra[0]}: a control takes the diversity student's settings with beta 0, so that "
                f"beta is the only difference; remove {where}.{extra[0]} (or make it role: student)"
            )
        return Student(name, role, 0.0, {})
    beta = raw.get("beta", 0.0)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1000.0:
        raise ConfigError(f"{where}.beta={beta!r} must be a number in [0, 1000]")
    if role == "quality" and beta != 0:
        raise ConfigError(
            f"{where}.beta={beta:g}: the quality student has beta 0; set it to 0 or use role: student"
        )
    if role == "diversity" and not beta > 0:
        raise ConfigError(f"{where}.beta={beta:g}: the diversity student needs beta > 0 (e.g. 30)")
    return Student(
        name, role, float(beta), _check_distill_changes(_where(name, "distill"), raw.get("distill") or {})
    )


def parse_students(cfg: Config) -> list[Student]:
    """``run.students`` as :class:`Student` s in declaration order; a control names its diversity student.

    Raises ConfigError naming the student and the fix: a bad name, role, β or distill key, two
    students of a claim role, or a control without a diversity student.
    """
    raw = cfg.run.students
    if not isinstance(raw, dict):
        raise ConfigError(f"run.students: expected a mapping of name -> settings, got {raw!r}")
    students = [_parse_student(_check_name(name), spec) for name, spec in raw.items() if spec is not None]
    for role in SINGLE_ROLES:
        named = [s.name for s in students if s.role == role]
        if len(named) > 1:
            raise ConfigError(
                f"run.students: {' and '.join(named)} both have role {role}; the claims compare one {role} "
                "student, so give the others role: student"
            )
    diversity = next((s for s in students if s.role == "diversity"), None)
    out = []
    for s in students:
        if s.role == "control":
            if diversity is None:
                raise ConfigError(
                    f"run.students.{s.name}: a control copies the diversity student's settings with beta 0, "
                    "but no student has role: diversity"
                )
            s = dataclasses.replace(
                s, distill=dict(diversity.distill), control_of=diversity.name, settings_of=diversity.name
            )
        out.append(s)
    if cfg.run.conditioned:
        out.append(
            conditioned_student(out, diversity, cfg.run.conditioned_hidden, cfg.run.conditioned_dial_lr_scale)
        )
    return out


def conditioned_student(
    students: list[Student], diversity: Student | None, hidden: int, lr_scale: float = 1.0
) -> Student:
    """The student ``run.conditioned`` adds (docs/method.md 4.1): the diversity student's distill keys,
    its β as β_max, and a diversity dial of ``run.conditioned_hidden`` units that trains at
    ``run.conditioned_dial_lr_scale`` times its learning rate."""
    if diversity is None:
        raise ConfigError(
            "run.conditioned=true: the conditioned student takes the diversity student's settings (its beta "
            "as beta_max), but no student has role: diversity"
        )
    if any(s.name == CONDITIONED for s in students):
        raise ConfigError(
            f"run.students.{CONDITIONED}: with run.conditioned=true that name is the conditioned student's; "
            "give this student another name"
        )
    return Student(
        CONDITIONED,
        "conditioned",
        diversity.beta,
        dict(diversity.distill),
        settings_of=diversity.name,
        dial_hidden=hidden,
        dial_lr_scale=lr_scale,
    )


def parse_merges(cfg: Config, students: list[Student]) -> list[Merge]:
    """``run.merges`` as :class:`Merge` s; each names two declared students and λ in (0, 1)."""
    raw = cfg.run.merges
    if not isinstance(raw, list):
        raise ConfigError(f"run.merges: expected a list of {{a, b, lambdas}} mappings, got {raw!r}")
    names = [s.name for s in students]
    merges = []
    for i, item in enumerate(raw):
        where = f"run.merges[{i}]"
        if not isinstance(item, dict) or any(k not in MERGE_KEYS for k in item):
            raise ConfigError(
                f"{where}: expected a mapping with {', '.join(MERGE_KEYS)} (e.g. {{a: quality, b: diversity, "
                f"lambdas: [0.5]}}), got {item!r}"
            )
        for key in ("a", "b"):
            if item.get(key) not in names:
                raise ConfigError(
                    f"{where}.{key}={item.get(key)!r} is not a declared student; run.students has "
                    f"{', '.join(names) or 'none'}"
                )
        if item["a"] == item["b"]:
            raise ConfigError(f"{where}: a and b are both {item['a']!r}; merge two different students")
        lambdas = item.get("lambdas", [0.5])
        if (
            not isinstance(lambdas, list)
            or not lambdas
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lambdas)
            or not all(0.0 < v < 1.0 and math.isfinite(v) for v in lambdas)
        ):
            raise ConfigError(
                f"{where}.lambdas={lambdas!r} must be a non-empty list of numbers strictly between 0 and 1 "
                "(lambda 0 and 1 are the students themselves)"
            )
        distinct = tuple(sorted({float(v) for v in lambdas}))
        folders_of = [lambda_folder(v) for v in distinct]
        if len(set(folders_of)) != len(folders_of):
            raise ConfigError(
                f"{where}.lambdas={lambdas!r}: two lambdas share a folder name ({', '.join(folders_of)}; "
                "a merge's folder keeps two decimals); list lambdas that differ in the first two decimals"
            )
        merges.append(Merge(item["a"], item["b"], distinct))
    folders = [m.folder for m in merges]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"run.merges: the same pair is merged twice ({folders}); list its lambdas once")
    return merges


def role_of(students: list[Student], role: str) -> Student | None:
    """The student with ``role`` (quality, diversity or control), or None."""
    return next((s for s in students if s.role == role), None)
