"""Reading an entry's audio: only the frames of its segment are decoded (one window at a time, never
a whole file), then mixed down to mono, resampled and cropped or zero-padded to one clip. Any format
soundfile reads (wav, flac, ogg, mp3, ...). Files are read by a few threads (:func:`parallel`), each
keeping its file open for the next window (:class:`OpenFiles`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soundfile as sf

from musicdistill.data.manifest import Entry

#: frames decoded and thrown away before a window of an MP3 file: libsndfile's MPEG decoder returns
#: wrong samples for about 5500 frames after a seek (its bit reservoir is not refilled), so a window
#: is read from this far before its start (16384 frames: 0.37 s at 44.1 kHz)
MPEG_PREROLL = 16384
#: windows of one file, and clips being read, kept in flight per reader thread
READ_AHEAD = 4

T = TypeVar("T")
R = TypeVar("R")


def region(entry: Entry, rate: int, frames: int) -> tuple[int, int]:
    """(first frame, frames available) of an entry's segment in a file of ``frames`` frames."""
    first = min(int(round(entry.start * rate)), frames)
    available = frames - first
    if entry.duration is not None:
        available = min(available, int(round(entry.duration * rate)))
    return first, max(available, 0)


def probe(entry: Entry) -> tuple[int, int] | None:
    """(sample rate, frames) of an entry's file from its header; None when it cannot be read."""
    try:
        info = sf.info(str(entry.path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        return None
    if info.samplerate <= 0 or info.frames <= 0:
        return None
    return int(info.samplerate), int(info.frames)


def parallel(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
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
    first, available = region(entry, rate, frames)
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
