"""Windows: how a recording longer than one clip is cut into many training clips.

A segment of ``available`` frames (the part of a file a manifest row names) becomes windows of
``size`` frames whose starts are ``hop`` frames apart. The final window that would run past the end
is dropped (``last="drop"``) or kept shorter and zero-padded when loaded (``last="pad"``, only when
it holds at least ``min_size`` frames). A segment no longer than one window gives one window of
whatever it holds, padded when loaded, whatever ``last`` says.
"""

from __future__ import annotations

from dataclasses import dataclass

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
