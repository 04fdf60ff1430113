"""Long recordings become many clips: windows, their hop and last window, the manifest's start/duration,
splits by caption, bounded streaming reads, and exact MP3 windows (44.1 kHz stereo wav/flac/mp3)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.config import DataConfig
from musicdistill.data import audio_io
from musicdistill.data.audio_io import READ_AHEAD, OpenFiles, parallel, read_segment
from musicdistill.data.checks import check_entries
from musicdistill.data.loading import load_data, load_dataset
from musicdistill.data.manifest import Entry, read_manifest, split_for_caption
from musicdistill.data.windows import Windowing, expand_windows, plan_windows

SR = 16000
RATE = 44100
#: a different tone every 2 seconds: window k of 2 s holds TONES[k]
TONES = (330.0, 440.0, 550.0, 660.0, 770.0, 880.0)


def _dominant_hz(audio: np.ndarray, rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def _stepped(seconds: float, rate: int = RATE) -> np.ndarray:
    """Stereo float32 [frames, 2]: tone TONES[k] during [2k, 2k + 2) s (left) and half of it (right)."""
    t = np.arange(int(round(seconds * rate))) / rate
    freq = np.array(TONES)[np.minimum((t // 2).astype(int), len(TONES) - 1)]
    wave = 0.5 * np.sin(2 * np.pi * np.cumsum(freq) / rate)
    return np.stack([wave, 0.5 * wave], axis=1).astype(np.float32)


def _write(path: Path, seconds: float) -> Path:
    kwargs = {"format": "MP3"} if path.suffix == ".mp3" else {}
    sf.write(path, _stepped(seconds), RATE, **kwargs)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def long_files(tmp_path: Path) -> Path:
    """44.1 kHz stereo recordings of 9 s (wav), 7 s (flac) and 9 s (mp3), one caption each, all train."""
    for name, seconds in (("a.wav", 9.0), ("b.flac", 7.0), ("c.mp3", 9.0)):
        _write(tmp_path / name, seconds)
    rows = [{"path": n, "caption": f"piece {n}", "split": "train"} for n in ("a.wav", "b.flac", "c.mp3")]
    return _jsonl(tmp_path / "manifest.jsonl", rows)


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def test_plan_windows_hop_last_and_short_segments() -> None:
    assert plan_windows(90, 20, 20, "drop", 5) == [(0, 20), (20, 20), (40, 20), (60, 20)]
    assert plan_windows(90, 20, 20, "pad", 5) == [(0, 20), (20, 20), (40, 20), (60, 20), (80, 10)]
    assert plan_windows(83, 20, 20, "pad", 5) == [(0, 20), (20, 20), (40, 20), (60, 20)]  # 3 < min
    assert plan_windows(80, 20, 20, "pad", 5) == [(0, 20), (20, 20), (40, 20), (60, 20)]  # no remainder
    assert plan_windows(50, 20, 10, "drop", 5) == [(0, 20), (10, 20), (20, 20), (30, 20)]  # overlapping
    assert plan_windows(50, 20, 10, "pad", 5) == [(0, 20), (10, 20), (20, 20), (30, 20), (40, 10)]
    assert plan_windows(15, 20, 20, "drop", 5) == [(0, 15)]  # shorter than a clip: one, padded
    assert plan_windows(20, 20, 20, "pad", 5) == [(0, 20)]
    with pytest.raises(ValueError, match="last="):
        plan_windows(90, 20, 20, "wrap", 5)
    with pytest.raises(ValueError, match="window_hop"):
        Windowing(hop=-1.0)
    with pytest.raises(ValueError, match="last_window"):
        Windowing(last="keep")


# --------------------------------------------------------------------------------------------
# Loading windows
# --------------------------------------------------------------------------------------------


def test_every_window_of_every_format_is_a_clip_with_the_right_audio(long_files: Path) -> None:
    entries, audio = load_dataset(long_files, SR, 2.0, workers=2)
    names = [e.path.name for e in entries]
    assert names == ["a.wav"] * 4 + ["b.flac"] * 3 + ["c.mp3"] * 4  # 9 s, 7 s, 9 s at 2 s, last dropped
    assert audio.shape == (11, 2 * SR) and audio.dtype == np.float32
    for entry, clip in zip(entries, audio):
        k = int(round(entry.start / 2.0))
        assert entry.duration == pytest.approx(2.0) and entry.start == pytest.approx(2.0 * k)
        assert entry.caption == f"piece {entry.path.name}" and entry.split == "train"
        assert f"window {k + 1}/" in entry.source and entry.source.startswith(str(long_files))
        assert abs(_dominant_hz(clip[200:-200]) - TONES[k]) < 3, entry.source
        assert 0.3 < np.abs(clip).max() < 0.45  # stereo mixed down: (0.5 + 0.25) / 2


def test_last_window_padded_and_overlapping_hop(long_files: Path) -> None:
    padded, audio = load_dataset(long_files, SR, 2.0, windowing=Windowing(last="pad"))
    last = [e for e in padded if e.path.name == "a.wav"][-1]
    assert (last.start, last.duration) == (pytest.approx(8.0), pytest.approx(1.0))
    row = audio[[i for i, e in enumerate(padded) if e is last][0]]
    assert (
        np.abs(row[: SR - 200]).min() < np.abs(row[: SR - 200]).max() and np.abs(row[SR + 100 :]).max() == 0.0
    )
    assert len(padded) == 5 + 4 + 5  # 9 s -> 4 + 1, 7 s -> 3 + 1
    overlapping = expand_windows(read_manifest(long_files), 2.0, Windowing(hop=1.0))
    assert [e.start for e in overlapping if e.path.name == "b.flac"] == pytest.approx([0, 1, 2, 3, 4, 5])
    whole_files = expand_windows(read_manifest(long_files), 2.0, None)
    assert whole_files == read_manifest(long_files)  # windowing off: one clip per row


def test_manifest_start_and_duration_bound_the_windows(tmp_path: Path) -> None:
    _write(tmp_path / "long.flac", 12.0)
    manifest = _jsonl(
        tmp_path / "m.jsonl",
        [{"path": "long.flac", "caption": "bounded", "start": 2.0, "duration": 7.0, "split": "train"}],
    )
    entries, audio = load_dataset(manifest, SR, 2.0, windowing=Windowing(last="pad"))
    assert [(e.start, e.duration) for e in entries] == [
        pytest.approx((2.0, 2.0)),
        pytest.approx((4.0, 2.0)),
        pytest.approx((6.0, 2.0)),
        pytest.approx((8.0, 1.0)),
    ]
    for clip, tone in zip(audio, (440, 550, 660, 770)):
        assert abs(_dominant_hz(clip[200 : SR - 200]) - tone) < 3
    assert np.abs(audio[-1, SR + 100 :]).max() == 0.0  # nothing read past start + duration


def test_mp3_windows_match_a_full_decode_exactly(tmp_path: Path) -> None:
    """libsndfile's MPEG decoder returns wrong samples for ~5500 frames after a seek; windows pre-roll."""
    path = _write(tmp_path / "song.mp3", 9.0)
    full, rate = sf.read(path, dtype="float32", always_2d=True)
    files = OpenFiles()  # one handle kept open across windows, as loading does
    try:
        for start in (2.0, 4.0, 6.0, 1.0, 7.0, 0.0):
            entry = Entry(path=path, caption="x", start=start, duration=2.0)
            first = int(round(start * rate))
            for window in (read_segment(entry, 2.0).audio, read_segment(entry, 2.0, files).audio):
                assert window.shape == (2 * rate, 2)
                np.testing.assert_allclose(window, full[first : first + 2 * rate], atol=1e-6)
    finally:
        files.close()


