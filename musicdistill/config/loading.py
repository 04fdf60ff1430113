"""Reading a configuration: YAML files and saved configs mapped onto the schema, dotted overrides,
validation.

:func:`load_config` reads a YAML file, applies overrides such as ``pretrain.steps=200``, rejects
unknown keys with the closest valid one (and moved keys with their new place), checks types, ranges
and the rules across fields, and returns a :class:`~musicdistill.config.schema.Config`. Nothing runs
before the whole config is valid. :func:`load_saved_config` and :func:`section_from_dict` read the
configs musicdistill itself wrote; :func:`save_config` writes one atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from musicdistill.config.keys import config_keys, config_sections, config_to_dict, field_type, key_doc
from musicdistill.config.schema import Config, ConfigError, DistillConfig
from musicdistill.config.students import Student, parse_merges, parse_students
from musicdistill.storage.atomic import atomic_write_text

#: Keys that moved to another section: old dotted key -> new dotted key. A YAML file or override that
#: names the old key is refused with the new one; configs saved with checkpoints and runs before the
#: move are read with the key moved (:func:`section_from_dict`, :func:`load_saved_config`).
MOVED_KEYS: dict[str, str] = {
    "distill.diversity_beta": "run.students.diversity.beta",
    "run.diversity_beta": "run.students.diversity.beta",
    "run.diversity_distill": "run.students.diversity.distill",
    "distill.compare_offline": "run.compare_offline",
    "evaluate.cfg_scales": "run.cfg_scales",
    "evaluate.temperatures": "run.temperatures",
}

#: a number with an exponent, e.g. ``3e-4``, which YAML 1.1 (PyYAML) leaves a string unless the mantissa has a dot
_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def moved_key_message(old: str, override: str | None = None) -> str:
    """Why ``old`` (a key of :data:`MOVED_KEYS`) is refused, naming its new key; ``override``: the
    command-line text that set it (None: a YAML file did)."""
    new = MOVED_KEYS[old]
    section_name, _, leaf = new.partition(".")
    if override is None:
        head, fix = f"config key '{old}'", f"move it to the '{section_name}' section as '{leaf}'"
    else:
        head, fix = f"override '{override}': '{old}'", f"write {new}={override.partition('=')[2]}"
    doc = key_doc(new)
    if new.startswith("run.students."):
        fix += " (the student named diversity, with role: diversity; see configs/default.yaml)"
        doc = key_doc("run.students")
    return f"{head} has moved to '{new}' ({section_name}: {key_doc(section_name)}); {fix}. {new}: {doc}"


STUDENTS_KEY = "run.students"


def _migrate_students(raw: dict[str, Any]) -> None:
    """A saved config from before ``run.students`` (``run.diversity_beta``, ``run.diversity_distill``,
    or older ``distill.diversity_beta``) gets the two students it trained: quality and diversity."""
    run = raw.get("run") if isinstance(raw.get("run"), dict) else {}
    distill = raw.get("distill") if isinstance(raw.get("distill"), dict) else {}
    old = {k: run.pop(k) for k in ("diversity_beta", "diversity_distill") if k in run}
    if "diversity_beta" in distill:
        old.setdefault("diversity_beta", distill.pop("diversity_beta"))
    if not old or "students" in run:
        return
    diversity = {"role": "diversity", "beta": old.get("diversity_beta", 15.0)}
    if old.get("diversity_distill"):
        diversity["distill"] = dict(old["diversity_distill"])
    run["students"] = {"quality": {"role": "quality", "beta": 0.0}, "diversity": diversity}
    raw["run"] = run


def migrate_moved_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config mapping with each old key of :data:`MOVED_KEYS` at its new place.

    For configs written by musicdistill itself (next to a checkpoint, a run's ``config.yaml``) before
    a key moved; a key already at its new place wins. User files get :func:`moved_key_message` instead.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    _migrate_students(out)
    for old, new in MOVED_KEYS.items():
        if new.startswith(STUDENTS_KEY + "."):
            continue
        old_section, _, old_leaf = old.partition(".")
        new_section, _, new_leaf = new.partition(".")
        if not isinstance(out.get(old_section), dict) or old_leaf not in out[old_section]:
            continue
        value = out[old_section].pop(old_leaf)
        target = out.setdefault(new_section, {})
        if isinstance(target, dict):
            target.setdefault(new_leaf, value)
    return out


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.4)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(candidates))}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-4 (no dot in the mantissa) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping (e.g. {{lr: 0.0001}}), got {value!r}")
        return dict(value)
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return list(value)
    return value


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in raw.items():
        if key not in names:
            full = prefix + str(key)
            while isinstance(value, dict) and len(value) == 1:  # name the leaf: 'train.steps', not 'train'
                ((sub, value),) = value.items()
                full += f".{sub}"
            if full in MOVED_KEYS:
                raise ConfigError(moved_key_message(full))
            raise ConfigError(f"unknown config key '{full}'{_suggest(full, config_keys())}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        tp = field_type(cls, f)
        where = prefix + f.name
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, raw[f.name] or {}, where + ".")
        else:
            kwargs[f.name] = _coerce(raw[f.name], tp, where)
    return cls(**kwargs)


def _check_ranges(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_ranges(value, where + ".")
            continue
        m = f.metadata
        if m.get("choices") is not None and value not in m["choices"]:
            raise ConfigError(f"{where}={value!r} is not allowed; choose one of {list(m['choices'])}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if m.get("ge") is not None and value < m["ge"]:
                raise ConfigError(f"{where}={value} is out of range; it must be >= {m['ge']}")
            if m.get("gt") is not None and value <= m["gt"]:
                raise ConfigError(f"{where}={value} is out of range; it must be > {m['gt']}")
            if m.get("le") is not None and value > m["le"]:
                raise ConfigError(f"{where}={value} is out of range; it must be <= {m['le']}")
            if m.get("lt") is not None and value >= m["lt"]:
                raise ConfigError(f"{where}={value} is out of range; it must be < {m['lt']}")


def _check_consistency(cfg: Config) -> None:
    """Cross-field rules that a single range cannot express."""
    if cfg.model.dim % cfg.model.heads:
        raise ConfigError(f"model.heads={cfg.model.heads} must divide model.dim={cfg.model.dim}")
    if (cfg.model.dim // cfg.model.heads) % 2 and cfg.model.positions == "rope":
        raise ConfigError("model.dim / model.heads must be even with model.positions=rope")
    if len(cfg.model.delays) != cfg.codec.num_codebooks and cfg.codec.kind == "melrvq":
        raise ConfigError(
            f"model.delays has {len(cfg.model.delays)} entries but codec.num_codebooks={cfg.codec.num_codebooks}; "
            "give one delay per codebook"
        )
    if any((not isinstance(d, int)) or d < 0 for d in cfg.model.delays):
        raise ConfigError(f"model.delays={cfg.model.delays} must be non-negative integers")
    if cfg.codec.fmax > cfg.data.sample_rate / 2:
        raise ConfigError(
            f"codec.fmax={cfg.codec.fmax} is above the Nyquist frequency of data.sample_rate={cfg.data.sample_rate}; "
            f"set codec.fmax <= {cfg.data.sample_rate / 2}"
        )
    if cfg.distill.advantage_norm == "group" and cfg.distill.group_size < 3:
        raise ConfigError(
            f"distill.advantage_norm=group needs distill.group_size >= 3 (got {cfg.distill.group_size}): with two "
            "rollouts a prompt's advantages are equal and dividing by their spread leaves no signal; raise "
            "distill.group_size or set distill.advantage_norm=none"
        )
    if cfg.codec.fmin >= cfg.codec.fmax:
        raise ConfigError(f"codec.fmin={cfg.codec.fmin} must be below codec.fmax={cfg.codec.fmax}")
    students = parse_students(cfg)
    parse_merges(cfg, students)
    for student in students:
        student_distill_config(cfg, student)


def student_distill_config(cfg: Config, student: Student) -> DistillConfig:
    """The ``distill`` section with ``student``'s changes, its β and on-policy mode: what its stage trains.

    Raises ConfigError naming ``run.students.<name>.distill.<key>`` when a changed value is out of range.
    """
    names = [f.name for f in dataclasses.fields(DistillConfig)]
    merged = {name: getattr(cfg.distill, name) for name in names}
    where = f"run.students.{student.settings_of or student.name}.distill."
    section = _build(DistillConfig, {**merged, **student.distill}, where)
    section = dataclasses.replace(section, beta=student.beta, mode="on_policy")
    _check_ranges(section, where)
    return section


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'pretrain.steps=200'`` -> (['pretrain', 'steps'], 200). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. pretrain.steps=200)")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': cannot parse value {value!r}: {exc}") from exc
    return key.split("."), parsed


def override_key(text: str) -> str:
    """The dotted key an override sets: ``'distill.beta=3'`` -> ``'distill.beta'``."""
    return ".".join(parse_override(text)[0])


def check_override_keys(overrides: list[str]) -> None:
    """Refuse an override of a moved or unknown key, naming the override (not the YAML file)."""
    keys = config_keys()
    known = set(keys) | set(config_sections())
    for text in overrides:
        key = override_key(text)
        if key in MOVED_KEYS:
            raise ConfigError(moved_key_message(key, override=text))
        if key not in known and not any(key.startswith(k + ".") for k in keys):
            raise ConfigError(f"override '{text}': unknown config key '{key}'{_suggest(key, keys)}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override in a nested dict (creating sections as needed)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults), apply dotted overrides, validate everything.

    Raises ConfigError naming the file, key and fix on any problem.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass an existing YAML file (see configs/)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    check_override_keys(list(overrides or []))
    raw = apply_overrides(raw, list(overrides or []))
    try:
        cfg = _build(Config, raw, "")
        _check_ranges(cfg)
        _check_consistency(cfg)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None
    return cfg


def section_from_dict(cls: type, raw: dict[str, Any]) -> Any:
    """Rebuild a section (e.g. ModelConfig) or a whole Config from a dict saved next to a checkpoint.

    A whole Config saved before a key moved (:data:`MOVED_KEYS`) is read with the key at its new place.
    """
    if cls is Config and isinstance(raw, dict):
        raw = migrate_moved_keys(raw)
    obj = _build(cls, raw, "")
    _check_ranges(obj)
    return obj


def load_saved_config(path: str | Path) -> Config:
    """A resolved config musicdistill wrote (a run's ``config.yaml``), read as :func:`section_from_dict` does.

    Unlike :func:`load_config` it accepts keys that have since moved (:data:`MOVED_KEYS`).
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the saved config ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return section_from_dict(Config, raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def save_config(obj: Any, path: str | Path) -> Path:
    """Write the resolved config (or a section) as YAML, atomically."""
    text = yaml.safe_dump(config_to_dict(obj), sort_keys=False)
    return atomic_write_text(Path(path), text)
