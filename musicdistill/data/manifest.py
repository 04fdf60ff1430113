"""User audio: manifests (JSONL, CSV, or a folder of audio with same-stem .txt captions), loading with
resampling, mono mix-down, cropping and padding, windows of long recordings, and per-clip validation.

A manifest row names an audio file (``path`` or ``audio``, relative paths resolve against the
manifest's folder), its ``caption``, and optionally ``start`` and ``duration`` (seconds, the segment
of the file to use), ``split`` (train/valid/test; missing splits are assigned by a hash of the
caption, so one caption never lands in two splits) and labels: an ``attributes`` object and/or any
other column (``instrument``, ``bpm``, ...; see :mod:`musicdistill.data.attributes`). In a folder
without a manifest, ``song.wav`` is captioned by ``song.txt`` and labelled by ``song.json`` (an object
of labels, which may also hold ``caption``, ``start``, ``duration`` and ``split``).

A segment longer than one clip becomes many clips (:class:`~musicdistill.data.windows.Windowing`):
windows ``hop`` seconds apart, each with the row's caption, split and attributes, so no window of a
file lands in a split the file is not in. Windows are read one at a time (never a whole file), by a
few threads.

Bad clips (missing, unreadable, empty caption, silent, too short, non-finite samples) are listed by
:func:`check_entries` and skipped by :func:`load_dataset` unless ``strict``. Nothing is ever written
next to the user's audio.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

from musicdistill.config import DataConfig, OracleConfig
from musicdistill.data.attributes import (
    RESERVED,
    AttributeSummary,
    HeadChoice,
    add_numeric_classes,
    choose_heads,
    merge_attributes,
    parse_cell,
    summarise_attributes,
    warn_overlaps,
)
from musicdistill.data.windows import Windowing, plan_windows
from musicdistill.progress import track

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid", "eval": "test"}
#: fraction of distinct captions assigned to train and valid by :func:`split_for_caption`; the rest is test
SPLIT_FRACTIONS = (0.90, 0.05)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
#: a clip whose peak absolute sample is at or below this (-80 dBFS) is silent
SILENCE_PEAK = 1e-4
#: frames decoded and thrown away before a window of an MP3 file: libsndfile's MPEG decoder returns
#: wrong samples for about 5500 frames after a seek (its bit reservoir is not refilled), so a window
#: is read from this far before its start (16384 frames: 0.37 s at 44.1 kHz)
MPEG_PREROLL = 16384
#: windows of one file, and clips being read, kept in flight per reader thread
READ_AHEAD = 4
#: one clip per manifest row, cut from files longer than one clip with windows one clip apart
DEFAULT_WINDOWING = Windowing()
#: notes about a manifest already logged by this process
_SAID: set[str] = set()

T = TypeVar("T")
R = TypeVar("R")


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


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def _region(entry: Entry, rate: int, frames: int) -> tuple[int, int]:
    """(first frame, frames available) of an entry's segment in a file of ``frames`` frames."""
    first = min(int(round(entry.start * rate)), frames)
    available = frames - first
    if entry.duration is not None:
        available = min(available, int(round(entry.duration * rate)))
    return first, max(available, 0)


