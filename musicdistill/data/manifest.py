"""User audio: manifests (JSONL, CSV, or a folder of audio with same-stem .txt captions), loading with
resampling, mono mix-down, cropping and padding, and per-clip validation.

A manifest row names an audio file (``path`` or ``audio``, relative paths resolve against the
manifest's folder), its ``caption``, and optionally ``start`` and ``duration`` (seconds, the segment
of the file to use), ``split`` (train/valid/test; missing splits are assigned by a hash of the
caption, so one caption never lands in two splits) and ``attributes`` (a JSON object).

Bad clips (missing, unreadable, empty caption, silent, too short, non-finite samples) are listed by
:func:`check_entries` and skipped by :func:`load_dataset` unless ``strict``. Nothing is ever written
next to the user's audio.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid", "eval": "test"}
#: fraction of distinct captions assigned to train and valid by :func:`split_for_caption`; the rest is test
SPLIT_FRACTIONS = (0.90, 0.05)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
#: a clip whose peak absolute sample is at or below this (-80 dBFS) is silent
SILENCE_PEAK = 1e-4


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
    source: str = ""  # where the entry was read, e.g. "data/manifest.jsonl:12"


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> list[Entry]:
    """Entries of a JSONL or CSV manifest, or of a folder.

    A folder holding ``manifest.jsonl`` or ``manifest.csv`` (e.g. the output of ``data synth``) is
    read through that file; any other folder is scanned recursively for audio files, each captioned
    by the same-stem ``.txt`` file beside it (an audio file without one gets an empty caption, which
    :func:`check_entries` reports).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"manifest {path} does not exist; pass a .jsonl or .csv manifest, or a folder of audio files "
            "with same-stem .txt captions"
        )
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return read_manifest(path / name)
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
            entries.append(entry_from_record(record, base, source))
    return entries


def _read_csv(path: Path) -> list[Entry]:
    base = path.parent.resolve()
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
            record: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            source = f"{path}:{number}"
            if "attributes" in record:
                try:
                    record["attributes"] = json.loads(record["attributes"])
                except json.JSONDecodeError:
                    raise ValueError(f"{source}: the 'attributes' column must hold a JSON object") from None
            entries.append(entry_from_record(record, base, source))
    return entries


def _read_folder(folder: Path) -> list[Entry]:
    entries = []
    for audio in sorted(folder.rglob("*")):
        if audio.suffix.lower() not in AUDIO_EXTENSIONS or not audio.is_file():
            continue
        if any(part.startswith(".") for part in audio.relative_to(folder).parts):
            continue
        text = audio.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8").strip() if text.is_file() else ""
        entries.append(
            Entry(path=audio.resolve(), caption=caption, split=split_for_caption(caption), source=str(audio))
        )
    if not entries:
        raise ValueError(
            f"folder {folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no manifest.jsonl/.csv"
        )
    return entries


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


def entry_from_record(record: dict[str, Any], base: Path, source: str) -> Entry:
    """An :class:`Entry` from one manifest row; relative paths resolve against ``base``."""
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
    attributes = record.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise ValueError(f"{source}: 'attributes' must be a JSON object, got {attributes!r}")
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


def read_segment(entry: Entry, max_seconds: float) -> Segment:
    """Read at most ``max_seconds`` of ``entry``'s segment; raises FileNotFoundError or UnreadableAudio."""
    if not entry.path.is_file():
        raise FileNotFoundError(f"{entry.path} does not exist")
    try:
        with sf.SoundFile(entry.path) as fh:
            rate, channels, frames = fh.samplerate, fh.channels, fh.frames
            first = min(int(round(entry.start * rate)), frames)
            available = frames - first
            if entry.duration is not None:
                available = min(available, int(round(entry.duration * rate)))
            count = min(available, int(np.ceil(max_seconds * rate)))
            if first:
                fh.seek(first)
            audio = fh.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UnreadableAudio(entry.path, getattr(exc, "error_string", None) or str(exc)) from None
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
class CheckReport:
    """What :func:`check_entries` found."""

    total: int
    usable: int
    seconds: float  # audio available in the usable entries (before crop/pad)
    sample_rates: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad(self) -> int:
        return len({p.source for p in self.problems})

    def summary(self) -> str:
        """e.g. '2 missing, 1 silent'."""
        kinds = Counter(p.kind for p in self.problems)
        return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "no problems"

    def format(self, limit: int = 50) -> str:
        """A human-readable report listing up to ``limit`` problems."""
        rates = ", ".join(f"{r} Hz x{n}" for r, n in sorted(self.sample_rates.items())) or "none"
        chans = ", ".join(f"{c} ch x{n}" for c, n in sorted(self.channels.items())) or "none"
        lines = [
            f"entries: {self.total}  usable: {self.usable}  bad: {self.bad} ({self.summary()})",
            f"usable audio: {_duration(self.seconds)} ({self.seconds / max(self.usable, 1):.2f} s per clip)",
            f"sample rates: {rates}",
            f"channels: {chans}",
        ]
        lines.extend(f"  {p.describe()}" for p in self.problems[:limit])
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


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


def _inspect(entry: Entry, sample_rate: int, duration: float, min_duration: float, keep: bool) -> _Inspection:
    """Read one entry and list its problems; the clip is returned only if it is usable and ``keep``."""

    def problem(kind: str, detail: str) -> Problem:
        return Problem(entry.source or str(entry.path), str(entry.path), kind, detail)

    found = [] if entry.caption.strip() else [problem("empty caption", "the caption is empty or missing")]
    try:
        segment = read_segment(entry, duration)
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
    def one(entry: Entry) -> _Inspection:
        return _inspect(entry, sample_rate, duration, min_duration, keep)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from tqdm(
            pool.map(one, entries), total=len(entries), desc=desc, unit="clip", disable=len(entries) < 200
        )


def _check_settings(sample_rate: int, duration: float, min_duration: float) -> None:
    if not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate={sample_rate}: must be between 1000 and 384000 Hz")
    if not duration > 0:
        raise ValueError(f"duration={duration}: must be > 0 seconds")
    if min_duration < 0:
        raise ValueError(f"min_duration={min_duration}: must be >= 0 seconds")


def check_entries(
    entries: list[Entry], sample_rate: int, duration: float, min_duration: float = 0.5, workers: int = 2
) -> CheckReport:
    """Read every entry and report the problems of each, the clip count, the audio duration, and the
    sample rates and channel counts seen."""
    _check_settings(sample_rate, duration, min_duration)
    report = CheckReport(total=len(entries), usable=0, seconds=0.0)
    for found in _inspect_all(entries, sample_rate, duration, min_duration, False, workers, "checking clips"):
        if found.sample_rate is not None:
            report.sample_rates[found.sample_rate] += 1
            report.channels[found.channels] += 1
        report.problems.extend(found.problems)
        if not found.problems:
            report.usable += 1
            report.seconds += found.seconds
    return report


def load_dataset(
    manifest: str | Path | list[Entry],
    sample_rate: int,
    duration: float,
    split: str | None = None,
    strict: bool = False,
    workers: int = 2,
    min_duration: float = 0.5,
) -> tuple[list[Entry], np.ndarray]:
    """Load every usable clip of a manifest (or entry list) -> (entries, float32 [N, samples]).

    ``split`` keeps one split. Bad clips are skipped with a logged summary; ``strict`` raises instead.
    Raises ValueError when no usable clip remains.
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
    log.info("loaded %d clips of %.1f s at %d Hz from %s", len(kept), duration, sample_rate, name)
    return kept, audio


def _describe(problems: Iterable[Problem]) -> str:
    return "; ".join(p.describe() for p in problems)