def test_windows_keep_the_split_of_their_caption(tmp_path: Path) -> None:
    _write(tmp_path / "t.wav", 6.5)
    rows = [{"path": "t.wav", "caption": f"take {i}", "instrument": "flute"} for i in range(40)]
    entries, _ = load_dataset(_jsonl(tmp_path / "m.jsonl", rows), SR, 2.0)
    assert len(entries) == 40 * 3
    splits: dict[str, set[str]] = {}
    for e in entries:
        splits.setdefault(e.caption, set()).add(e.split)
        assert e.attributes == {"instrument": "flute"}
    assert splits == {caption: {split_for_caption(caption)} for caption in splits}  # one split per caption
    assert len({next(iter(s)) for s in splits.values()}) >= 2


def test_check_counts_files_windows_clips_and_captions_per_split(tmp_path: Path) -> None:
    for i in range(4):
        _write(tmp_path / f"{i}.wav", 6.0)
    silent = np.zeros((int(6 * RATE), 2), dtype=np.float32)
    silent[: 2 * RATE] = _stepped(2.0)  # only the first of its three windows is heard
    sf.write(tmp_path / "fade.flac", silent, RATE)
    rows = [
        {"path": "0.wav", "caption": "one", "split": "train"},
        {"path": "1.wav", "caption": "one", "split": "train"},
        {"path": "2.wav", "caption": "two", "split": "train"},
        {"path": "3.wav", "caption": "three", "split": "test"},
        {"path": "fade.flac", "caption": "fades out", "split": "valid"},
    ]
    report = check_entries(read_manifest(_jsonl(tmp_path / "m.jsonl", rows)), SR, 2.0)
    assert (report.rows, report.files, report.total, report.usable) == (5, 5, 15, 13)
    assert {p.kind for p in report.problems} == {"silent"}
    assert [p.source.split(" ", 1)[1] for p in report.problems] == [
        "window 2/3 (2.00-4.00 s)",
        "window 3/3 (4.00-6.00 s)",
    ]
    counts = {s: c.as_dict() for s, c in report.splits.items()}
    assert counts == {
        "train": {"files": 3, "clips": 9, "captions": 2},
        "valid": {"files": 1, "clips": 1, "captions": 1},
        "test": {"files": 1, "clips": 3, "captions": 1},
    }
    assert report.counts()["splits"] == counts and report.sample_rates == {RATE: 5}
    text = report.format()
    assert (
        "files: 5" in text and "clips (windows): 15" in text and "train 3 files, 9 clips, 2 captions" in text
    )


