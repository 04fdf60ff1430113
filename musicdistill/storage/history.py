"""Training history: one JSON object per line (``history.jsonl``), trimmed on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Append one row to ``out/history.jsonl``."""
    with open(Path(out) / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_rows(out: Path) -> list[dict[str, Any]]:
    """Every row of ``out/history.jsonl`` (empty when missing)."""
    path = Path(out) / HISTORY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trim_rows(out: Path, last_step: int) -> None:
    """Keep only rows with ``step <= last_step`` (the snapshot a run resumes from); 0 clears the file."""
    path = Path(out) / HISTORY_FILE
    if not path.is_file():
        return
    kept = [r for r in read_rows(out) if r.get("step", 0) <= last_step] if last_step > 0 else []
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
