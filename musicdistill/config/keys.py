"""What is built on the schema (:mod:`musicdistill.config.schema`): every dotted key, its one-line doc,
the sections, a config as a plain dict and its stable hash (what decides whether a stage reruns)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

from musicdistill.config.schema import Config


def _all_dotted_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        sub = field_type(cls, f)
        if dataclasses.is_dataclass(sub):
            keys.extend(_all_dotted_keys(sub, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def field_type(cls: type, f: dataclasses.Field) -> Any:
    """The resolved type of field ``f`` of dataclass ``cls`` (annotations are strings here)."""
    hints = typing.get_type_hints(cls)
    return hints[f.name]


def config_keys() -> list[str]:
    """Every dotted leaf key of :class:`Config`, e.g. ``'distill.beta'``, ``'device'``."""
    return _all_dotted_keys(Config)


def config_sections() -> list[str]:
    """The names of :class:`Config`'s sections, e.g. ``'distill'``, ``'run'``."""
    return [f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(field_type(Config, f))]


def key_doc(key: str) -> str:
    """The one-line doc of a dotted key or section of :class:`Config` (empty when unknown)."""
    cls: Any = Config
    doc = ""
    for part in key.split("."):
        found = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in found:
            return ""
        doc = found[part].metadata.get("doc", "")
        cls = field_type(cls, found[part])
    return doc


def config_to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a config (or section)."""
    return dataclasses.asdict(obj)


def config_hash(obj: Any) -> str:
    """A short stable hash of a config or section, used to decide whether a stage must rerun."""
    blob = json.dumps(config_to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every field: used by ``musicdistill config show``."""
    rows = []
    for f in dataclasses.fields(cls):
        tp = field_type(cls, f)
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, prefix + f.name + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((prefix + f.name, default, f.metadata.get("doc", "")))
    return rows
