"""The main job's data stage on user recordings: counts per split, the small-data warning, and a clear
error (before anything is trained) when a split the job needs is empty."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.config import load_config
from musicdistill.pipeline.stages import stage_data

RATE = 44100


def _manifest(tmp_path: Path, splits: list[str]) -> Path:
    rows = []
    for i, split in enumerate(splits):
        t = np.arange(int(9.0 * RATE)) / RATE
        wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t)
        name = f"r{i}.{('wav', 'flac', 'mp3')[i % 3]}"
        kwargs = {"format": "MP3"} if name.endswith(".mp3") else {}
        sf.write(tmp_path / name, np.stack([wave, wave], axis=1).astype(np.float32), RATE, **kwargs)
        rows.append({"path": name, "caption": f"take {i}", "split": split, "instrument": ("a", "b")[i % 2]})
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_data_stage_counts_every_window_per_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = _manifest(tmp_path, ["train", "train", "train", "valid", "test"])
    cfg = load_config(None, [f"data.manifest={manifest}", "data.workers=1", "evaluate.num_prompts=4"])
    with caplog.at_level(logging.INFO, logger="musicdistill.pipeline.stages"):
        summary = stage_data(cfg, tmp_path / "run", tmp_path / "run" / "data", resume=False)
    assert summary["rows"] == summary["files"] == 5 and summary["clips"] == summary["usable"] == 5 * 2
    assert summary["splits"] == {
        "train": {"files": 3, "clips": 6, "captions": 3},
        "valid": {"files": 1, "clips": 2, "captions": 1},
        "test": {"files": 1, "clips": 2, "captions": 1},
    }
    assert "train 3 files, 6 clips, 3 captions" in caplog.text
    assert "the test split has 1 distinct captions but evaluate.num_prompts=4" in caplog.text


def test_an_empty_split_stops_the_job_at_the_data_stage(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, ["train", "train", "test"])
    cfg = load_config(None, [f"data.manifest={manifest}", "data.workers=1"])
    with pytest.raises(
        ValueError, match=r"manifest\.jsonl: no usable clip in the valid split.*'split' column"
    ):
        stage_data(cfg, tmp_path / "run", tmp_path / "run" / "data", resume=False)
