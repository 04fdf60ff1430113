"""Attribute labels of user data: where they come from, what values they take, which the oracle can learn.

A manifest row's attributes are its ``attributes`` object plus every other column that is not one of
:data:`RESERVED` or :data:`FILE_METADATA` (:func:`merge_attributes`; the object wins a clash). CSV
cells are text, so numbers in them are read as numbers (:func:`parse_cell`).

A *numeric* attribute with more than :data:`MAX_NUMERIC_VALUES` distinct values (a bpm, say) cannot be
a classifier's label as it is; :func:`add_numeric_classes` adds ``<name>_class``, its terciles over the
manifest's rows (e.g. ``"<96"``, ``"96-128"``, ``">=128"``), which can.

:func:`summarise_attributes` counts each attribute's values over clips and files and decides whether
the attribute oracle can learn it: a categorical attribute with at least 2 values, each on at least
``min_clips`` training clips from at least :data:`MIN_FILES_PER_VALUE` files (a label unique to one
recording, such as a title, would be learned from one file and could not generalise).
:func:`choose_heads` turns that into the oracle's heads when ``oracle.heads`` is empty; the built-in
data keeps its tuned heads (:data:`BUILTIN_HEADS`).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicdistill.data.captions import ATTRIBUTE_NAMES

log = logging.getLogger(__name__)

#: manifest columns with a meaning of their own: never attributes
RESERVED = ("path", "audio", "caption", "start", "duration", "split", "attributes")
#: columns that describe the file rather than the music (``data synth`` writes ``sample_rate``)
FILE_METADATA = ("sample_rate", "channels")
#: keys inside ``attributes`` that are not labels: ``stated`` lists the attributes a caption states
META_KEYS = ("stated",)
#: a numeric attribute with more distinct values than this is binned (:func:`add_numeric_classes`)
MAX_NUMERIC_VALUES = 8
#: classes of a binned numeric attribute (terciles)
NUMERIC_CLASSES = 3
CLASS_SUFFIX = "_class"
#: a value the oracle learns must come from at least this many files
MIN_FILES_PER_VALUE = 2
#: the oracle heads tuned for the built-in data (``key+mode`` is one joint classifier)
BUILTIN_HEADS = ("instrument", "tempo", "key+mode", "register", "drums")

_INT = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def parse_cell(text: str) -> Any:
    """A CSV cell as a value: ``"120"`` -> 120, ``"97.5"`` -> 97.5, anything else stays text."""
    stripped = text.strip()
    if _INT.match(stripped):
        return int(stripped)
    try:
        number = float(stripped)
    except ValueError:
        return stripped
    return number if math.isfinite(number) else stripped


def merge_attributes(record: dict[str, Any], source: str) -> tuple[dict[str, Any] | None, list[str]]:
    """A row's attributes: its label columns plus its ``attributes`` object (the object wins a clash).

    Returns the merged dict (None when the row has no label) and the keys given both ways.
    """
    labels = record.get("attributes")
    if labels is not None and not isinstance(labels, dict):
        raise ValueError(f"{source}: 'attributes' must be a JSON object, got {labels!r}")
    columns = {
        str(k): v for k, v in record.items() if k not in RESERVED and k not in FILE_METADATA and v is not None
    }
    labels = {str(k): v for k, v in (labels or {}).items() if v is not None}
    both = sorted(set(columns) & set(labels))
    merged = {**columns, **labels}
    return (merged or None), both


def warn_overlaps(where: str, overlaps: list[tuple[str, list[str]]]) -> None:
    """One warning for every row of a manifest that gives a label both as a column and in ``attributes``."""
    if not overlaps:
        return
    keys = sorted({k for _, found in overlaps for k in found})
    log.warning(
        "%s: %d row(s) give %s both as a column and inside 'attributes'; the 'attributes' value is used "
        "(first: %s). Keep each label in one place.",
        where,
        len(overlaps),
        ", ".join(repr(k) for k in keys),
        overlaps[0][0],
    )


# --------------------------------------------------------------------------------------------
# Numeric attributes
# --------------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _numeric_keys(rows: Sequence[dict[str, Any] | None]) -> dict[str, list[float]]:
    """Attributes whose every value is a finite number, with their values."""
    values: dict[str, list[float]] = {}
    bad: set[str] = set()
    for row in rows:
        for key, value in (row or {}).items():
            if key in META_KEYS or key in bad:
                continue
            if is_number(value) and math.isfinite(float(value)):
                values.setdefault(key, []).append(float(value))
            else:
                bad.add(key)
                values.pop(key, None)
    return values


def _edge(value: float) -> float:
    """``value`` rounded to 3 significant digits."""
    return float(f"{value:.3g}")


def class_edges(values: Sequence[float], classes: int = NUMERIC_CLASSES) -> list[float]:
    """Inner edges of ``classes`` quantile bins of ``values`` (rounded, distinct, inside the range)."""
    low, high = min(values), max(values)
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, classes) / classes)
    return sorted({e for e in (_edge(float(q)) for q in quantiles) if low < e <= high})


def class_label(value: float, edges: Sequence[float]) -> str:
    """The bin of ``value``: ``"<a"``, ``"a-b"`` or ``">=b"`` for edges ``[a, b]``."""
    if value < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if value < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def add_numeric_classes(
    rows: Sequence[dict[str, Any] | None],
) -> tuple[list[dict[str, Any] | None], list[str]]:
    """Each row with ``<name>_class`` added for every numeric attribute with more than
    :data:`MAX_NUMERIC_VALUES` distinct values (its terciles over ``rows``), and a note per binned one."""
    added: dict[str, list[float]] = {}
    notes = []
    present = {k for row in rows for k in (row or {})}
    for key, values in sorted(_numeric_keys(rows).items()):
        name = key + CLASS_SUFFIX
        if len(set(values)) <= MAX_NUMERIC_VALUES or name in present:
            continue
        edges = class_edges(values)
        if not edges:
            continue
        added[key] = edges
        labels = [class_label(e, edges) for e in (min(values), *edges)]
        notes.append(f"numeric attribute '{key}' ({len(set(values))} values) binned into '{name}': {labels}")
    if not added:
        return list(rows), notes
    out = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        extra = {k + CLASS_SUFFIX: class_label(float(row[k]), e) for k, e in added.items() if k in row}
        out.append({**row, **extra})
    return out, notes


# --------------------------------------------------------------------------------------------
# What the oracle can learn
# --------------------------------------------------------------------------------------------


@dataclass
class AttributeSummary:
    """One attribute over a set of clips: its kind, values with clip and file counts, and whether the
    oracle can learn it (``usable``, else ``note`` says why)."""

    name: str
    kind: str  # categorical | numeric | list/object
    clips: Counter = field(default_factory=Counter)  # value -> clips
    files: Counter = field(default_factory=Counter)  # value -> distinct files
    usable: bool = False
    note: str = ""

    def describe(self, limit: int = 8) -> str:
        """e.g. ``instrument: categorical, 3 values: flute 96 clips/4 files, ...; oracle: yes``."""
        items = self.clips.most_common()
        if self.kind == "numeric":
            numbers = [float(v) for v in self.clips]
            values = f"{len(items)} values in [{min(numbers):g}, {max(numbers):g}]"
        else:
            shown = ", ".join(
                f"{v} ({_count(n, 'clip')}, {_count(self.files[v], 'file')})" for v, n in items[:limit]
            )
            more = f", ... {len(items) - limit} more" if len(items) > limit else ""
            values = f"{len(items)} value{'s' if len(items) != 1 else ''}: {shown}{more}"
        verdict = "yes" if self.usable else f"no ({self.note})"
        return f"{self.name}: {self.kind}, {values}; oracle: {verdict}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _kind(values: list[Any]) -> str:
    if any(isinstance(v, (list, dict, tuple)) for v in values):
        return "list/object"
    if all(is_number(v) for v in values) and len({float(v) for v in values}) > MAX_NUMERIC_VALUES:
        return "numeric"
    return "categorical"


def summarise_attributes(
    attributes: Sequence[dict[str, Any] | None],
    files: Sequence[str],
    min_clips: int,
    train: Sequence[bool] | None = None,
) -> list[AttributeSummary]:
    """Every attribute of some clips (``attributes``, one per clip; ``files``: each clip's file) with
    its values, and whether the oracle can learn it from the clips flagged ``train`` (default: all)."""
    if len(files) != len(attributes):
        raise ValueError(f"{len(attributes)} attribute entries but {len(files)} files")
    train = [True] * len(attributes) if train is None else list(train)
    raw: dict[str, list[Any]] = {}
    for row in attributes:
        for key, value in (row or {}).items():
            if key not in META_KEYS:
                raw.setdefault(key, []).append(value)
    out = []
    for name in sorted(raw):
        summary = AttributeSummary(name, _kind(raw[name]))
        train_clips: Counter = Counter()
        train_files: dict[str, set[str]] = {}
        all_files: dict[str, set[str]] = {}
        for row, path, used in zip(attributes, files, train):
            if not row or row.get(name) is None or summary.kind == "list/object":
                continue
            value = str(row[name])
            summary.clips[value] += 1
            all_files.setdefault(value, set()).add(path)
            if used:
                train_clips[value] += 1
                train_files.setdefault(value, set()).add(path)
        summary.files = Counter({v: len(p) for v, p in all_files.items()})
        summary.usable, summary.note = _usable(summary, train_clips, train_files, min_clips)
        out.append(summary)
    return out


def _usable(
    summary: AttributeSummary, clips: Counter, files: dict[str, set[str]], min_clips: int
) -> tuple[bool, str]:
    if summary.kind == "list/object":
        return False, "holds lists or objects; the oracle needs one value per clip"
    if summary.kind == "numeric":
        return False, f"numeric; the oracle learns its classes '{summary.name}{CLASS_SUFFIX}' instead"
    if len(summary.clips) < 2:
        return False, f"{len(summary.clips)} value; needs at least 2"
    rare = [
        f"'{v}' ({_count(clips[v], 'training clip')}, {_count(len(files.get(v, ())), 'file')})"
        for v in sorted(summary.clips)
        if clips[v] < min_clips or len(files.get(v, ())) < MIN_FILES_PER_VALUE
    ]
    if rare:
        return False, (
            f"every value needs {min_clips} training clips from {MIN_FILES_PER_VALUE} files "
            f"(oracle.min_clips_per_class); too rare: {', '.join(rare[:4])}{' ...' if len(rare) > 4 else ''}"
        )
    return True, ""


def is_builtin(attributes: Sequence[dict[str, Any] | None]) -> bool:
    """True when every clip carries the built-in data's attribute set (its synthesiser's contract)."""
    keys = {*ATTRIBUTE_NAMES, *META_KEYS}
    return bool(attributes) and all(row is not None and keys <= set(row) for row in attributes)


@dataclass
class HeadChoice:
    """The oracle's heads and where they came from: ``config`` (oracle.heads), ``built-in`` or ``data``."""

    heads: list[str]
    source: str
    notes: list[str] = field(default_factory=list)

    def require(self) -> list[str]:
        """The heads; a clear error when there is none."""
        if not self.heads:
            raise ValueError(
                "no attribute of the training clips can be learned by the oracle ("
                + "; ".join(self.notes or ["the clips carry no attributes"])
                + "); add categorical labels to the manifest or set oracle.heads"
            )
        return list(self.heads)

    def as_dict(self) -> dict[str, Any]:
        return {"heads": list(self.heads), "source": self.source, "notes": list(self.notes)}


def choose_heads(
    heads: Sequence[str],
    attributes: Sequence[dict[str, Any] | None],
    min_clips: int,
    files: Sequence[str] | None = None,
) -> HeadChoice:
    """The oracle's heads: ``heads`` when given (``oracle.heads``); else the built-in data's tuned
    heads on the built-in data; else every attribute of the training clips the oracle can learn
    (:func:`summarise_attributes`; ``files`` default: every clip its own file)."""
    if heads:
        return HeadChoice(list(heads), "config")
    if is_builtin(attributes):
        return HeadChoice(list(BUILTIN_HEADS), "built-in")
    files = [str(i) for i in range(len(attributes))] if files is None else list(files)
    summaries = summarise_attributes(attributes, files, min_clips)
    chosen = [s.name for s in summaries if s.usable]
    notes = [f"'{s.name}' skipped: {s.note}" for s in summaries if not s.usable]
    return HeadChoice(chosen, "data", notes)
