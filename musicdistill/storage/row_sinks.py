"""Where a training loop's rows go besides ``history.jsonl``: TensorBoard, on request.

A loop writes each row (``{"step": n, "kl": ..., ...}``) once, through :class:`RowLog`, which
appends it to ``history.jsonl`` and hands it to the sinks ``report_to`` names. ``"tensorboard"``
writes every numeric value of a row as a scalar at its ``step`` under ``<out>/tensorboard/``
(``pip install 'musicdistill[tensorboard]'``; view with ``tensorboard --logdir <out>/tensorboard``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Protocol

from musicdistill.storage.history import append_row

log = logging.getLogger(__name__)

REPORT_TO = ("none", "tensorboard")
TENSORBOARD_DIR = "tensorboard"


class RowSink(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Numeric values of each row as TensorBoard scalars at the row's ``step``."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard is an optional extra
            raise ImportError(
                "report_to=tensorboard needs the tensorboard package: pip install 'musicdistill[tensorboard]'"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(float(value)):
                    self.writer.add_scalar(key, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def make_sinks(report_to: str, out: Path) -> list[RowSink]:
    """The sinks ``report_to`` names (``none``: only ``history.jsonl``)."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to={report_to!r}: it must be one of {', '.join(REPORT_TO)}")
    return [TensorBoardSink(Path(out) / TENSORBOARD_DIR)] if report_to == "tensorboard" else []


class RowLog:
    """``history.jsonl`` under ``out`` plus the sinks of ``report_to``; use as a context manager."""

    def __init__(self, out: Path, report_to: str = "none") -> None:
        self.out = Path(out)
        self.sinks = make_sinks(report_to, self.out)

    def append(self, row: dict[str, Any]) -> None:
        append_row(self.out, row)
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
