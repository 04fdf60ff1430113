"""The Slaney mel scale, filterbank and Hz-to-MIDI equal librosa's, value for value (librosa is a test-only reference)."""

from __future__ import annotations

import numpy as np
import pytest

from musicdistill.dsp.mel_scale import hz_to_mel, hz_to_midi, mel_filters, mel_frequencies, mel_to_hz

librosa = pytest.importorskip("librosa")


def test_hz_and_mels_match_librosa_on_both_sides_of_1_khz() -> None:
    freqs = np.array([0.0, 20.0, 440.0, 999.9, 1000.0, 1000.1, 4000.0, 11025.0, 24000.0])
    np.testing.assert_array_equal(hz_to_mel(freqs), librosa.hz_to_mel(freqs))
    mels = np.linspace(0.0, 60.0, 97)
    np.testing.assert_array_equal(mel_to_hz(mels), librosa.mel_to_hz(mels))
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs)), freqs, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"),
    [(16000, 1024, 128, 0.0, 8000.0), (16000, 512, 64, 30.0, 7600.0), (24000, 2048, 80, 0.0, 12000.0)],
)
def test_the_filterbank_matches_librosa(sample_rate, n_fft, n_mels, fmin, fmax) -> None:
    ours = mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(
        mel_frequencies(n_mels + 2, fmin, fmax),
        librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax),
    )


def test_hz_to_midi_matches_librosa() -> None:
    freqs = np.array([27.5, 261.6255653, 440.0, 1000.0, 4186.0])
    np.testing.assert_array_equal(hz_to_midi(freqs), librosa.hz_to_midi(freqs))
    assert hz_to_midi(440.0) == 69.0
