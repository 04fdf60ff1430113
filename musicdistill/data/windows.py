"""Windows: how a recording longer than one clip is cut into many training clips.

A segment of ``available`` frames (the part of a file a manifest row names) becomes windows of
``size`` frames whose starts are ``hop`` frames apart. The final window that would run past the end
is dropped (``last="drop"``) or kept shorter and zero-padded when loaded (``last="pad"``, only when
it holds at least ``min_size`` frames). A segment no longer than one window gives one window of
whatever it holds, padded when loaded, whatever ``last`` says.

A manifest entry longer than one clip becomes one entry per window (:func:`expand_windows`), each
with the row's caption, split and attributes, so no window of a file lands in a split the file is
not in. Only file headers are read to plan them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from musicdistill.config import DataConfig
from musicdistill.data.audio_io import parallel, probe, region
from musicdistill.data.manifest import Entry

#: what happens to the final window of a recording when it would run past the end
LAST_WINDOW = ("drop", "pad")


@dataclass(frozen=True)
class Windowing:
    """How files longer than one clip are cut: ``hop`` seconds between window starts (0 = one clip
    duration: windows that touch without overlapping) and what becomes of the ``last`` partial window."""

    hop: float = 0.0
    last: str = "drop"

    def __post_init__(self) -> None:
        if not self.hop >= 0:
            raise ValueError(f"data.window_hop={self.hop}: must be >= 0 seconds (0 = the clip duration)")
        if self.last not in LAST_WINDOW:
            raise ValueError(f"data.last_window={self.last!r}: choose one of {list(LAST_WINDOW)}")

    def hop_seconds(self, duration: float) -> float:
        """Seconds between window starts for clips of ``duration`` seconds."""
        return self.hop if self.hop > 0 else duration


#: one clip per manifest row, cut from files longer than one clip with windows one clip apart
DEFAULT_WINDOWING = Windowing()


def windowing_of(data: DataConfig) -> Windowing:
    """The ``data`` section's windowing (``window_hop``, ``last_window``)."""
    return Windowing(hop=data.window_hop, last=data.last_window)


def plan_windows(available: int, size: int, hop: int, last: str, min_size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` in frames of each window of a segment of ``available`` frames.

    Full windows have ``length == size``; with ``last="pad"`` a final shorter one is added when it
    holds at least ``min_size`` frames. A segment of at most ``size`` frames is one window of
    ``available`` frames.
    """
    if size < 1 or hop < 1:
        raise ValueError(f"window size ({size}) and hop ({hop}) must be at least one frame")
    if last not in LAST_WINDOW:
        raise ValueError(f"last={last!r}: choose one of {list(LAST_WINDOW)}")
    if available <= size:
        return [(0, max(available, 0))]
    full = (available - size) // hop + 1
    windows = [(k * hop, size) for k in range(full)]
    rest = available - full * hop
    if last == "pad" and rest >= max(min_size, 1):
        windows.append((full * hop, rest))
    return windows


def entry_windows(
    entry: Entry, rate: int, frames: int, duration: float, windowing: Windowing, min_duration: float
) -> list[Entry]:
    """The clips of one entry whose file holds ``frames`` frames at ``rate``: itself when its segment
    fits in one clip, else one entry per window (see :func:`plan_windows`)."""
    first, available = region(entry, rate, frames)
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
    for entry, header in zip(entries, parallel(probe, entries, workers)):
        if header is None:
            out.append(entry)
        else:
            out.extend(entry_windows(entry, *header, duration, windowing, min_duration))
    return out
