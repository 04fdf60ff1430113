"""Training rows: history.jsonl always, TensorBoard scalars on request."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from musicdistill.storage.history import read_rows
from musicdistill.storage.row_sinks import TENSORBOARD_DIR, RowLog


def test_rows_go_to_the_history_and_to_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RowLog(tmp_path, "tensorboard") as rows:
        rows.append({"step": 1, "kl": 0.5, "skipped": "non-finite loss", "nan": math.nan})
        rows.append({"step": 2, "kl": 0.25, "reward_mean": 0.75})
    assert [r["step"] for r in read_rows(tmp_path)] == [1, 2]
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"kl", "reward_mean"}  # numbers only, finite only
    assert [(e.step, e.value) for e in events.Scalars("kl")] == [(1, 0.5), (2, 0.25)]


def test_none_writes_only_the_history_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    with RowLog(tmp_path) as rows:
        rows.append({"step": 1, "kl": 0.5})
    assert read_rows(tmp_path) == [{"step": 1, "kl": 0.5}] and not (tmp_path / TENSORBOARD_DIR).exists()
    with pytest.raises(ValueError, match="report_to='wandb'"):
        RowLog(tmp_path, "wandb")


def test_the_report_to_flag_sets_the_key(tmp_path: Path) -> None:
    from musicdistill.cli import build_parser
    from musicdistill.commands.common import config_from_args

    args = build_parser(("distill",)).parse_args(
        ["distill", "--report-to", "tensorboard", f"runs_dir={tmp_path}"]
    )
    assert config_from_args(args).report_to == "tensorboard"
