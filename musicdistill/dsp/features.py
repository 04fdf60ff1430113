"""Signal processing in torch: resampling, the log-mel spectrogram and its approximate inverse.

Framing convention, shared by every user of :class:`MelSpec`: a waveform of N samples gives
``T = ceil(N / hop_length)`` frames, frame ``t`` centred on sample ``t * hop_length`` (the signal is
zero-padded on both sides), so ``T * hop_length`` samples of audio correspond to exactly ``T`` frames.
Spectra are scaled by the window sum, so a full-scale sine peaks at magnitude 0.5 whatever ``n_fft``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdistill.dsp.mel_scale import mel_filters

#: smallest mel power kept before the log: -104 dB relative to a full-scale sine (power 0.25). A floor
#: much higher than this (-80 dB) showed up as a broadband hiss in decoded clean synthesised notes and
#: visibly biased their spectral centroid
LOG_FLOOR = 1e-11


@functools.lru_cache(maxsize=32)
def _mel_filters_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-normalised triangular filters (librosa's defaults, :mod:`musicdistill.dsp.mel_scale`) -> [n_mels, n_fft // 2 + 1]."""
    check_mel_args(sample_rate, n_fft, n_mels, fmin, fmax)
    return torch.from_numpy(
        _mel_filters_np(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax))
    )


