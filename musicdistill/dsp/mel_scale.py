"""The Slaney mel scale and its triangular filterbank, and Hz to MIDI, in numpy.

These reproduce librosa 0.11's ``hz_to_mel`` / ``mel_to_hz`` / ``mel_frequencies`` (``htk=False``),
``filters.mel`` (``norm="slaney"``, float32) and ``hz_to_midi`` value for value; the tests compare
them with librosa, which stays a test-only reference (it brings numba, llvmlite and scikit-learn).

The Slaney scale is linear below 1 kHz (200/3 Hz per mel) and logarithmic above (27 mels per
factor 6.4).
"""

from __future__ import annotations

import numpy as np

F_SP = 200.0 / 3  # Hz per mel on the linear part
MIN_LOG_HZ = 1000.0
MIN_LOG_MEL = MIN_LOG_HZ / F_SP  # 15 mels
LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies: np.ndarray | float) -> np.ndarray:
    """Hz -> Slaney mels (same shape)."""
    f = np.asanyarray(frequencies, dtype=np.float64)
    mels = f / F_SP
    high = f >= MIN_LOG_HZ
    return np.where(high, MIN_LOG_MEL + np.log(np.maximum(f, MIN_LOG_HZ) / MIN_LOG_HZ) / LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Slaney mels -> Hz (same shape)."""
    m = np.asanyarray(mels, dtype=np.float64)
    freqs = F_SP * m
    high = m >= MIN_LOG_MEL
    return np.where(high, MIN_LOG_HZ * np.exp(LOGSTEP * (m - MIN_LOG_MEL)), freqs)


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``[n_mels]`` frequencies (Hz) evenly spaced in mels from ``fmin`` to ``fmax`` inclusive."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular filters ``[n_mels, n_fft // 2 + 1]`` (float32): filter i rises
    from mel point i to i + 1 and falls to i + 2, scaled to unit area per Hz (2 / bandwidth)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def hz_to_midi(frequencies: np.ndarray | float) -> np.ndarray:
    """Hz -> MIDI note numbers (A4 = 440 Hz = 69; fractional)."""
    return 12 * (np.log2(np.asanyarray(frequencies)) - np.log2(440.0)) + 69
