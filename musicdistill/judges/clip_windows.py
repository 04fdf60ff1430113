"""How the learned embedders read a whole clip: band standardisation and overlapping windows.

Both learned embedders (the reward embedder, :mod:`musicdistill.judges.embedder`, and the second
embedder, :mod:`musicdistill.judges.second_embedder`) train on chunks of a fixed number of log-mel
frames and embed a clip of any length as the mean of their encoder's outputs over overlapping
windows of that length. Each standardises every mel band with statistics of its training clips.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from musicdistill.judges.log_mel import MelSpec, as_waveforms, waveform_mels


def band_statistics(log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training log-mels ``[N, D, T]`` -> per-band mean and standard deviation ``[D]`` (std >= 1e-3)."""
    flat = log_mel.float().transpose(0, 1).reshape(log_mel.shape[1], -1)
    return flat.mean(1), flat.std(1).clamp_min(1e-3)


def window_starts(num_frames: int, window: int) -> list[int]:
    """Starts of windows of ``window`` frames covering ``num_frames`` frames, overlapping by about half."""
    if num_frames <= window:
        return [0]
    count = math.ceil((num_frames - window) / max(1, window // 2)) + 1
    return sorted({int(round(s)) for s in np.linspace(0, num_frames - window, count)})


@torch.no_grad()
def windowed_mean(
    encoder: torch.nn.Module,
    log_mel: torch.Tensor,
    chunk_frames: int,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """The mean of ``encoder``'s outputs over a clip's overlapping windows: ``[N, D, T] -> [N, E]``.

    ``encoder`` maps windows ``[M, D, L]`` to ``[M, E]`` (L = ``min(chunk_frames, T)``); it runs in
    eval mode (its previous mode is restored) on ``device``, ``batch_size`` clips at a time. The
    result is on ``device``. ``encoder.n_mels`` (D) is checked against ``log_mel``.
    """
    if log_mel.dim() != 3 or log_mel.shape[1] != encoder.n_mels:
        raise ValueError(f"log_mel must have shape [N, {encoder.n_mels}, T], got {tuple(log_mel.shape)}")
    was_training = encoder.training
    encoder.eval()
    starts = window_starts(log_mel.shape[-1], chunk_frames)
    length = min(chunk_frames, log_mel.shape[-1])
    out = []
    try:
        for first in range(0, log_mel.shape[0], batch_size):
            x = log_mel[first : first + batch_size].to(device)
            windows = torch.stack([x[..., s : s + length] for s in starts], dim=1)  # [B, W, D, L]
            z = encoder(windows.flatten(0, 1)).view(x.shape[0], len(starts), -1)
            out.append(z.mean(1))
    finally:
        encoder.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def embed_waveforms(
    embed_mel: Callable[[torch.Tensor], torch.Tensor],
    mel: MelSpec,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    batch_size: int,
) -> torch.Tensor:
    """Clips ``[N, S]`` (or ``[N, 1, S]``) at ``sample_rate`` -> ``embed_mel`` of their log-mels in
    ``mel``'s front end, ``batch_size`` clips at a time, concatenated: ``[N, E]``."""
    wav = as_waveforms(wav)
    parts = [
        embed_mel(waveform_mels(mel, wav[i : i + batch_size], sample_rate))
        for i in range(0, wav.shape[0], batch_size)
    ]
    return torch.cat(parts)
