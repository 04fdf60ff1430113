"""User data: manifests (JSONL, CSV, folders), audio loading in any soundfile format, and bad clips."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.cli import main
from musicdistill.data.audio_io import load_audio
from musicdistill.data.checks import check_entries
from musicdistill.data.loading import load_dataset
from musicdistill.data.manifest import Entry, read_manifest, split_for_caption

SR = 16000


def _tone(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = amp * np.sin(2 * np.pi * freq * t)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def _dominant_hz(audio: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def formats(tmp_path: Path) -> Path:
    """Stereo 44.1 kHz wav, flac and mp3 tones (440, 550, 660 Hz) in audio/, listed by manifest.jsonl."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", _tone(440, 2.0, 44100, 2), 44100)
    sf.write(audio / "b.flac", _tone(550, 2.0, 44100, 2), 44100)
    sf.write(audio / "c.mp3", _tone(660, 2.0, 44100, 2), 44100, format="MP3")
    rows = [
        {"path": f"audio/{name}", "caption": f"tone {i}", "split": "train"}
        for i, name in enumerate(("a.wav", "b.flac", "c.mp3"))
    ]
    return _write_jsonl(tmp_path / "manifest.jsonl", rows)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_wav_flac_and_mp3_load_as_mono_resampled_padded_clips(formats: Path) -> None:
    before = _listing(formats.parent)
    entries, audio = load_dataset(formats, SR, 4.0, workers=2)
    assert [e.path.name for e in entries] == ["a.wav", "b.flac", "c.mp3"]
    assert audio.dtype == np.float32 and audio.shape == (3, 4 * SR)
    for row, freq in zip(audio, (440, 550, 660)):
        assert abs(_dominant_hz(row[:SR]) - freq) < 3
        assert 0.4 < np.abs(row[:SR]).max() < 0.6  # both channels averaged, level kept
        assert np.abs(row[int(2.1 * SR) :]).max() == 0.0  # zero-padded after the 2 s of audio
    assert _listing(formats.parent) == before  # nothing written next to the user's audio


def test_mono_mixdown_averages_channels(tmp_path: Path) -> None:
    left, right = _tone(300, 1.0, 22050), _tone(800, 1.0, 22050)
    sf.write(tmp_path / "two.wav", np.stack([left, right], axis=1), 22050)
    clip = load_audio(tmp_path / "two.wav", SR, 1.0)
    spectrum = np.abs(np.fft.rfft(clip))
    freqs = np.fft.rfftfreq(len(clip), 1 / SR)
    assert {round(f) for f in freqs[np.argsort(spectrum)[-2:]]} == {300, 800}


