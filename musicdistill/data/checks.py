"""Per-clip validation of a manifest: every clip (window) is read and its problems listed (missing,
unreadable, empty caption, silent, too short, non-finite samples), with the counts per split, the
audio duration, sample rates, channels, attributes and the oracle heads they give
(:func:`check_entries`, the ``data check`` command). :func:`musicdistill.data.loading.load_dataset`
skips the bad clips found here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicdistill.config import DataConfig, OracleConfig
from musicdistill.data.attributes import AttributeSummary, HeadChoice, choose_heads, summarise_attributes
from musicdistill.data.audio_io import OpenFiles, UnreadableAudio, parallel, read_segment, to_clip
from musicdistill.data.manifest import SPLITS, Entry, read_manifest
from musicdistill.data.windows import DEFAULT_WINDOWING, Windowing, expand_windows, windowing_of
from musicdistill.progress import track

#: a clip whose peak absolute sample is at or below this (-80 dBFS) is silent
SILENCE_PEAK = 1e-4


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


def inspect_all(
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
            parallel(one, entries, workers),
            desc=desc,
            unit="clip",
            enabled=len(entries) >= 200,
            total=len(entries),
        )
    finally:
        files.close()


def check_settings(sample_rate: int, duration: float, min_duration: float) -> None:
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
    check_settings(sample_rate, duration, min_duration)
    oracle = oracle or OracleConfig()
    clips = expand_windows(entries, duration, windowing, min_duration, workers)
    report = CheckReport(
        total=len(clips), usable=0, seconds=0.0, rows=len(entries), files=len({e.path for e in entries})
    )
    seen: set[Path] = set()
    usable: list[Entry] = []
    for entry, found in zip(
        clips, inspect_all(clips, sample_rate, duration, min_duration, False, workers, "checking clips")
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


def describe(problems: Iterable[Problem]) -> str:
    return "; ".join(p.describe() for p in problems)