def test_load_data_reads_the_data_section(long_files: Path) -> None:
    data = DataConfig(sample_rate=SR, duration=3.0, window_hop=1.5, last_window="drop", workers=1)
    entries, audio = load_data(data, long_files)
    # 9 s -> starts 0, 1.5, ..., 6 (5); 7 s -> 0 .. 3 (3); 9 s -> 5
    assert len(entries) == audio.shape[0] == 13 and audio.shape[1] == 3 * SR
    train, _ = load_data(data, long_files, split="train")
    assert len(train) == 13


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


def test_parallel_reads_keep_a_bounded_number_of_clips_in_flight() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    consumed = 0
    ahead = []
    for value in parallel(work, list(range(200)), workers=2):
        assert value == consumed  # in order
        consumed += 1
        time.sleep(0.0005)
        with lock:
            ahead.append(len(started) - consumed)
    assert consumed == 200 and max(ahead) <= READ_AHEAD * 2


def test_a_window_reads_only_its_own_frames(long_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading never asks soundfile for more than one clip (plus the MP3 pre-roll) at a time."""
    asked: list[int] = []
    real = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):  # noqa: ANN001
        asked.append(frames)
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(audio_io.sf.SoundFile, "read", spy)
    load_dataset(long_files, SR, 2.0, workers=1)
    assert len(asked) == 11 and all(0 < n <= 2 * RATE + audio_io.MPEG_PREROLL for n in asked)
