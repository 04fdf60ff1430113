"""Labels wherever the user put them: manifest columns, an ``attributes`` object, CSV cells, same-stem
.json files; numeric labels binned; what ``data check`` says the oracle can learn."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.cli import main
from musicdistill.config import OracleConfig
from musicdistill.data.attributes import (
    BUILTIN_HEADS,
    add_numeric_classes,
    choose_heads,
    class_label,
    parse_cell,
    summarise_attributes,
)
from musicdistill.data.checks import check_entries
from musicdistill.data.loading import load_dataset
from musicdistill.data.manifest import read_manifest

SR = 16000
RATE = 44100


def _tone(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * freq * t)
    kwargs = {"format": "MP3"} if path.suffix == ".mp3" else {}
    sf.write(path, np.stack([wave, wave], axis=1).astype(np.float32), RATE, **kwargs)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_top_level_columns_are_attributes_and_the_object_wins_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tone(tmp_path / "a.wav", 440, 1.0)
    rows = [
        {"path": "a.wav", "caption": "flute", "instrument": "flute", "bpm": 96, "sample_rate": 44100},
        {"path": "a.wav", "caption": "object", "attributes": {"instrument": "oboe", "mode": "minor"}},
        {"path": "a.wav", "caption": "both", "mode": "major", "attributes": {"mode": "minor"}, "start": 0.5},
        {"path": "a.wav", "caption": "none", "duration": 0.8, "split": "test"},
    ]
    with caplog.at_level(logging.WARNING):
        entries = read_manifest(_jsonl(tmp_path / "m.jsonl", rows))
    assert [e.attributes for e in entries] == [
        {"instrument": "flute", "bpm": 96},  # sample_rate describes the file: not a label
        {"instrument": "oboe", "mode": "minor"},
        {"mode": "minor"},
        None,
    ]
    assert (entries[2].start, entries[3].duration, entries[3].split) == (0.5, 0.8, "test")
    assert "1 row(s) give 'mode' both as a column and inside 'attributes'" in caplog.text
    assert "m.jsonl:3" in caplog.text and "'attributes' value is used" in caplog.text


def test_csv_label_columns_are_read_as_numbers_and_text(tmp_path: Path) -> None:
    _tone(tmp_path / "a.flac", 440, 1.0)
    (tmp_path / "m.csv").write_text(
        "path,caption,instrument,bpm,key,loud\na.flac,one,flute,96,C,-3.5\na.flac,two,piano,,F#,\n"
    )
    first, second = read_manifest(tmp_path / "m.csv")
    assert first.attributes == {"instrument": "flute", "bpm": 96, "key": "C", "loud": -3.5}
    assert second.attributes == {"instrument": "piano", "key": "F#"}  # empty cells are missing
    assert [parse_cell(x) for x in ("07", "1e3", "nan", " jazz ")] == [7, 1000.0, "nan", "jazz"]


def test_numeric_labels_with_many_values_get_tercile_classes(tmp_path: Path) -> None:
    rows, notes = add_numeric_classes(
        [{"bpm": float(b), "take": 1} for b in range(60, 150, 5)] + [None, {"bpm": "fast"}]
    )
    assert notes == []  # one text value: 'bpm' is not numeric
    rows, notes = add_numeric_classes([{"bpm": float(b), "take": b % 3} for b in range(60, 150, 5)])
    assert len(notes) == 1 and "'bpm' (18 values) binned into 'bpm_class'" in notes[0]
    labels = [r["bpm_class"] for r in rows]
    # terciles of 60, 65, ..., 145 at 3 significant digits: 88.3 and 117
    assert labels == ["<88.3"] * 6 + ["88.3-117"] * 6 + [">=117"] * 6
    assert "take_class" not in rows[0]  # 3 distinct values: already categorical
    assert class_label(89.9, [90.0, 120.0]) == "<90" and class_label(120.0, [90.0, 120.0]) == ">=120"
    _tone(tmp_path / "a.mp3", 440, 1.0)
    manifest = _jsonl(
        tmp_path / "m.jsonl", [{"path": "a.mp3", "caption": f"c{b}", "bpm": b} for b in range(60, 150, 5)]
    )
    assert {e.attributes["bpm_class"] for e in read_manifest(manifest)} == {"<88.3", "88.3-117", ">=117"}


def test_folder_with_txt_captions_and_json_labels(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    _tone(tmp_path / "set" / "one.wav", 440, 5.0)
    _tone(tmp_path / "set" / "two.flac", 550, 5.0)
    _tone(tmp_path / "set" / "three.mp3", 660, 5.0)
    (tmp_path / "set" / "one.txt").write_text("a flute in C major\n")
    (tmp_path / "set" / "one.json").write_text('{"instrument": "flute", "bpm": 90, "split": "test"}')
    (tmp_path / "set" / "two.txt").write_text("a piano")
    (tmp_path / "set" / "three.json").write_text(
        '{"caption": "a caption from the label file", "attributes": {"instrument": "organ"}}'
    )
    entries = read_manifest(tmp_path / "set")
    assert [(e.path.name, e.caption, e.split, e.attributes) for e in entries] == [
        ("one.wav", "a flute in C major", "test", {"instrument": "flute", "bpm": 90}),
        ("three.mp3", "a caption from the label file", entries[1].split, {"instrument": "organ"}),
        ("two.flac", "a piano", entries[2].split, None),
    ]
    clips, audio = load_dataset(tmp_path / "set", SR, 2.0)
    assert len(clips) == audio.shape[0] == 6  # each 5 s file: two 2 s windows
    (tmp_path / "set" / "two.json").write_text('{"instrument": flute}')
    with pytest.raises(ValueError, match=r"two\.json: not valid JSON"):
        read_manifest(tmp_path / "set")
    (tmp_path / "set" / "two.json").write_text('["flute"]')
    with pytest.raises(ValueError, match=r"two\.json: expected a JSON object of labels"):
        read_manifest(tmp_path / "set")
    (tmp_path / "set" / "two.json").write_text('{"path": "other.wav"}')
    with pytest.raises(ValueError, match=r"two\.json: a label file describes the audio file"):
        read_manifest(tmp_path / "set")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"path": "a.wav", "caption": "x", "attributes": ["flute"]},
            r"m\.jsonl:1: 'attributes' must be a JSON object",
        ),
        ({"path": "a.wav", "caption": "x", "duration": 0}, r"m\.jsonl:1: 'duration' must be > 0"),
    ],
)
def test_bad_labels_name_the_line(tmp_path: Path, row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_manifest(_jsonl(tmp_path / "m.jsonl", [row]))


# --------------------------------------------------------------------------------------------
# What the oracle can learn
# --------------------------------------------------------------------------------------------


def _clips(values: dict[str, list], files: list[str]) -> tuple[list[dict], list[str]]:
    n = len(files)
    return [{k: v[i] for k, v in values.items() if v[i] is not None} for i in range(n)], files


def test_which_attributes_the_oracle_can_learn() -> None:
    files = [f"f{i // 5}" for i in range(40)]  # 8 files of 5 clips
    attributes, files = _clips(
        {
            "instrument": ["flute", "piano"] * 20,
            "mode": ["major"] * 40,
            "title": [f"song {i // 5}" for i in range(40)],  # one value per file
            "rare": ["a"] * 38 + ["b", "b"],
            "tags": [["x", "y"]] * 40,
            "bpm": [60.0 + i for i in range(40)],
            "bpm_class": ["slow"] * 20 + ["fast"] * 20,
        },
        files,
    )
    by_name = {s.name: s for s in summarise_attributes(attributes, files, min_clips=8)}
    assert {n for n, s in by_name.items() if s.usable} == {"instrument", "bpm_class"}
    assert (
        by_name["instrument"].clips == {"flute": 20, "piano": 20}
        and by_name["instrument"].files["flute"] == 8
    )
    assert "needs at least 2" in by_name["mode"].note
    assert "'song 0' (5 training clips, 1 file)" in by_name["title"].note
    assert "'b' (2 training clips" in by_name["rare"].note
    assert "lists or objects" in by_name["tags"].note
    assert by_name["bpm"].kind == "numeric" and "bpm_class" in by_name["bpm"].note
    assert (
        "oracle: yes" in by_name["instrument"].describe()
        and "flute (20 clips, 8 files)" in by_name["instrument"].describe()
    )
    choice = choose_heads([], attributes, 8, files)
    assert choice.heads == ["bpm_class", "instrument"] and choice.source == "data"
    assert any("'title' skipped" in n for n in choice.notes)
    assert choose_heads(["mode"], attributes, 8, files).heads == ["mode"]  # oracle.heads wins
    with pytest.raises(ValueError, match="no attribute of the training clips can be learned"):
        choose_heads([], [{"mode": "major"}] * 10, 8).require()


def test_the_built_in_data_keeps_its_tuned_heads() -> None:
    builtin = {
        "instrument": "bell",
        "tempo": "slow",
        "bpm": 70.0,
        "key": "C",
        "mode": "major",
        "register": "low",
        "drums": "none",
        "stated": ["instrument"],
    }
    choice = choose_heads([], [builtin] * 20, 8)
    assert choice.heads == list(BUILTIN_HEADS) and choice.source == "built-in"
    assert choose_heads([], [{**builtin, "stated": None}] * 3 + [{"instrument": "x"}], 1).source == "data"


# --------------------------------------------------------------------------------------------
# data check
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    """Six 44.1 kHz stereo recordings of 5-7 s (wav, flac, mp3) with instrument/bpm/mode columns."""
    rows = []
    for i in range(6):
        name = f"r{i}.{('wav', 'flac', 'mp3')[i % 3]}"
        instrument = ("flute", "piano")[i % 2]
        _tone(tmp_path / name, 440.0 if instrument == "flute" else 220.0, 5.0 + i % 3)
        rows.append(
            {
                "path": name,
                "caption": f"{instrument} take {i}",
                "split": "test" if i == 5 else "train",
                "instrument": instrument,
                "bpm": 80 + i,
                "mode": "major",
            }
        )
    return _jsonl(tmp_path / "manifest.jsonl", rows)


def test_check_lists_attributes_values_counts_and_oracle_use(labelled: Path) -> None:
    report = check_entries(read_manifest(labelled), SR, 2.0, oracle=OracleConfig(min_clips_per_class=4))
    assert (report.files, report.total, report.usable) == (6, 2 + 3 + 3 + 2 + 3 + 3, 16)
    names = {a.name: a for a in report.attributes}
    assert set(names) == {"instrument", "bpm", "mode"}
    assert names["instrument"].clips == {"flute": 8, "piano": 8} and names["instrument"].usable
    assert not names["mode"].usable and not names["bpm"].usable  # bpm: one recording per value
    assert report.heads is not None and report.heads.heads == ["instrument"]


def test_cli_check_prints_splits_attributes_and_heads(labelled: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", str(labelled), "--duration", "2", "--min-clips-per-class", "4"]) == 0
    out = capsys.readouterr().out
    assert "files: 6" in out and "clips (windows): 16" in out
    assert "train 5 files, 13 clips, 5 captions" in out and "test 1 files, 3 clips, 1 captions" in out
    assert (
        "instrument: categorical, 2 values: flute (8 clips, 3 files), piano (8 clips, 3 files); oracle: yes"
        in out
    )
    assert (
        "mode: categorical, 1 value: major (16 clips, 6 files); oracle: no (1 value; needs at least 2)" in out
    )
    assert "oracle heads: instrument (chosen from the data" in out
    assert main(["data", "check", str(labelled), "--window-hop", "1", "--last-window", "pad"]) == 0
    assert "clips (windows): " in capsys.readouterr().out
