"""User manifests: JSONL, CSV, or a folder of audio with same-stem .txt captions, read into
:class:`Entry` rows (a segment of an audio file, its caption, split and labels).

A manifest row names an audio file (``path`` or ``audio``, relative paths resolve against the
manifest's folder), its ``caption``, and optionally ``start`` and ``duration`` (seconds, the segment
of the file to use), ``split`` (train/valid/test; missing splits are assigned by a hash of the
caption, so one caption never lands in two splits) and labels: an ``attributes`` object and/or any
other column (``instrument``, ``bpm``, ...; see :mod:`musicdistill.data.attributes`). In a folder
without a manifest, ``song.wav`` is captioned by ``song.txt`` and labelled by ``song.json`` (an object
of labels, which may also hold ``caption``, ``start``, ``duration`` and ``split``).

Reading the audio is :mod:`musicdistill.data.audio_io`, cutting long recordings into clips
:mod:`musicdistill.data.windows`, the per-clip checks :mod:`musicdistill.data.checks` and loading
every usable clip :mod:`musicdistill.data.loading`. Nothing is ever written next to the user's audio.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicdistill.data.attributes import (
    RESERVED,
    add_numeric_classes,
    merge_attributes,
    parse_cell,
    warn_overlaps,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid", "eval": "test"}
#: fraction of distinct captions assigned to train and valid by :func:`split_for_caption`; the rest is test
SPLIT_FRACTIONS = (0.90, 0.05)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
#: notes about a manifest already logged by this process
_SAID: set[str] = set()


def split_for_caption(caption: str) -> str:
    """'train', 'valid' or 'test' from a hash of the caption text (about 90/5/5 over distinct captions)."""
    digest = hashlib.sha256(caption.strip().encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    return "valid" if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1] else "test"


@dataclass(frozen=True)
class Entry:
    """One captioned clip: the segment [start, start + duration) of an audio file."""

    path: Path
    caption: str
    start: float = 0.0
    duration: float | None = None  # None: to the end of the file
    split: str = "train"
    attributes: dict[str, Any] | None = field(default=None, compare=False)
    source: str = ""  # where the entry was read, e.g. "data/manifest.jsonl:12" (+ " window 3/40 (...)")


def read_manifest(path: str | Path) -> list[Entry]:
    """Entries of a JSONL or CSV manifest, or of a folder (one entry per row or audio file).

    A folder holding ``manifest.jsonl`` or ``manifest.csv`` (e.g. the output of ``data synth``) is
    read through that file; any other folder is scanned recursively for audio files, each captioned
    by the same-stem ``.txt`` file beside it (an audio file without one gets an empty caption, which
    :func:`check_entries` reports) and labelled by the same-stem ``.json`` file when there is one.
    Numeric attributes with many values get a ``<name>_class`` attribute (their terciles, see
    :func:`musicdistill.data.attributes.add_numeric_classes`).
    """
    entries = _read_entries(Path(path).expanduser())
    labelled, notes = add_numeric_classes([e.attributes for e in entries])
    for note in notes:
        said = f"{path}: {note}"
        if said not in _SAID:  # every stage reads the manifest: say it once per process
            _SAID.add(said)
            log.info("%s", said)
    return [dataclasses.replace(e, attributes=a) for e, a in zip(entries, labelled)]


def _read_entries(path: Path) -> list[Entry]:
    if not path.exists():
        raise FileNotFoundError(
            f"manifest {path} does not exist; pass a .jsonl or .csv manifest, or a folder of audio files "
            "with same-stem .txt captions"
        )
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return _read_entries(path / name)
        return _read_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    raise ValueError(
        f"manifest {path}: unknown format '{suffix}'; use .jsonl, .csv, or a folder of audio files"
    )


def _read_jsonl(path: Path) -> list[Entry]:
    entries = []
    overlaps: list[tuple[str, list[str]]] = []
    base = path.parent.resolve()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            source = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{source}: not valid JSON ({exc.msg}); each line must be one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{source}: expected a JSON object with 'path' and 'caption', got {line.strip()[:80]}"
                )
            entries.append(entry_from_record(record, base, source, overlaps))
    warn_overlaps(str(path), overlaps)
    return entries


def _read_csv(path: Path) -> list[Entry]:
    base = path.parent.resolve()
    overlaps: list[tuple[str, list[str]]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not columns & {"path", "audio"}:
            raise ValueError(
                f"{path}: the CSV header {sorted(columns)} has no 'path' (or 'audio') column; "
                "the first line must name the columns, e.g. path,caption"
            )
        entries = []
        for number, row in enumerate(reader, 2):
            record: dict[str, Any] = {
                k: (v if k in RESERVED else parse_cell(v))
                for k, v in row.items()
                if k is not None and v not in (None, "")
            }
            source = f"{path}:{number}"
            if "attributes" in record:
                try:
                    record["attributes"] = json.loads(record["attributes"])
                except json.JSONDecodeError:
                    raise ValueError(f"{source}: the 'attributes' column must hold a JSON object") from None
            entries.append(entry_from_record(record, base, source, overlaps))
    warn_overlaps(str(path), overlaps)
    return entries


def _read_folder(folder: Path) -> list[Entry]:
    entries = []
    overlaps: list[tuple[str, list[str]]] = []
    for audio in sorted(folder.rglob("*")):
        if audio.suffix.lower() not in AUDIO_EXTENSIONS or not audio.is_file():
            continue
        if any(part.startswith(".") for part in audio.relative_to(folder).parts):
            continue
        record = _sidecar_labels(audio.with_suffix(".json"))
        text = audio.with_suffix(".txt")
        if text.is_file():
            record["caption"] = text.read_text(encoding="utf-8").strip()
        record["path"] = str(audio.resolve())
        entries.append(entry_from_record(record, folder, str(audio), overlaps))
    if not entries:
        raise ValueError(
            f"folder {folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no manifest.jsonl/.csv"
        )
    warn_overlaps(str(folder), overlaps)
    return entries


def _sidecar_labels(path: Path) -> dict[str, Any]:
    """The labels of a same-stem ``.json`` file (empty when there is none)."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc.msg}); it must hold one object of labels, "
            'e.g. {"instrument": "flute", "bpm": 96}'
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object of labels, got {type(record).__name__}")
    if "path" in record or "audio" in record:
        raise ValueError(
            f"{path}: a label file describes the audio file of the same name; remove its "
            f"{'path' if 'path' in record else 'audio'!r} field"
        )
    return record


