"""Loudness of mono audio: ITU-R BS.1770-4 measurement, normalisation and a look-ahead peak limiter.

:func:`integrated_loudness` implements the standard's K-weighting (two biquads, re-derived for any
sample rate) and its gated mean over 400 ms blocks; :func:`normalize_loudness` brings a clip to a
target level and keeps its sample peaks under a ceiling with :func:`limit_peaks`. The listening-test
export uses them so that level differences cannot bias ratings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter

log = logging.getLogger(__name__)

FADE_S = 0.01


def k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two biquads (b, a) of BS.1770's K-weighting at ``sample_rate``: high shelf, then high pass.

    Analogue prototypes fitted to the standard's 48 kHz coefficients (B. De Man, "Evaluation of
    implementations of the EBU R128 loudness measurement", AES 2018), re-discretised for any rate.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate} must be positive")
    gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = math.tan(math.pi * fc / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0
    shelf_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0
    q, fc = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc / sample_rate)
    a0 = 1.0 + k / q + k * k
    high_b = np.array([1.0, -2.0, 1.0])
    high_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]) / a0
    return [(shelf_b, shelf_a), (high_b, high_a)]


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness (LUFS) of mono ``audio [N]`` per ITU-R BS.1770-4.

    400 ms blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU below
    the loudness of the blocks that pass it. Clips shorter than one block are measured as a whole.
    Returns ``-inf`` for silence.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"audio must be a non-empty mono array [N], got shape {x.shape}")
    for b, a in k_weighting(sample_rate):
        x = lfilter(b, a, x)
    block, hop = round(0.4 * sample_rate), round(0.1 * sample_rate)
    if x.size < block:
        power = np.array([np.mean(x * x)])
    else:
        starts = np.arange(0, x.size - block + 1, hop)
        csum = np.concatenate([[0.0], np.cumsum(x * x)])
        power = (csum[starts + block] - csum[starts]) / block
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10.0 * np.log10(power)
    gated = power[block_lufs > -70.0]
    if gated.size == 0:
        return -math.inf
    relative = -0.691 + 10.0 * math.log10(gated.mean()) - 10.0
    gated = power[(block_lufs > -70.0) & (block_lufs > relative)]
    return -0.691 + 10.0 * math.log10(gated.mean())


def limit_peaks(audio: np.ndarray, ceiling: float, sample_rate: int, window_s: float = 0.005) -> np.ndarray:
    """A zero-latency look-ahead limiter: ``|output| <= ceiling`` everywhere, gain changes smoothed over ~5 ms.

    The per-sample gain a peak needs is held (a running minimum over ±window) and then averaged over
    a window of the same size; every average covers only held values at or below the sample's own
    need, so no sample exceeds the ceiling. A final clip guards against rounding.
    """
    x = np.asarray(audio, dtype=np.float64)
    magnitude = np.abs(x)
    if magnitude.size == 0 or magnitude.max() <= ceiling:
        return x.copy()
    need = np.minimum(1.0, ceiling / np.maximum(magnitude, 1e-12))
    w = max(1, round(window_s * sample_rate))
    held = minimum_filter1d(need, size=2 * w + 1, mode="nearest")
    smooth = np.minimum(uniform_filter1d(held, size=w + 1, mode="nearest"), need)
    return np.clip(x * smooth, -ceiling, ceiling)


@dataclass
class Levels:
    """Loudness before and after normalisation (LUFS), the gain applied (dB) and the final sample peak (dBFS)."""

    input_lufs: float
    gain_db: float
    output_lufs: float
    peak_dbfs: float


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def normalize_loudness(
    audio: np.ndarray, sample_rate: int, target_lufs: float, peak_dbfs: float, passes: int = 3
) -> tuple[np.ndarray, Levels]:
    """Scale mono ``audio [N]`` to ``target_lufs`` and limit its peaks to ``peak_dbfs`` -> (float32 [N], levels).

    Limiting lowers the loudness a little; up to ``passes`` rounds of gain and limiting make it up.
    Silent audio is returned unchanged.
    """
    x = np.asarray(audio, dtype=np.float64)
    measured = integrated_loudness(x, sample_rate)
    if not math.isfinite(measured):
        return x.astype(np.float32), Levels(measured, 0.0, measured, _db(float(np.abs(x).max())))
    ceiling = 10.0 ** (peak_dbfs / 20.0)
    y, gain_db, loudness = x, 0.0, measured
    for _ in range(passes):
        step = target_lufs - loudness
        if abs(step) < 0.05:
            break
        gain_db += step
        y = limit_peaks(x * 10.0 ** (gain_db / 20.0), ceiling, sample_rate)
        loudness = integrated_loudness(y, sample_rate)
    if abs(loudness - target_lufs) > 0.5:
        log.warning(
            "a stimulus reaches %.1f LUFS instead of %.1f under the %.1f dBFS peak ceiling",
            loudness,
            target_lufs,
            peak_dbfs,
        )
    return y.astype(np.float32), Levels(measured, gain_db, loudness, _db(float(np.abs(y).max())))


def fade(audio: np.ndarray, sample_rate: int, seconds: float = FADE_S) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of ``seconds`` each (no clicks where clips were cropped)."""
    n = min(round(seconds * sample_rate), audio.shape[-1] // 2)
    if n < 1:
        return audio
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    out = np.array(audio, dtype=np.float32, copy=True)
    out[..., :n] *= ramp
    out[..., -n:] *= ramp[::-1]
    return out