def test_start_and_duration_select_a_segment_and_long_files_are_cropped(tmp_path: Path) -> None:
    rate = 48000
    sf.write(
        tmp_path / "two_notes.flac", np.concatenate([_tone(440, 1.5, rate), _tone(880, 6.0, rate)]), rate
    )
    later = Entry(path=tmp_path / "two_notes.flac", caption="x", start=2.0)
    assert abs(_dominant_hz(load_audio(later, SR, 1.0)) - 880) < 3
    cropped = load_audio(tmp_path / "two_notes.flac", SR, 1.0)
    assert cropped.shape == (SR,) and abs(_dominant_hz(cropped) - 440) < 3
    half = Entry(path=tmp_path / "two_notes.flac", caption="x", start=2.0, duration=0.5)
    clip = load_audio(half, SR, 2.0)
    assert abs(_dominant_hz(clip[: SR // 2]) - 880) < 3 and np.abs(clip[: SR // 2]).max() > 0.4
    assert np.abs(clip[SR // 2 + 200 :]).max() == 0.0


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


def test_csv_manifest_with_audio_column_and_attributes(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "x.wav", _tone(440, 1.0, SR), SR)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "audio,caption,start,split,attributes\n"
        'clips/x.wav,"a calm, slow tone",0.25,val,"{""tempo"": ""slow""}"\n'
        f"{tmp_path / 'clips' / 'x.wav'},absolute path,,,\n"
    )
    first, second = read_manifest(csv_path)
    assert first.path == (tmp_path / "clips" / "x.wav").resolve()
    assert (first.caption, first.start, first.split, first.attributes) == (
        "a calm, slow tone",
        0.25,
        "valid",
        {"tempo": "slow"},
    )
    assert second.path == tmp_path / "clips" / "x.wav" and second.split == split_for_caption("absolute path")
    entries, audio = load_dataset(csv_path, SR, 1.0)
    assert len(entries) == 2 and np.abs(audio[0, int(0.75 * SR) + 100 :]).max() == 0.0


def test_folder_of_audio_with_txt_captions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "one.wav", _tone(440, 1.0, SR), SR)
    sf.write(tmp_path / "sub" / "two.ogg", _tone(440, 1.0, SR), SR, format="OGG")
    (tmp_path / "one.txt").write_text("first caption\n")
    (tmp_path / "sub" / "two.txt").write_text("second caption")
    (tmp_path / "README.md").write_text("not audio")
    sf.write(tmp_path / "uncaptioned.wav", _tone(440, 1.0, SR), SR)
    entries = read_manifest(tmp_path)
    assert [(e.path.name, e.caption) for e in entries] == [
        ("one.wav", "first caption"),
        ("two.ogg", "second caption"),
        ("uncaptioned.wav", ""),
    ]
    assert [p.kind for p in check_entries(entries, SR, 1.0).problems] == ["empty caption"]
    assert load_dataset(tmp_path, SR, 1.0)[1].shape == (2, SR)


def test_folder_with_a_manifest_is_read_through_it(formats: Path) -> None:
    assert read_manifest(formats.parent) == read_manifest(formats)


def test_missing_splits_come_from_the_caption_and_a_split_can_be_selected(tmp_path: Path) -> None:
    sf.write(tmp_path / "t.wav", _tone(440, 1.0, SR), SR)
    captions = [f"caption number {i}" for i in range(60)]
    _write_jsonl(tmp_path / "m.jsonl", [{"path": "t.wav", "caption": c} for c in captions])
    entries = read_manifest(tmp_path / "m.jsonl")
    assert [e.split for e in entries] == [split_for_caption(c) for c in captions]
    train, audio = load_dataset(tmp_path / "m.jsonl", SR, 1.0, split="train")
    assert len(train) == audio.shape[0] == sum(e.split == "train" for e in entries) > 40
    _write_jsonl(tmp_path / "only_train.jsonl", [{"path": "t.wav", "caption": "c", "split": "train"}])
    with pytest.raises(ValueError, match="no entries in split 'test'"):
        load_dataset(tmp_path / "only_train.jsonl", SR, 1.0, split="test")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"path": "a.wav", "caption": "ok"}\n{not json\n', r"m\.jsonl:2: not valid JSON"),
        ('{"caption": "no path"}\n', "needs a 'path'"),
        ('{"path": "a.wav", "caption": "x", "split": "holdout"}\n', "split='holdout'"),
        ('{"path": "a.wav", "caption": "x", "start": "soon"}\n', "'start' must be a number"),
        ('{"path": "a.wav", "caption": 3}\n', "'caption' must be text"),
    ],
)
def test_malformed_manifests_name_the_line_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_unusable_manifest_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        read_manifest(tmp_path / "m.txt")
    (tmp_path / "m.csv").write_text("file,caption\na.wav,x\n")
    with pytest.raises(ValueError, match="no 'path'"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        read_manifest(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# Bad clips
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """One good clip and one of each bad kind."""
    sf.write(tmp_path / "good.wav", _tone(440, 2.0, 44100, 2), 44100)
    sf.write(tmp_path / "silent.flac", np.zeros(SR * 2), SR)
    sf.write(tmp_path / "short.wav", _tone(440, 0.2, SR), SR)
    sf.write(
        tmp_path / "nan.wav",
        np.where(np.arange(SR) % 100 == 0, np.nan, 0.1).astype(np.float32),
        SR,
        subtype="FLOAT",
    )
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    rows = [
        {"path": "good.wav", "caption": "a good tone"},
        {"path": "missing.wav", "caption": "gone"},
        {"path": "corrupt.wav", "caption": "broken"},
        {"path": "good.wav", "caption": "   "},
        {"path": "silent.flac", "caption": "nothing"},
        {"path": "short.wav", "caption": "blip"},
        {"path": "nan.wav", "caption": "not a number"},
        {"path": "good.wav", "caption": "after the end", "start": 5.0},
    ]
    return _write_jsonl(tmp_path / "manifest.jsonl", rows)


EXPECTED_KINDS = {
    2: "missing",
    3: "unreadable",
    4: "empty caption",
    5: "silent",
    6: "too short",
    7: "non-finite",
    8: "too short",
}


def test_check_names_every_bad_entry_with_its_reason(mixed: Path) -> None:
    report = check_entries(read_manifest(mixed), SR, 4.0, min_duration=0.5)
    kinds = {int(p.source.rsplit(":", 1)[1]): p.kind for p in report.problems}
    assert kinds == EXPECTED_KINDS
    assert (report.total, report.usable, report.bad) == (8, 1, 7)
    # counted once per file: good.wav is named by three rows
    assert report.sample_rates == {44100: 1, SR: 3} and report.channels == {2: 1, 1: 3}
    assert (report.rows, report.files) == (8, 6)
    assert report.seconds == pytest.approx(2.0)
    text = report.format()
    for name in ("missing.wav", "corrupt.wav", "silent.flac", "short.wav", "nan.wav"):
        assert name in text


def test_load_skips_bad_clips_with_a_summary_and_strict_raises(
    mixed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="musicdistill.data.loading"):
        entries, audio = load_dataset(mixed, SR, 4.0)
    assert [e.caption for e in entries] == ["a good tone"] and audio.shape == (1, 4 * SR)
    assert "skipped 7 of 8 clips" in caplog.text and "missing" in caplog.text
    with pytest.raises(ValueError, match="missing.wav"):
        load_dataset(mixed, SR, 4.0, strict=True)


def test_no_usable_clip_is_a_clear_error(tmp_path: Path) -> None:
    manifest = _write_jsonl(tmp_path / "m.jsonl", [{"path": "gone.wav", "caption": "x"}])
    with pytest.raises(ValueError, match="no usable clip"):
        load_dataset(manifest, SR, 4.0)


def test_cli_check_exit_codes(mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _listing(mixed.parent)
    assert main(["data", "check", str(mixed)]) == 0
    out = capsys.readouterr().out
    assert "usable: 1" in out
    for name, kind in (("missing.wav", "missing"), ("corrupt.wav", "unreadable"), ("silent.flac", "silent")):
        assert any(name in line and kind in line for line in out.splitlines()), (name, out)
    assert main(["data", "check", str(mixed), "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err
    none = _write_jsonl(tmp_path / "none.jsonl", [{"path": "gone.wav", "caption": "x"}])
    assert main(["data", "check", str(none)]) == 1
    assert "no usable clip" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "absent.jsonl")]) == 2
    assert _listing(mixed.parent) == sorted([*before, "none.jsonl"])
