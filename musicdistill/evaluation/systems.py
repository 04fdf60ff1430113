"""Systems under comparison: a checkpoint plus the sampling settings it is judged with.

Shared by ``musicdistill evaluate`` and ``musicdistill listening export``; ``section`` names the
config list (e.g. ``evaluate.systems``) so every error points at the exact field.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from musicdistill.config import MAX_CFG_SCALE, GenerateConfig
from musicdistill.generation.spec import SamplingSpec

SYSTEM_KEYS = (
    "name",
    "checkpoint",
    "cfg_scale",
    "temperature",
    "top_k",
    "top_p",
    "codec",
    "family",
    "role",
    "lam",
    "merge_of",
    "w",
)
#: the parts a system can play in the claims (docs/method.md section 7); "" = not stated
SYSTEM_ROLES = (
    "",
    "base",
    "teacher",
    "quality",
    "diversity",
    "control",
    "student",
    "merge",
    "offline",
    "conditioned",
)


def slug(name: str) -> str:
    """A system's file/folder name: lowercase ASCII ``[a-z0-9._-]`` only.

    One rule: accents are stripped (other non-ASCII letters dropped), a separator between a letter
    and a number is removed (``CFG 3`` -> ``cfg3``, ``beta=15`` -> ``beta15``), every other run of
    characters outside ``[a-z0-9.-]`` becomes one ``_``, and ``_ . -`` are trimmed from both ends.
    ``"base CFG 1.5"`` -> ``base_cfg1.5``, ``"diversity (beta=15)"`` -> ``diversity_beta15``,
    ``"merge lambda=0.5"`` -> ``merge_lambda0.5``. The display name stays ``name``; "" means no slug.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"(?<=[a-z])[^a-z0-9.-]+(?=[0-9])", "", text)
    return re.sub(r"[^a-z0-9.-]+", "_", text).strip("_.-")


# --------------------------------------------------------------------------------------------
# Systems and prompts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemSpec:
    """One system under test: a checkpoint folder and the settings it samples with."""

    name: str
    checkpoint: str
    cfg_scale: float
    temperature: float
    top_k: int
    top_p: float
    codec: str = ""
    index: int = 0
    family: str = ""
    section: str = "listening.systems"
    role: str = ""
    lam: float | None = None
    merge_of: tuple[str, ...] = ()
    w: float | None = None  # a conditioned student's diversity weight (None: not conditioned, or w = 0)

    @property
    def where(self) -> str:
        return f"{self.section}[{self.index}]"

    @property
    def slug(self) -> str:
        """The system's folder/file name (:func:`slug` of its display name)."""
        return slug(self.name)

    @property
    def sampling(self) -> SamplingSpec:
        """The system's sampling as the one checked spec the sampler uses."""
        return SamplingSpec(self.cfg_scale, self.temperature, self.top_k, self.top_p)

    @property
    def rows_per_sample(self) -> int:
        """Model rows each sample costs per step: 2 with CFG (conditional + null), 1 without."""
        return self.sampling.rows_per_sample

    def identity(self) -> dict[str, Any]:
        """The role (and for a merge its λ and students) as metrics.json records them; empty when unset."""
        out: dict[str, Any] = {"role": self.role} if self.role else {}
        if self.lam is not None:
            out["lam"] = self.lam
        if self.merge_of:
            out["merge_of"] = list(self.merge_of)
        if self.w is not None:
            out["w"] = self.w
        return out

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cfg_scale": self.cfg_scale,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }
        if self.w is not None:
            out["w"] = self.w
        return out


def _number(
    raw: dict[str, Any], key: str, default: float, where: str, lo: float, hi: float, integer: bool = False
) -> Any:
    value = raw.get(key, default)
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (integer and not float(value).is_integer())
    ):
        raise ValueError(f"{where}.{key}={value!r} must be {kind} in [{lo:g}, {hi:g}]")
    if not lo <= value <= hi:
        raise ValueError(f"{where}.{key}={value!r} is out of range; it must lie in [{lo:g}, {hi:g}]")
    return int(value) if integer else float(value)


def _text(raw: dict[str, Any], key: str, where: str, required: bool) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(
            f"{where}.{key}={value!r} must be a non-empty string"
            if required
            else f"{where}.{key}={value!r} must be a string"
        )
    return value.strip()


def parse_system(
    raw: Any, index: int, defaults: GenerateConfig, section: str = "listening.systems"
) -> SystemSpec:
    """Validate one entry of a systems list; unspecified sampling settings come from ``defaults``."""
    where = f"{section}[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping with at least name and checkpoint, got {raw!r}")
    for key in raw:
        if key not in SYSTEM_KEYS:
            close = difflib.get_close_matches(str(key), SYSTEM_KEYS, n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(SYSTEM_KEYS)}"
            raise ValueError(f"{where}.{key} is not a system setting{hint}")
    return SystemSpec(
        name=_text(raw, "name", where, required=True),
        checkpoint=_text(raw, "checkpoint", where, required=True),
        cfg_scale=_number(raw, "cfg_scale", defaults.cfg_scale, where, 0.0, MAX_CFG_SCALE),
        temperature=_number(raw, "temperature", defaults.temperature, where, 0.0, 10.0),
        top_k=_number(raw, "top_k", defaults.top_k, where, 0, 1_000_000, integer=True),
        top_p=_number(raw, "top_p", defaults.top_p, where, 0.0, 1.0),
        codec=_text(raw, "codec", where, required=False),
        index=index,
        family=_text(raw, "family", where, required=False),
        section=section,
        w=None if raw.get("w") is None else _number(raw, "w", 0.0, where, 0.0, 1.0),
        **_identity(raw, where),
    )


def _identity(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``role``, ``lam`` and ``merge_of`` of a system entry, validated (a merge needs its λ)."""
    role = _text(raw, "role", where, required=False)
    if role not in SYSTEM_ROLES:
        raise ValueError(f"{where}.role={role!r}: choose one of {', '.join(r for r in SYSTEM_ROLES if r)}")
    lam = _number(raw, "lam", 0.0, where, 0.0, 1.0) if "lam" in raw else None
    if role == "merge" and lam is None:
        raise ValueError(f"{where}: a system with role: merge needs its lam (0..1, e.g. lam: 0.5)")
    merge_of = raw.get("merge_of", [])
    if not isinstance(merge_of, list) or not all(isinstance(n, str) for n in merge_of):
        raise ValueError(f"{where}.merge_of={merge_of!r} must be a list of two student names")
    return {"role": role, "lam": lam, "merge_of": tuple(merge_of)}


def parse_systems(raw: Any, defaults: GenerateConfig, section: str = "listening.systems") -> list[SystemSpec]:
    """Validate a systems list: a non-empty list of systems with unique names."""
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            f"{section} is empty; list the systems to compare, e.g. "
            "[{name: base_cfg3, checkpoint: runs/x/base, cfg_scale: 3.0}, ...]"
        )
    systems = [parse_system(item, i, defaults, section) for i, item in enumerate(raw)]
    seen: dict[str, int] = {}
    for s in systems:
        if not s.slug:
            raise ValueError(
                f"{s.where}.name={s.name!r} has no letters or digits to name its files by; "
                "use a name with ASCII letters or digits, e.g. 'base CFG 3'"
            )
        if s.slug in seen:
            raise ValueError(
                f"{s.where}.name={s.name!r} is already used by {section}[{seen[s.slug]}] "
                f"(both file names would be {s.slug!r}); give every system its own name"
            )
        seen[s.slug] = s.index
    return systems