def _probe(entry: Entry) -> tuple[int, int] | None:
    """(sample rate, frames) of an entry's file from its header; None when it cannot be read."""
    try:
        info = sf.info(str(entry.path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return int(info.samplerate), int(info.frames)


def entry_windows(
    entry: Entry, rate: int, frames: int, duration: float, windowing: Windowing, min_duration: float
) -> list[Entry]:
    """The clips of one entry whose file holds ``frames`` frames at ``rate``: itself when its segment
    fits in one clip, else one entry per window (see :func:`musicdistill.data.windows.plan_windows`)."""
    first, available = _region(entry, rate, frames)
    size = max(1, int(round(duration * rate)))
    hop = max(1, int(round(windowing.hop_seconds(duration) * rate)))
    plan = plan_windows(available, size, hop, windowing.last, int(math.ceil(min_duration * rate)))
    if len(plan) <= 1:
        return [entry]
    where = entry.source or str(entry.path)
    out = []
    for k, (offset, length) in enumerate(plan):
        begin = first + offset
        out.append(
            dataclasses.replace(
                entry,
                start=begin / rate,
                duration=length / rate,
                source=f"{where} window {k + 1}/{len(plan)} ({begin / rate:.2f}-{(begin + length) / rate:.2f} s)",
            )
        )
    return out


def expand_windows(
    entries: list[Entry],
    duration: float,
    windowing: Windowing | None = DEFAULT_WINDOWING,
    min_duration: float = 0.5,
    workers: int = 2,
) -> list[Entry]:
    """Every clip of ``entries``: each entry whose segment is longer than ``duration`` seconds is cut into
    windows (``windowing``; None keeps one clip per entry, its first ``duration`` seconds). Only file
    headers are read; an entry whose file cannot be read stays as it is (the check reports it)."""
    if windowing is None or not entries:
        return list(entries)
    out: list[Entry] = []
    for entry, probe in zip(entries, _parallel(_probe, entries, workers)):
        if probe is None:
            out.append(entry)
        else:
            out.extend(entry_windows(entry, *probe, duration, windowing, min_duration))
    return out


def _parallel(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items`` in order, by ``workers`` threads, with at most ``READ_AHEAD * workers``
    results waiting: memory stays bounded however many items there are."""
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        queue = iter(items)
        for item in queue:
            pending.append(pool.submit(fn, item))
            if len(pending) >= READ_AHEAD * workers:
                break
        while pending:
            result = pending.popleft().result()
            for item in queue:
                pending.append(pool.submit(fn, item))
                break
            yield result


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample float32 [N] (or [N, C]) audio with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop or zero-pad float32 [N] to exactly ``num_samples``."""
    if audio.shape[0] >= num_samples:
        return np.ascontiguousarray(audio[:num_samples])
    return np.pad(audio, (0, num_samples - audio.shape[0]))


class UnreadableAudio(ValueError):
    """An audio file exists but cannot be decoded (corrupt, truncated or an unsupported format)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot decode {path} as audio: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Segment:
    """The samples of an entry's segment as stored, before resampling."""

    audio: np.ndarray  # float32 [frames, channels] at ``sample_rate``
    sample_rate: int
    channels: int
    available: float  # seconds of audio after ``start`` in the file (within ``duration`` if set)


class OpenFiles:
    """One open file per reader thread, kept for the next window of the same file.

    Reopening a long compressed file for every window costs a scan from its start (libsndfile's MP3
    decoder indexes frames only as it decodes them: about 0.07 s per window at minute 10); a handle
    that stays open seeks forward cheaply. :meth:`close` closes them all.
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[Path, sf.SoundFile]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> sf.SoundFile:
        """This thread's open handle on ``path`` (opening it, and closing its previous file)."""
        key = threading.get_ident()
        held = self._open.get(key)
        if held is not None and held[0] == path:
            return held[1]
        self.drop()
        handle = sf.SoundFile(path)
        with self._lock:
            self._open[key] = (path, handle)
        return handle

    def drop(self) -> None:
        """Close this thread's handle (after an error, its position is unknown)."""
        with self._lock:
            held = self._open.pop(threading.get_ident(), None)
        if held is not None:
            held[1].close()

    def close(self) -> None:
        with self._lock:
            held, self._open = list(self._open.values()), {}
        for _, handle in held:
            handle.close()


def read_segment(entry: Entry, max_seconds: float, files: OpenFiles | None = None) -> Segment:
    """Read at most ``max_seconds`` of ``entry``'s segment (only those frames are decoded, plus
    :data:`MPEG_PREROLL` before them in an MP3); raises FileNotFoundError or UnreadableAudio.

    ``files`` keeps the file open for the next window (see :class:`OpenFiles`); without it the file
    is opened and closed here.
    """
    if not entry.path.is_file():
        raise FileNotFoundError(f"{entry.path} does not exist")
    try:
        if files is None:
            with sf.SoundFile(entry.path) as fh:
                return _read_region(fh, entry, max_seconds)
        return _read_region(files.get(entry.path), entry, max_seconds)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        if files is not None:
            files.drop()
        raise UnreadableAudio(entry.path, getattr(exc, "error_string", None) or str(exc)) from None


def _read_region(fh: sf.SoundFile, entry: Entry, max_seconds: float) -> Segment:
    rate, channels, frames = fh.samplerate, fh.channels, fh.frames
    first, available = _region(entry, rate, frames)
    count = min(available, int(np.ceil(max_seconds * rate)))
    preroll = min(first, MPEG_PREROLL) if fh.format == "MP3" else 0
    fh.seek(first - preroll)
    audio = fh.read(count + preroll, dtype="float32", always_2d=True)[preroll:]
    return Segment(audio=audio, sample_rate=rate, channels=channels, available=available / rate)


def to_clip(segment: Segment, sample_rate: int, duration: float) -> np.ndarray:
    """Mono mix-down, resampling and crop/pad of a segment -> float32 [round(duration * sample_rate)]."""
    mono = segment.audio.mean(axis=1, dtype=np.float32)
    return fit_length(resample(mono, segment.sample_rate, sample_rate), int(round(duration * sample_rate)))


def load_audio(source: Entry | str | Path, sample_rate: int, duration: float) -> np.ndarray:
    """Load a clip as float32 [round(duration * sample_rate)]: mono, resampled, cropped from the
    entry's ``start`` or zero-padded. Any format soundfile reads (wav, flac, ogg, mp3, ...)."""
    entry = source if isinstance(source, Entry) else Entry(path=Path(source), caption="")
    return to_clip(read_segment(entry, duration), sample_rate, duration)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Why an entry cannot be used."""

    source: str
    path: str
    kind: str  # missing | unreadable | empty caption | too short | silent | non-finite
    detail: str

    def describe(self) -> str:
        where = self.source if self.source == self.path else f"{self.source} ({self.path})"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class SplitCounts:
    """Usable clips of one split, the files they come from and their distinct captions."""

    files: int = 0
    clips: int = 0
    captions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def split_counts(entries: Iterable[Entry]) -> dict[str, SplitCounts]:
    """Files, clips and distinct captions per split (in :data:`SPLITS` order, present splits only)."""
    files: dict[str, set[Path]] = {}
    captions: dict[str, set[str]] = {}
    clips: Counter = Counter()
    for e in entries:
        files.setdefault(e.split, set()).add(e.path)
        captions.setdefault(e.split, set()).add(e.caption)
        clips[e.split] += 1
    return {s: SplitCounts(len(files[s]), clips[s], len(captions[s])) for s in SPLITS if s in clips}


@dataclass
class CheckReport:
    """What :func:`check_entries` found."""

    total: int  # clips checked (windows of every row)
    usable: int
    seconds: float  # audio in the usable clips (before crop/pad)
    sample_rates: Counter = field(default_factory=Counter)  # per file
    channels: Counter = field(default_factory=Counter)  # per file
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0  # manifest rows (or audio files of a folder)
    files: int = 0  # distinct audio files the rows name
    splits: dict[str, SplitCounts] = field(default_factory=dict)  # usable clips per split
    attributes: list[AttributeSummary] = field(default_factory=list)  # over the usable clips
    heads: HeadChoice | None = None  # the oracle heads these clips give

    @property
    def bad(self) -> int:
        return len({p.source for p in self.problems})

    def summary(self) -> str:
        """e.g. '2 missing, 1 silent'."""
        kinds = Counter(p.kind for p in self.problems)
        return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "no problems"

    def counts(self) -> dict[str, Any]:
        """Rows, files, clips and per-split files, clips and captions, as plain data."""
        return {
            "rows": self.rows,
            "files": self.files,
            "clips": self.total,
            "usable": self.usable,
            "seconds": round(self.seconds, 1),
            "splits": {s: c.as_dict() for s, c in self.splits.items()},
        }

    def format(self, limit: int = 50) -> str:
        """A human-readable report listing up to ``limit`` problems."""
        rates = ", ".join(f"{r} Hz x{n}" for r, n in sorted(self.sample_rates.items())) or "none"
        chans = ", ".join(f"{c} ch x{n}" for c, n in sorted(self.channels.items())) or "none"
        splits = "; ".join(
            f"{s} {c.files} files, {c.clips} clips, {c.captions} captions" for s, c in self.splits.items()
        )
        lines = [
            f"rows: {self.rows}  files: {self.files}  clips (windows): {self.total}",
            f"usable: {self.usable}  bad: {self.bad} ({self.summary()})",
            f"usable audio: {_duration(self.seconds)} ({self.seconds / max(self.usable, 1):.2f} s per clip)",
            f"splits: {splits or 'none'}",
            f"sample rates: {rates}",
            f"channels: {chans}",
        ]
        if self.attributes:
            lines.append("attributes (usable clips; the oracle learns from the train split):")
            lines.extend(f"  {a.describe()}" for a in self.attributes)
        else:
            lines.append("attributes: none (no oracle: quality is measured by text adherence)")
        if self.heads is not None:
            lines.append(_heads_line(self.heads))
        if self.problems:
            lines.append("problems:")
        lines.extend(f"  {p.describe()}" for p in self.problems[:limit])
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _heads_line(heads: HeadChoice) -> str:
    if not heads.heads:
        return "oracle heads: none (no attribute is usable; set oracle.heads to choose)"
    why = {
        "config": "oracle.heads",
        "built-in": "the built-in data's tuned heads",
        "data": "chosen from the data; set oracle.heads to choose",
    }[heads.source]
    return f"oracle heads: {', '.join(heads.heads)} ({why})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class _Inspection:
    problems: tuple[Problem, ...]
    clip: np.ndarray | None  # float32 [samples] when usable and asked for
    sample_rate: int | None = None
    channels: int | None = None
    seconds: float = 0.0


def _inspect(
    entry: Entry,
    sample_rate: int,
    duration: float,
    min_duration: float,
    keep: bool,
    files: OpenFiles | None = None,
) -> _Inspection:
    """Read one entry and list its problems; the clip is returned only if it is usable and ``keep``."""

    def problem(kind: str, detail: str) -> Problem:
        return Problem(entry.source or str(entry.path), str(entry.path), kind, detail)

    found = [] if entry.caption.strip() else [problem("empty caption", "the caption is empty or missing")]
    try:
        segment = read_segment(entry, duration, files)
    except FileNotFoundError:
        return _Inspection((problem("missing", "the file does not exist"), *found), None)
    except UnreadableAudio as exc:
        return _Inspection(
            (problem("unreadable", f"corrupt or unsupported audio: {exc.reason}"), *found), None
        )
    info = {"sample_rate": segment.sample_rate, "channels": segment.channels, "seconds": segment.available}
    needed = min(min_duration, duration)
    if segment.available < needed:
        found.append(
            problem(
                "too short",
                f"{segment.available:.2f} s of audio after start={entry.start:g} s; "
                f"needs at least {needed:g} s",
            )
        )
    elif not np.isfinite(segment.audio).all():
        found.append(problem("non-finite", "the audio holds NaN or infinite samples"))
    else:
        peak = float(np.abs(segment.audio).max(initial=0.0))
        if peak <= SILENCE_PEAK:
            found.append(problem("silent", f"peak amplitude {peak:.1e} (<= {SILENCE_PEAK:g}, -80 dBFS)"))
    if found:
        return _Inspection(tuple(found), None, **info)
    return _Inspection((), to_clip(segment, sample_rate, duration) if keep else None, **info)


def _inspect_all(
    entries: list[Entry],
    sample_rate: int,
    duration: float,
    min_duration: float,
    keep: bool,
    workers: int,
    desc: str,
) -> Iterable[_Inspection]:
    files = OpenFiles()

    def one(entry: Entry) -> _Inspection:
        return _inspect(entry, sample_rate, duration, min_duration, keep, files)

    try:
        yield from track(
            _parallel(one, entries, workers),
            desc=desc,
            unit="clip",
            enabled=len(entries) >= 200,
            total=len(entries),
        )
    finally:
        files.close()


def _check_settings(sample_rate: int, duration: float, min_duration: float) -> None:
    if not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate={sample_rate}: must be between 1000 and 384000 Hz")
    if not duration > 0:
        raise ValueError(f"duration={duration}: must be > 0 seconds")
    if min_duration < 0:
        raise ValueError(f"min_duration={min_duration}: must be >= 0 seconds")


def check_entries(
    entries: list[Entry],
    sample_rate: int,
    duration: float,
    min_duration: float = 0.5,
    workers: int = 2,
    windowing: Windowing | None = DEFAULT_WINDOWING,
    oracle: OracleConfig | None = None,
) -> CheckReport:
    """Cut every entry into clips (``windowing``), read every clip and report the problems of each, the
    clip, file and caption counts per split, the audio duration, the sample rates and channel counts
    of the files, the attributes with their values, and the oracle heads they give (``oracle``:
    ``heads`` and ``min_clips_per_class``, default :class:`OracleConfig`)."""
    _check_settings(sample_rate, duration, min_duration)
    oracle = oracle or OracleConfig()
    clips = expand_windows(entries, duration, windowing, min_duration, workers)
    report = CheckReport(
        total=len(clips), usable=0, seconds=0.0, rows=len(entries), files=len({e.path for e in entries})
    )
    seen: set[Path] = set()
    usable: list[Entry] = []
    for entry, found in zip(
        clips, _inspect_all(clips, sample_rate, duration, min_duration, False, workers, "checking clips")
    ):
        if found.sample_rate is not None and entry.path not in seen:
            seen.add(entry.path)
            report.sample_rates[found.sample_rate] += 1
            report.channels[found.channels] += 1
        report.problems.extend(found.problems)
        if not found.problems:
            report.usable += 1
            report.seconds += found.seconds
            usable.append(entry)
    report.splits = split_counts(usable)
    attributes = [e.attributes for e in usable]
    files = [str(e.path) for e in usable]
    report.attributes = summarise_attributes(
        attributes, files, oracle.min_clips_per_class, [e.split == "train" for e in usable]
    )
    train = [i for i, e in enumerate(usable) if e.split == "train"]
    report.heads = choose_heads(
        oracle.heads, [attributes[i] for i in train], oracle.min_clips_per_class, [files[i] for i in train]
    )
    return report


def load_dataset(
    manifest: str | Path | list[Entry],
    sample_rate: int,
    duration: float,
    split: str | None = None,
    strict: bool = False,
    workers: int = 2,
    min_duration: float = 0.5,
    windowing: Windowing | None = DEFAULT_WINDOWING,
) -> tuple[list[Entry], np.ndarray]:
    """Load every usable clip of a manifest (or entry list) -> (clip entries, float32 [N, samples]).

    Entries longer than one clip are cut into windows (``windowing``; None: the first ``duration``
    seconds of each), one returned entry per clip. ``split`` keeps one split. Bad clips are skipped
    with a logged summary; ``strict`` raises instead. Raises ValueError when no usable clip remains.
    """
    _check_settings(sample_rate, duration, min_duration)
    entries = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    name = str(manifest) if isinstance(manifest, (str, Path)) else "the given entries"
    if split is not None:
        wanted = SPLIT_ALIASES.get(split, split)
        if wanted not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
        present = Counter(e.split for e in entries)
        entries = [e for e in entries if e.split == wanted]
        if not entries:
            raise ValueError(f"{name} has no entries in split '{wanted}' (splits present: {dict(present)})")
    rows = len(entries)
    entries = expand_windows(entries, duration, windowing, min_duration, workers)
    num_samples = int(round(duration * sample_rate))
    audio = np.empty((len(entries), num_samples), dtype=np.float32)
    kept: list[Entry] = []
    problems: list[Problem] = []
    for entry, found in zip(
        entries, _inspect_all(entries, sample_rate, duration, min_duration, True, workers, "loading clips")
    ):
        if found.problems:
            problems.extend(found.problems)
            if strict:
                raise ValueError(
                    f"{name}: bad clip in strict mode: {_describe(found.problems)}; fix or remove it, "
                    "or load without strict to skip bad clips"
                )
            continue
        audio[len(kept)] = found.clip
        kept.append(entry)
    if problems:
        report = CheckReport(total=len(entries), usable=len(kept), seconds=0.0, problems=problems)
        log.warning(
            "skipped %d of %d clips in %s: %s (run 'musicdistill data check %s' for the list)",
            report.bad,
            len(entries),
            name,
            report.summary(),
            name,
        )
        for p in problems[:5]:
            log.warning("  %s", p.describe())
    if not kept:
        raise ValueError(
            f"no usable clip in {name}: all {len(entries)} entries are bad "
            f"({_describe(problems[:3])}); run 'musicdistill data check' on it for the full list"
        )
    if len(kept) < len(entries):
        audio = audio[: len(kept)].copy()
    log.info(
        "loaded %d clips of %.1f s at %d Hz from %d rows of %s",
        len(kept),
        duration,
        sample_rate,
        rows,
        name,
    )
    return kept, audio


def windowing_of(data: DataConfig) -> Windowing:
    """The ``data`` section's windowing (``window_hop``, ``last_window``)."""
    return Windowing(hop=data.window_hop, last=data.last_window)


def load_data(
    data: DataConfig, manifest: str | Path | list[Entry], split: str | None = None
) -> tuple[list[Entry], np.ndarray]:
    """:func:`load_dataset` with every setting from the ``data`` section (rate, duration, windows, ...)."""
    return load_dataset(
        manifest,
        data.sample_rate,
        data.duration,
        split=split,
        strict=data.strict,
        workers=data.workers,
        min_duration=data.min_duration,
        windowing=windowing_of(data),
    )


def check_data(data: DataConfig, manifest: str | Path, oracle: OracleConfig | None = None) -> CheckReport:
    """:func:`check_entries` on a manifest with every setting from the ``data`` section."""
    return check_entries(
        read_manifest(manifest),
        data.sample_rate,
        data.duration,
        data.min_duration,
        workers=data.workers,
        windowing=windowing_of(data),
        oracle=oracle,
    )


def _describe(problems: Iterable[Problem]) -> str:
    return "; ".join(p.describe() for p in problems)