def _number(record: dict[str, Any], key: str, source: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: '{key}' must be a number of seconds, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"{source}: '{key}'={value!r} must be a finite number of seconds >= 0")
    return number


def entry_from_record(
    record: dict[str, Any], base: Path, source: str, overlaps: list[tuple[str, list[str]]] | None = None
) -> Entry:
    """An :class:`Entry` from one manifest row; relative paths resolve against ``base``.

    Every column that is not ``path``/``audio``, ``caption``, ``start``, ``duration``, ``split`` or
    ``attributes`` is an attribute (with the ``attributes`` object's value winning a clash; such rows
    are appended to ``overlaps`` as ``(source, keys)``).
    """
    raw_path = record.get("path", record.get("audio"))
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise ValueError(
            f"{source}: needs a 'path' (or 'audio') field naming the audio file; got keys {sorted(record)}"
        )
    caption = record.get("caption", "")
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        raise ValueError(f"{source}: 'caption' must be text, got {caption!r}")
    start = _number(record, "start", source) or 0.0
    duration = _number(record, "duration", source)
    if duration == 0:
        raise ValueError(f"{source}: 'duration' must be > 0 seconds (leave it out to use the whole file)")
    split = record.get("split")
    if split in (None, ""):
        split = split_for_caption(caption)
    split = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    if split not in SPLITS:
        raise ValueError(f"{source}: split={record.get('split')!r} is not one of {list(SPLITS)}")
    attributes, both = merge_attributes(record, source)
    if both and overlaps is not None:
        overlaps.append((source, both))
    audio_path = Path(raw_path).expanduser()
    if not audio_path.is_absolute():
        audio_path = base / audio_path
    return Entry(
        path=audio_path,
        caption=caption.strip(),
        start=start,
        duration=duration,
        split=split,
        attributes=attributes,
        source=source,
    )
