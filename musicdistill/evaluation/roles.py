"""Which evaluated system plays which part in the claims and fronts, read from ``metrics.json`` systems.

Systems are recognised by checkpoint folder and sampling settings, not by display name (the main
job's naming is :func:`musicdistill.pipeline.stages.main_job_systems`):

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

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "merges": list(self.merges)}

    def tags(self) -> dict[str, str]:
        """``{system name: role}`` for the systems with a role (merges are not tagged)."""
        tags = {
            self.teacher: "teacher",
            self.base: "base",
            self.quality: "quality model",
            self.diversity: "diversity model",
            self.offline: "offline student",
        }
        return {name: tag for name, tag in tags.items() if name}


def folder(system: dict[str, Any]) -> Path:
    return Path(str(system.get("checkpoint", "")))


def settings(system: dict[str, Any]) -> tuple[float, float]:
    """(CFG scale, temperature) of a system (1, 1 when unset)."""
    s = system.get("settings") or {}
    return float(s.get("cfg_scale", 1.0)), float(s.get("temperature", 1.0))


def on_base(system: dict[str, Any]) -> bool:
    return folder(system).name == BASE_FOLDER


def is_merge(system: dict[str, Any]) -> bool:
    return system.get("family") == "merged" or folder(system).parent.name == "merges"


def merge_lambda(system: dict[str, Any]) -> float:
    """λ of a merged checkpoint from its folder name (``lam_0.25``); NaN when the name carries none."""
    found = _LAMBDA.search(folder(system).name)
    return float(found.group(1)) if found else math.nan


def rows_per_frame(system: dict[str, Any]) -> int | None:
    """Model rows one generated frame costs (2 with CFG, 1 without); None when not recorded."""
    rows = (system.get("cost") or {}).get("rows_per_sample")
    return int(rows) if isinstance(rows, (int, float)) else None


def find_roles(systems: dict[str, dict[str, Any]], gamma: float) -> Roles:
    """The teacher, base, students, offline student and merges of ``metrics["systems"]`` (see module doc)."""

    def first(pred: Callable[[dict[str, Any]], bool]) -> str | None:
        return next((name for name, s in systems.items() if pred(s)), None)

    teacher = first(lambda s: on_base(s) and math.isclose(settings(s)[0], gamma) and settings(s)[1] == 1.0)
    base = first(lambda s: on_base(s) and settings(s) == (1.0, 1.0))
    quality = first(lambda s: folder(s).name == "quality")
    diversity = first(lambda s: folder(s).name == "diversity")
    offline = first(lambda s: folder(s).name == "offline")
    merges = [name for name, s in systems.items() if is_merge(s)]
    order = {name: i for i, name in enumerate(merges)}
    merges.sort(key=lambda n: (math.isnan(merge_lambda(systems[n])), merge_lambda(systems[n]), order[n]))
    return Roles(teacher, base, quality, diversity, tuple(merges), offline)
