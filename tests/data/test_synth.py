"""The built-in synthesiser: determinism, the manifest contract, captions and splits, and attributes
measured on the audio itself."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdistill.cli import main
from musicdistill.data import captions, render, synth
from musicdistill.data.manifest import SPLITS, split_for_caption

SR = 16000
NUM_CLIPS = 16


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth.synthesize_dataset(out, NUM_CLIPS, seed=3, workers=1)
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_whatever_the_worker_count(dataset: Path, tmp_path: Path) -> None:
    synth.synthesize_dataset(tmp_path / "two", NUM_CLIPS, seed=3, workers=2)
    first, second = _digests(dataset), _digests(tmp_path / "two")
    assert len(first) == NUM_CLIPS + 2
    assert first == second


def test_another_seed_gives_other_clips(dataset: Path, tmp_path: Path) -> None:
    synth.synthesize_dataset(tmp_path / "other", 4, seed=4, workers=1)
    other = _digests(tmp_path / "other")
    assert all(other[f"audio/{i:06d}.wav"] != _digests(dataset)[f"audio/{i:06d}.wav"] for i in range(4))


def test_rerun_into_an_existing_folder_matches_a_fresh_run(tmp_path: Path) -> None:
    out = tmp_path / "data"
    synth.synthesize_dataset(out, 6, seed=0, workers=1)
    (out / "audio" / "notes.txt").write_text("not a clip")
    synth.synthesize_dataset(out, 3, seed=1, workers=1)
    synth.synthesize_dataset(tmp_path / "fresh", 3, seed=1, workers=1)
    rerun = _digests(out)
    assert rerun.pop("audio/notes.txt")  # files that are not clips are left alone
    assert rerun == _digests(tmp_path / "fresh")
    assert not list(out.rglob("*.tmp"))


def test_manifest_follows_the_attribute_contract(dataset: Path) -> None:
    records = _records(dataset)
    assert len(records) == NUM_CLIPS
    for i, r in enumerate(records):
        assert set(r) == {"path", "caption", "duration", "sample_rate", "split", "attributes"}
        assert r["path"] == f"audio/{i:06d}.wav"
        assert (r["duration"], r["sample_rate"]) == (4.0, SR)
        assert r["split"] in SPLITS and r["split"] == split_for_caption(r["caption"])
        a = r["attributes"]
        assert set(a) == {"instrument", "tempo", "bpm", "key", "mode", "register", "drums", "stated"}
        for name, values in captions.ATTRIBUTE_VALUES.items():
            assert a[name] in values
        assert abs(a["bpm"] / captions.TEMPO_BPM[a["tempo"]] - 1) <= captions.BPM_JITTER + 1e-3
        assert a["stated"] and set(a["stated"]) <= set(captions.ATTRIBUTE_NAMES)
        info = sf.info(dataset / r["path"])
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, 4 * SR, "PCM_16")
    settings = json.loads((dataset / "synth.json").read_text())
    assert settings == synth.synth_settings(NUM_CLIPS, 3, SR, 4.0)
    assert synth.dataset_is_current(dataset, NUM_CLIPS, 3, SR, 4.0)
    assert not synth.dataset_is_current(dataset, NUM_CLIPS + 1, 3, SR, 4.0)


def test_other_sample_rates_and_durations(tmp_path: Path) -> None:
    synth.synthesize_dataset(tmp_path / "d", 2, seed=0, sample_rate=22050, duration=1.5, workers=1)
    for r in _records(tmp_path / "d"):
        audio, rate = sf.read(tmp_path / "d" / r["path"])
        assert rate == 22050 and audio.shape == (int(round(1.5 * 22050)),)
        assert 0.85 < np.abs(audio).max() < 0.91


@pytest.mark.parametrize(
    "kwargs", [{"num_clips": 0}, {"sample_rate": 100}, {"duration": 0.1}, {"workers": 0}, {"seed": -1}]
)
def test_bad_arguments_are_rejected_with_their_name(tmp_path: Path, kwargs: dict) -> None:
    args = {"num_clips": 2, "seed": 0, "sample_rate": SR, "duration": 4.0, "workers": 1, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        synth.synthesize_dataset(tmp_path / "d", **args)


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert (
        main(["data", "synth", "--out", str(out), "--num-clips", "3", "--seed", "5", "--workers", "1"]) == 0
    )
    assert capsys.readouterr().out.strip() == str(out / "manifest.jsonl")
    assert len(_records(out)) == 3
    assert main(["data", "synth", "--out", str(out), "--num-clips", "0"]) == 2
    assert "num_clips=0" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Captions and splits
# --------------------------------------------------------------------------------------------


def _captions(count: int, seed: int = 0) -> list[tuple[dict, str, list[str]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        attrs = captions.sample_attributes(rng)
        caption, stated = captions.make_caption(attrs, rng)
        out.append((attrs, caption, stated))
    return out


def _says(caption: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", caption, flags=re.IGNORECASE) is not None


def _values_said(caption: str, attribute: str) -> set[str]:
    """The values of ``attribute`` that the caption mentions."""
    if attribute == "mode":
        return {m for m in captions.MODES if re.search(rf"\b{m}\b", caption, flags=re.IGNORECASE)}
    if attribute == "key":
        return {
            k
            for k in captions.KEYS
            if re.search(
                rf"(?i:key of |key: |in ){re.escape(k)}(?![\w#])|(^|, ){re.escape(k)} (major|minor)", caption
            )
        }
    said = {
        v
        for v in captions.ATTRIBUTE_VALUES[attribute]
        if any(_says(caption, p) for p in captions.value_phrases(attribute, v))
    }
    if attribute == "tempo":
        bpm = re.search(r"(\d+) bpm", caption, flags=re.IGNORECASE)
        if bpm:
            said.add(min(captions.TEMPO_BPM, key=lambda t: abs(captions.TEMPO_BPM[t] - int(bpm.group(1)))))
    return said


def test_captions_state_exactly_the_stated_attributes_with_their_true_values() -> None:
    for attrs, caption, stated in _captions(600):
        for name in captions.ATTRIBUTE_NAMES:
            expected = {attrs[name]} if name in stated else set()
            assert _values_said(caption, name) == expected, (caption, name, attrs)


def test_captions_vary_and_often_leave_attributes_unstated() -> None:
    rows = _captions(1000)
    for name in ("drums", "mode", "key"):
        omitted = np.mean([name not in stated for _, _, stated in rows])
        assert 0.15 < omitted < 0.6, (name, omitted)
    fixed = dict(rows[0][0])
    rng = np.random.default_rng(0)
    paraphrases = {
        captions.make_caption(fixed, rng, stated=list(captions.ATTRIBUTE_NAMES))[0] for _ in range(60)
    }
    assert len(paraphrases) > 30
    with pytest.raises(ValueError, match="tempi"):
        captions.make_caption(fixed, rng, stated=["tempi"])


def test_splits_share_no_caption_and_are_about_90_5_5() -> None:
    split_of: dict[str, set[str]] = {}
    for _, caption, _ in _captions(2000, seed=1):
        split_of.setdefault(caption, set()).add(split_for_caption(caption))
    assert all(len(s) == 1 for s in split_of.values())
    fractions = {s: np.mean([split_of[c] == {s} for c in split_of]) for s in SPLITS}
    assert 0.85 < fractions["train"] < 0.95
    assert 0.02 < fractions["valid"] < 0.08 and 0.02 < fractions["test"] < 0.08


# --------------------------------------------------------------------------------------------
# Attributes measured on the audio
# --------------------------------------------------------------------------------------------


def _clip(seed: int, **fixed: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    attrs = captions.sample_attributes(rng)
    attrs.update(fixed)
    if "tempo" in fixed:
        attrs["bpm"] = captions.TEMPO_BPM[fixed["tempo"]]
    return render.render_clip(attrs, rng, SR, 4.0)


def _power(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Power spectrogram [frames, n_fft // 2 + 1]."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def _onsets_per_second(audio: np.ndarray, hop: int = 128) -> float:
    power = _power(audio, 512, hop)
    edges = np.unique(np.geomspace(2, power.shape[1], 25).astype(int))
    bands = np.stack([power[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    flux = np.maximum(np.diff(10 * np.log10(bands + 1e-8), axis=0), 0).mean(1)
    flux = np.convolve(flux, np.ones(3) / 3, mode="same")
    gap = int(0.1 * SR / hop)
    peaks = [
        i
        for i in range(len(flux))
        if flux[i] > 0.3 * flux.max() and flux[i] == flux[max(0, i - gap) : i + gap + 1].max()
    ]
    return len(peaks) / (len(audio) / SR)


def _centroid(audio: np.ndarray) -> float:
    power = _power(audio)
    return float((power * np.fft.rfftfreq(1024, 1 / SR)).sum() / power.sum())


def _chroma(audio: np.ndarray) -> np.ndarray:
    """Energy per pitch class (C = 0) of the spectrum above 50 Hz -> [12], summing to 1."""
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    keep = freqs > 50
    pitch_class = np.round(12 * np.log2(freqs[keep] / 440.0) + 69).astype(int) % 12
    chroma = np.bincount(pitch_class, weights=spectrum[keep], minlength=12)
    return chroma / chroma.sum()


def test_fast_clips_have_a_higher_onset_rate_than_slow_ones() -> None:
    slow = np.mean([_onsets_per_second(_clip(s, tempo="slow", drums="none")) for s in range(4)])
    fast = np.mean([_onsets_per_second(_clip(s, tempo="fast", drums="none")) for s in range(4)])
    assert fast > 1.5 * slow, (slow, fast)


def test_low_register_sounds_lower_than_high() -> None:
    for seed in range(3):
        for instrument in captions.INSTRUMENTS:
            low = _centroid(_clip(seed, register="low", drums="none", instrument=instrument))
            high = _centroid(_clip(seed, register="high", drums="none", instrument=instrument))
            assert high > 1.15 * low, (instrument, low, high)


def test_each_instrument_has_its_own_spectrum() -> None:
    rng = np.random.default_rng(0)
    attrs = {"bpm": 100.0, "key": "D", "mode": "major", "register": "high", "instrument": "organ"}
    notes = render.melody_notes(attrs, 0.0, rng, SR, 4.0)
    spectra = {}
    for name, timbre in render.TIMBRES.items():
        power = _power(render.render_notes(notes, timbre, np.random.default_rng(1), SR, 4 * SR)).mean(0)
        spectra[name] = 10 * np.log10(np.maximum(power / power.max(), 1e-6))
    for a in captions.INSTRUMENTS:
        for b in captions.INSTRUMENTS:
            if a < b:
                assert np.sqrt(np.mean((spectra[a] - spectra[b]) ** 2)) > 3.0, (a, b)


def test_drums_add_high_frequency_hits() -> None:
    def share_above_4k(audio: np.ndarray) -> float:
        power = _power(audio).mean(0)
        return float(power[np.fft.rfftfreq(1024, 1 / SR) > 4000].sum() / power.sum())

    for pattern in captions.DRUM_PATTERNS[1:]:
        without = np.mean([share_above_4k(_clip(s, drums="none", instrument="bass")) for s in range(3)])
        with_drums = np.mean([share_above_4k(_clip(s, drums=pattern, instrument="bass")) for s in range(3)])
        assert with_drums > 5 * without, (pattern, without, with_drums)


def test_key_and_mode_show_in_the_chroma() -> None:
    thirds = {}
    for mode in captions.MODES:
        rolled = []
        for seed in range(4):
            key = captions.KEYS[(5 * seed) % 12]
            chroma = _chroma(_clip(seed, key=key, mode=mode, drums="none"))
            rolled.append(np.roll(chroma, -captions.KEYS.index(key)))
        mean = np.mean(rolled, 0)
        triad = (0, render.SCALES[mode][2], 7)
        assert mean[list(triad)].sum() > 0.4, (mode, mean)
        thirds[mode] = mean[4] - mean[3]
    assert thirds["major"] > 0.05 and thirds["minor"] < -0.05, thirds


def test_clips_are_finite_normalised_and_exactly_sized() -> None:
    for i, instrument in enumerate(captions.INSTRUMENTS):
        for drums in captions.DRUM_PATTERNS:
            rng = np.random.default_rng(i)
            attrs = {**captions.sample_attributes(rng), "instrument": instrument, "drums": drums}
            audio = render.render_clip(attrs, rng, 22050, 2.5)
            assert audio.dtype == np.float32 and audio.shape == (55125,)
            assert np.isfinite(audio).all() and abs(np.abs(audio).max() - 0.9) < 1e-4