def check_mel_args(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
    """Raise ValueError naming the argument when a mel setting is out of range."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate} must be positive")
    if n_fft < 16:
        raise ValueError(f"n_fft={n_fft} must be at least 16")
    if n_mels < 1 or n_mels > n_fft // 2 + 1:
        raise ValueError(f"n_mels={n_mels} must be between 1 and n_fft // 2 + 1 = {n_fft // 2 + 1}")
    if not 0.0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}"
        )


def mel_pseudo_inverse(filters: torch.Tensor) -> torch.Tensor:
    """A non-negative approximate inverse of a mel filterbank: [n_mels, F] -> [F, n_mels].

    Each linear bin receives the filter-weighted mean of the power densities (band power divided by
    band area) of the mel bands covering it. A flat spectrum is recovered exactly; bins outside
    [fmin, fmax] get zero.
    """
    area = filters.sum(dim=1, keepdim=True).clamp_min(1e-12)  # [M, 1]
    coverage = filters.sum(dim=0)  # [F]
    inverse = (filters / area).T  # [F, M]: density of band m, weighted by W[m, f]
    covered = coverage > 0
    inverse = inverse / torch.where(covered, coverage, torch.ones_like(coverage))[:, None]
    return torch.where(covered[:, None], inverse, torch.zeros_like(inverse))


class MelSpec(nn.Module):
    """Log-mel spectrogram of a mono waveform, and its approximate inverse (mel pseudo-inverse + Griffin-Lim).

    ``forward(wav [B, N] or [B, 1, N]) -> log-mel [B, n_mels, T]`` with ``T = ceil(N / hop_length)``;
    values are natural logs of mel power, floored at ``log_floor`` (default :data:`LOG_FLOOR`).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 640,
        n_mels: int = 128,
        fmin: float = 30.0,
        fmax: float = 8000.0,
        log_floor: float = LOG_FLOOR,
    ) -> None:
        super().__init__()
        if hop_length < 1:
            raise ValueError(f"hop_length={hop_length} must be positive")
        if not log_floor > 0:
            raise ValueError(f"log_floor={log_floor} must be positive")
        filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.fmin, self.fmax, self.log_floor = fmin, fmax, log_floor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("inverse", mel_pseudo_inverse(filters), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames T for a waveform of ``num_samples`` samples."""
        return max(1, math.ceil(num_samples / self.hop_length))

    def power(self, wav: torch.Tensor) -> torch.Tensor:
        """Power spectrogram: wav [B, N] or [B, 1, N] -> [B, n_fft // 2 + 1, T]."""
        wav = _as_batch_of_mono(wav)
        frames = self.num_frames(wav.shape[-1])
        wav = F.pad(wav, (0, frames * self.hop_length - wav.shape[-1]))
        spec = torch.stft(
            wav.float(),
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )[..., :frames]
        return (spec.abs() / self.window.sum()).pow(2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] or [B, 1, N] -> log-mel [B, n_mels, T]."""
        mel = torch.matmul(self.filters, self.power(wav))
        return torch.log(mel.clamp_min(self.log_floor))

    def to_audio(self, log_mel: torch.Tensor, iters: int = 16, seed: int = 0) -> torch.Tensor:
        """Approximate inverse: log-mel [B, n_mels, T] -> wav [B, T * hop_length].

        The mel frames are interpolated (in log space) onto a finer hop of ``n_fft // 4`` so that
        Griffin-Lim runs with 75 % overlap, mapped to linear power with :func:`mel_pseudo_inverse`,
        and given a phase by ``iters`` fast Griffin-Lim iterations from a seeded random start.
        """
        if log_mel.dim() != 3 or log_mel.shape[1] != self.n_mels:
            raise ValueError(f"log_mel must have shape [B, {self.n_mels}, T], got {tuple(log_mel.shape)}")
        length = log_mel.shape[-1] * self.hop_length
        gl_hop = max(1, self.n_fft // 4)
        fine = interpolate_frames(log_mel.float(), self.hop_length, gl_hop, length // gl_hop + 1)
        magnitude = torch.matmul(self.inverse, fine.exp()).sqrt() * self.window.sum()
        return griffin_lim(magnitude, self.n_fft, gl_hop, self.window, length, iters, seed=seed)


def interpolate_frames(frames: torch.Tensor, hop: int, new_hop: int, num_out: int) -> torch.Tensor:
    """Linear interpolation of centred frames [B, D, T] at hop ``hop`` onto hop ``new_hop`` -> [B, D, num_out]."""
    last = frames.shape[-1] - 1
    pos = (torch.arange(num_out, device=frames.device, dtype=torch.float64) * new_hop / hop).clamp(max=last)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=last)
    frac = (pos - lo).to(frames.dtype)
    return frames[..., lo] * (1 - frac) + frames[..., hi] * frac


def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop_length: int,
    window: torch.Tensor,
    length: int,
    iters: int,
    momentum: float = 0.99,
    seed: int = 0,
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude [B, F, T'] -> wav [B, length].

    The initial phase is drawn from a CPU generator seeded with ``seed``, so decoding is deterministic.
    """
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(magnitude.shape, generator=gen).to(magnitude.device) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(magnitude), phase)
    alpha = momentum / (1 + momentum)
    previous = torch.zeros_like(angles)

    def istft(spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, n_fft, hop_length, window=window, center=True, length=length)

    spec = magnitude * angles
    for _ in range(iters):
        rebuilt = torch.stft(
            istft(spec),
            n_fft,
            hop_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        spec = torch.sgn(torch.sub(rebuilt, previous, alpha=alpha)) * magnitude  # sgn(z) = z / |z|
        previous = rebuilt
    return istft(spec)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int, rolloff: float) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
    t = t.clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    return kernel, width


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int, lowpass_zeros: int = 6) -> torch.Tensor:
    """Band-limited (Hann-windowed sinc) resampling along the last axis: [..., N] -> [..., ceil(N * target / orig)].

    The same polyphase scheme as torchaudio's ``functional.resample`` (which this package must not need).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if orig_sr == target_sr:
        return wav
    gcd = math.gcd(int(orig_sr), int(target_sr))
    orig, new = int(orig_sr) // gcd, int(target_sr) // gcd
    kernel, width = _sinc_kernel(orig, new, lowpass_zeros, 0.99)
    shape = wav.shape
    flat = wav.reshape(-1, 1, shape[-1])
    out = F.conv1d(F.pad(flat, (width, width + orig)), kernel.to(flat), stride=orig)  # [X, new, chunks]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target_len = math.ceil(new * shape[-1] / orig)
    return out[:, :target_len].reshape(*shape[:-1], target_len)


def log_mel(
    wav: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 640,
    n_mels: int = 128,
    fmin: float = 30.0,
    fmax: float = 8000.0,
) -> torch.Tensor:
    """Functional form of :class:`MelSpec`: wav [B, N] or [B, 1, N] -> log-mel [B, n_mels, T]."""
    spec = MelSpec(sample_rate, n_fft, hop_length, n_mels, fmin, fmax).to(wav.device)
    return spec(wav)


def _as_batch_of_mono(wav: torch.Tensor) -> torch.Tensor:
    if wav.dim() == 3 and wav.shape[1] == 1:
        return wav[:, 0]
    if wav.dim() == 2:
        return wav
    raise ValueError(f"expected a mono waveform [B, N] or [B, 1, N], got shape {tuple(wav.shape)}")
