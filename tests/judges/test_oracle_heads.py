"""The oracle follows the data: heads chosen from the user's labels, held-out accuracy against chance,
and the at-chance flag in model.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.config import load_config
from musicdistill.data.manifest import Entry
from musicdistill.judges.log_mel import load_labelled_mels
from musicdistill.judges.oracle import fit_and_save_oracle, load_oracle
from musicdistill.judges.oracle_checks import attribute_check, head_checks

RATE = 44100


def _held(values: list[str], clips_per_file: int = 1) -> list[Entry]:
    return [
        Entry(path=Path(f"f{i // clips_per_file}.wav"), caption="c", attributes={"mood": v})
        for i, v in enumerate(values)
    ]


def test_chance_and_the_one_sided_margin_count_files() -> None:
    held = _held(["a"] * 5 + ["b"] * 5)  # 10 files: chance 0.5, bound 0.5 + 1.645 * sqrt(0.025) = 0.76
    assert attribute_check("mood", 0.8, held) == {
        "attribute": "mood",
        "accuracy": 0.8,
        "held_out_clips": 10,
        "held_out_files": 10,
        "chance": 0.5,
        "at_chance": False,
    }
    assert attribute_check("mood", 0.75, held)["at_chance"] is True
    # the same 10 clips from 2 files: bound 0.5 + 1.645 * sqrt(0.125) = 1.08, nothing can be shown
    assert attribute_check("mood", 1.0, _held(["a"] * 5 + ["b"] * 5, clips_per_file=5))["at_chance"] is True
    assert attribute_check("mood", 1.0, _held(["a"] * 6))["at_chance"] is True  # one value: chance 1
    assert attribute_check("mood", None, held)["at_chance"] is None
    assert attribute_check("tempo", 1.0, held)["held_out_clips"] == 0
    checks = head_checks([(("mood",), 2), (("tempo",), 3)], held, {"mood": 0.9})
    assert checks["at_chance"] == [] and checks["trusted_attributes"] == ["mood"]
    assert [h["at_chance"] for h in checks["heads"]] == [False, None]


def _tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.shape)
    return np.stack([wave, 0.8 * wave], axis=1).astype(np.float32)


@pytest.fixture()
def user_data(tmp_path: Path) -> Path:
    """12 recordings of 6 s (wav/flac/mp3, 44.1 kHz stereo): 'instrument' is audible (a low or a high
    tone), 'mood' is not (independent of the audio), 'bpm' is numeric; 8 train files, 4 test files."""
    rows = []
    for i in range(12):
        name = f"take{i}.{('wav', 'flac', 'mp3')[i % 3]}"
        instrument = ("cello", "piccolo")[i % 2]
        kwargs = {"format": "MP3"} if name.endswith(".mp3") else {}
        sf.write(tmp_path / name, _tone(196.0 if i % 2 == 0 else 1568.0, 6.0, i), RATE, **kwargs)
        rows.append(
            {
                "path": name,
                "caption": f"a {instrument} recording, take {i}",
                "split": "train" if i < 8 else "test",
                "instrument": instrument,
                "mood": ("calm", "tense")[(i // 2) % 2],
                "bpm": 60 + 7 * i,
            }
        )
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_heads_come_from_the_labels_and_a_head_at_chance_is_flagged(user_data: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        ["data.duration=2.0", "data.workers=1", "oracle.reconstructions=false", "oracle.iters=30"],
    )
    assert cfg.oracle.heads == []  # the default: follow the data
    train, held_out = load_labelled_mels(cfg, user_data)
    assert len(train) == 8 * 3 and held_out is not None and len(held_out) == 4 * 3  # every window
    metrics = fit_and_save_oracle(cfg, train, held_out, tmp_path / "oracle")
    choice = metrics["head_choice"]
    assert choice["source"] == "data" and choice["heads"] == ["bpm_class", "instrument", "mood"]
    assert any(n.startswith("'bpm' skipped") for n in choice["notes"])  # one recording per value
    assert metrics["accuracy"]["real"]["instrument"] == 1.0
    assert metrics["accuracy"]["real"]["mood"] < 0.9  # not in the audio: whatever it memorised
    assert metrics["at_chance"] == ["bpm_class", "mood"] or metrics["at_chance"] == ["mood"]
    assert "instrument" in metrics["trusted_attributes"] and "mood" not in metrics["trusted_attributes"]
    saved = json.loads((tmp_path / "oracle" / "model.json").read_text())["metrics"]
    assert saved["at_chance"] == metrics["at_chance"] and saved["heads"][1]["name"] == "instrument"
    check = saved["heads"][1]["checks"][0]
    assert (check["held_out_files"], check["held_out_clips"], check["chance"]) == (4, 12, 0.5)
    assert check["at_chance"] is False and not math.isnan(check["accuracy"])
    assert load_oracle(tmp_path / "oracle").attributes == ("bpm_class", "instrument", "mood")


def test_explicit_heads_still_fail_clearly_on_missing_labels(user_data: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["data.duration=2.0", "oracle.reconstructions=false", "oracle.heads=[key+mode]"])
    train, held_out = load_labelled_mels(cfg, user_data)
    with pytest.raises(ValueError, match="oracle head 'key\\+mode'.*set oracle.heads"):
        fit_and_save_oracle(cfg, train, held_out, tmp_path / "oracle")
    assert not (tmp_path / "oracle").exists()  # nothing half-written
