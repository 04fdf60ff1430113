"""Which evaluated system plays which part in the claims and fronts, read from ``metrics.json`` systems.

Every system the main job evaluates carries its ``role`` (:func:`musicdistill.pipeline.run_systems.main_job_systems`):
``base`` (the base checkpoint at a setting that is not the teacher's), ``teacher``, ``quality``,
``diversity``, ``control``, ``student``, ``merge`` (with ``lam`` and ``merge_of``), ``offline`` or
``conditioned`` (one system per diversity weight ``w`` of the conditioned student).
The merges that C4 reads are the diversity student's (``merge_of`` names it, with either β = 0
student: the quality model or the control), ordered by λ.

A system without a role (a ``metrics.json`` written before roles, or a user's ``evaluate.systems``
list without them) is recognised by checkpoint folder and sampling settings, never by display name:

- **the base checkpoint**: the checkpoint folder named ``base``;
- **the teacher**: the base sampled with CFG at γ = ``distill.gamma`` and temperature 1 (the frozen
  teacher the students were distilled from);
- **the base model**: the base without CFG (γ = 1) at temperature 1;
- **the quality model**: the β = 0 student (folder ``quality``); **the diversity model**: the β > 0
  student (folder ``diversity``); **the offline student**: β = 0 distilled offline (folder
  ``offline``); **merges**: checkpoints under ``merges/`` (or family ``merged``), ordered by λ read
  from their folder name (``lam_0.25``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASE_FOLDER = "base"
_LAMBDA = re.compile(r"lam(?:bda)?[_=]?([0-9]*\.?[0-9]+)")


@dataclass(frozen=True)
class Roles:
    """Names (keys of ``metrics["systems"]``) of the systems the claims compare; None when not evaluated."""

    teacher: str | None
    base: str | None
    quality: str | None
    diversity: str | None
    merges: tuple[str, ...]
    offline: str | None = None
    control: str | None = None
    conditioned: tuple[str, ...] = ()  # the conditioned student's points, ordered by w

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "merges": list(self.merges), "conditioned": list(self.conditioned)}

    def tags(self) -> dict[str, str]:
        """``{system name: role}`` for the systems with a role (merges are not tagged)."""
        tags = {
            self.teacher: "teacher",
            self.base: "base",
            self.quality: "quality model",
            self.diversity: "diversity model",
            self.offline: "offline student",
            self.control: "control (beta = 0)",
        }
        return {name: tag for name, tag in tags.items() if name}


def folder(system: dict[str, Any]) -> Path:
    return Path(str(system.get("checkpoint", "")))


def settings(system: dict[str, Any]) -> tuple[float, float]:
    """(CFG scale, temperature) of a system (1, 1 when unset)."""
    s = system.get("settings") or {}
    return float(s.get("cfg_scale", 1.0)), float(s.get("temperature", 1.0))


def role(system: dict[str, Any]) -> str:
    """The system's stated role ("" when it states none)."""
    return str(system.get("role") or "")


def on_base(system: dict[str, Any]) -> bool:
    """Whether the system samples the base checkpoint (the CFG and temperature fronts' members)."""
    if role(system):
        return role(system) in ("base", "teacher")
    return folder(system).name == BASE_FOLDER


def is_merge(system: dict[str, Any]) -> bool:
    if role(system):
        return role(system) == "merge"
    return system.get("family") == "merged" or folder(system).parent.name == "merges"


def merge_lambda(system: dict[str, Any]) -> float:
    """λ of a merged checkpoint: its ``lam``, else from its folder name (``lam_0.25``); NaN when neither."""
    if isinstance(system.get("lam"), (int, float)):
        return float(system["lam"])
    found = _LAMBDA.search(folder(system).name)
    return float(found.group(1)) if found else math.nan


def dial_weight(system: dict[str, Any]) -> float:
    """A conditioned system's diversity weight w (its ``w``, else its settings'); NaN when it has none."""
    w = system.get("w", (system.get("settings") or {}).get("w"))
    return float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) else math.nan


def rows_per_frame(system: dict[str, Any]) -> int | None:
    """Model rows one generated frame costs (2 with CFG, 1 without); None when not recorded."""
    rows = (system.get("cost") or {}).get("rows_per_sample")
    return int(rows) if isinstance(rows, (int, float)) else None


def _merges_diversity(merge_of: list[str], diversity: str | None, ends: set[str]) -> bool:
    """Whether a merge's two students are the diversity student and a β = 0 student of ``ends``."""
    return diversity in merge_of and len(set(merge_of) - {diversity}) == 1 and bool(set(merge_of) & ends)


def find_roles(systems: dict[str, dict[str, Any]], gamma: float) -> Roles:
    """The teacher, base, students, control, offline student and merges of ``metrics["systems"]``.

    Stated roles decide; a system without one is recognised as the module doc says. The teacher is
    the base sampled with CFG at ``gamma`` and temperature 1.
    """

    def first(pred: Callable[[dict[str, Any]], bool]) -> str | None:
        return next((name for name, s in systems.items() if pred(s)), None)

    def stated_or_folder(wanted: str) -> str | None:
        return first(lambda s: role(s) == wanted) or first(lambda s: not role(s) and folder(s).name == wanted)

    def guided(s: dict[str, Any]) -> bool:
        return on_base(s) and math.isclose(settings(s)[0], gamma) and settings(s)[1] == 1.0

    teacher = first(lambda s: role(s) == "teacher" and guided(s)) or first(guided)
    base = first(lambda s: on_base(s) and settings(s) == (1.0, 1.0))
    quality, diversity = stated_or_folder("quality"), stated_or_folder("diversity")
    control, offline = stated_or_folder("control"), stated_or_folder("offline")
    # a merge names its students by folder (merge_of); C4 reads the diversity student's merges with a
    # β = 0 student (the quality model or the control)
    ends = {folder(systems[n]).name for n in (quality, control) if n is not None}
    own = folder(systems[diversity]).name if diversity is not None else None
    merges = [
        name
        for name, s in systems.items()
        if is_merge(s) and (not s.get("merge_of") or _merges_diversity(s["merge_of"], own, ends))
    ]
    order = {name: i for i, name in enumerate(merges)}
    merges.sort(key=lambda n: (math.isnan(merge_lambda(systems[n])), merge_lambda(systems[n]), order[n]))
    conditioned = sorted(
        (name for name, s in systems.items() if role(s) == "conditioned" and not math.isnan(dial_weight(s))),
        key=lambda n: dial_weight(systems[n]),
    )
    return Roles(teacher, base, quality, diversity, tuple(merges), offline, control, tuple(conditioned))
