"""Progress of a loop: a tqdm bar on a terminal, plain log lines everywhere else.

tqdm redraws its bar with carriage returns, which turns a log file (``nohup ... > log``, a batch
system, the main job's stage logs) into one unreadable line. When stderr is not a terminal the bar
is off and :class:`Progress` logs a line through :mod:`logging` every few percent instead (but not more
often than every :data:`MIN_LINE_SECONDS`, and at least every :data:`LOG_EVERY_SECONDS`), with the rate
and the estimated time left, and always at the end::

    pretrain: 300/1500 steps (20%), 4.1 steps/s, ETA 4m53s; loss=3.214 tok_s=16384
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TextIO, TypeVar

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

T = TypeVar("T")

#: without a terminal, a line every this many percent of the loop
LOG_EVERY_PERCENT = 5.0
#: ... but not sooner than this many seconds after the previous line (the last line always comes) ...
MIN_LINE_SECONDS = 10.0
#: ... and after this many seconds without one
LOG_EVERY_SECONDS = 300.0


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where tqdm draws) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_seconds(seconds: float) -> str:
    """``75.4 -> '1m15s'``, ``3725 -> '1h02m'``, ``8.2 -> '8s'``; ``'?'`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Report ``done`` of ``total`` units after each one: a bar on a terminal, else a log line every few %.

    ``initial`` counts units done before this run (a resumed loop): the rate and the time left are
    measured on this run's units only. ``enabled=False`` reports nothing (e.g. ranks other than 0).
    ``terminal`` forces the bar on or off (default: whether stderr is a terminal); ``min_interval``
    is the shortest time between two log lines.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        initial: int = 0,
        unit: str = "step",
        enabled: bool = True,
        leave: bool = True,
        terminal: bool | None = None,
        min_interval: float = MIN_LINE_SECONDS,
    ) -> None:
        self.desc, self.total, self.initial, self.unit = desc, total, initial, unit
        self.enabled, self.min_interval = enabled, min_interval
        self.started = self.last_line = time.monotonic()
        self.every = max(1, math.ceil(total * LOG_EVERY_PERCENT / 100))
        use_bar = enabled and (is_terminal() if terminal is None else terminal)
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave) if use_bar else None

    def update(self, done: int, **stats: Any) -> None:
        """``done`` units are complete (counting ``initial``); ``stats`` are shown beside the count."""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if stats:
                self.bar.set_postfix({k: _short(v) for k, v in stats.items()}, refresh=False)
        elif self.enabled and self._line_due(done):
            self.last_line = time.monotonic()
            log.info("%s", self.line(done, stats))

    def _line_due(self, done: int) -> bool:
        since = time.monotonic() - self.last_line
        on_schedule = done % self.every == 0 and since >= self.min_interval
        return on_schedule or done == self.total or since >= LOG_EVERY_SECONDS

    def line(self, done: int, stats: dict[str, Any]) -> str:
        """The plain progress line for ``done`` units: count, percent, rate, time left, stats."""
        elapsed = time.monotonic() - self.started
        rate = (done - self.initial) / elapsed if elapsed > 0 else math.nan
        left = (self.total - done) / rate if rate > 0 else math.nan
        units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
        speed = f"{_short(rate)} {units}/s" if not rate < 1 else f"{_short(1 / rate)} s/{self.unit}"
        text = (
            f"{self.desc}: {done}/{self.total} {units} ({100 * done / max(1, self.total):.0f}%), "
            f"{speed}, ETA {format_seconds(left)}"
        )
        if stats:
            text += "; " + " ".join(f"{k}={_short(v)}" for k, v in stats.items())
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def track(
    items: Iterable[T],
    desc: str,
    unit: str = "item",
    leave: bool = True,
    enabled: bool = True,
    total: int | None = None,
) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`Progress` (a drop-in for ``tqdm(items, desc=...)``).

    ``total`` is needed when ``items`` has no length (e.g. a generator).
    """
    count = len(items) if total is None and isinstance(items, Sized) else total
    if count is None:
        raise ValueError(f"track({desc!r}): items have no length; pass total=")
    progress = Progress(desc, count, unit=unit, leave=leave, enabled=enabled)
    try:
        for done, item in enumerate(items, 1):
            yield item
            progress.update(done)
    finally:
        progress.close()


def _short(value: Any) -> str:
    """A number for display: floats with 4 significant digits (no exponent below 1e6), others as ``str``."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if 1e3 <= abs(value) < 1e6 else f"{value:.4g}"
