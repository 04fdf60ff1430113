"""The contrastive audio embedder: the diversity reward model (method.md section 3).

A small 1-D conv encoder reads log-mel frames (the same front end as the default codec, see
:mod:`musicdistill.judges.log_mel`, so the generator's decoded log-mels can be embedded without
Griffin-Lim, see :func:`embed_mel`) and outputs L2-normalised embeddings ``[N, E]``. It is trained
COLA-style: the positive pair is two non-overlapping chunks of the same clip, the negatives are the
other clips of the batch, and the loss is the symmetric InfoNCE at a fixed temperature. With
``reconstructions`` each chunk is taken from the real clip or from its codec reconstruction at
random, so that the embedder sees decoded audio (what generations are) as the same music as the clip
it came from.

Inference embeds a whole clip as the normalised mean of the embeddings of overlapping windows of the
training chunk length. The embedder is frozen once trained and saved as a model folder
(:mod:`musicdistill.storage.model_files`). The scorer (:mod:`musicdistill.judges.scorer`) reuses the
:class:`ConvEncoder` and the training helpers (:func:`lr_at`, :func:`run_steps`, :func:`take_chunks`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from musicdistill.config import Config, EmbedConfig
from musicdistill.judges.log_mel import (
    BATCH,
    MEL_KEYS,
    ClipMels,
    LabelledMels,
    as_waveforms,
    mel_spec,
    waveform_mels,
)
from musicdistill.runtime import resolve_device
from musicdistill.storage.model_files import load_model_folder, save_model_folder

log = logging.getLogger(__name__)

KIND = "embedder"


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 3, stride, 1), nn.BatchNorm1d(c_out), nn.GELU())


class ConvEncoder(nn.Module):
    """log-mel ``[N, D, T]`` -> L2-normalised embeddings ``[N, E]``.

    Each band is standardised with the training statistics (buffers ``mean``, ``std`` [D]), then four
    conv blocks over time (bands as channels; the 2nd and 4th with stride 2), mean and max pooling over
    time, and a two-layer MLP head. Any T >= 1 is accepted.
    """

    def __init__(self, n_mels: int, channels: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv_block(n_mels, channels, 1),
            _conv_block(channels, channels, 2),
            _conv_block(channels, channels, 1),
            _conv_block(channels, channels, 2),
        )
        self.head = nn.Sequential(nn.Linear(2 * channels, channels), nn.GELU(), nn.Linear(channels, dim))
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @property
    def n_mels(self) -> int:
        return self.mean.shape[0]

    def set_statistics(self, log_mel: torch.Tensor) -> None:
        """Set the per-band standardisation from training log-mels ``[N, D, T]``."""
        flat = log_mel.float().transpose(0, 1).reshape(self.n_mels, -1)
        self.mean.copy_(flat.mean(1))
        self.std.copy_(flat.std(1).clamp_min(1e-3))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = (log_mel.float() - self.mean[:, None]) / self.std[:, None]
        h = self.conv(x)
        return F.normalize(self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1)), dim=-1)


class AudioEmbedder(nn.Module):
    """The frozen diversity embedder: :class:`ConvEncoder` + its front end and chunk length."""

    def __init__(
        self,
        encoder: ConvEncoder,
        settings: dict[str, Any],
        chunk_frames: int,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = {k: settings[k] for k in MEL_KEYS}
        self.mel = mel_spec(self.settings)
        self.chunk_frames = int(chunk_frames)
        self.config = dict(config or {})

    @property
    def dim(self) -> int:
        return self.encoder.head[-1].out_features

    @property
    def device(self) -> torch.device:
        return self.encoder.mean.device


def build_embedder(cfg: EmbedConfig, settings: dict[str, Any]) -> AudioEmbedder:
    """An untrained embedder for a config and front end."""
    frame_rate = settings["sample_rate"] / settings["hop_length"]
    chunk_frames = max(4, round(cfg.chunk_seconds * frame_rate))
    encoder = ConvEncoder(settings["n_mels"], cfg.channels, cfg.dim)
    return AudioEmbedder(encoder, settings, chunk_frames, asdict(cfg))


def window_starts(num_frames: int, window: int) -> list[int]:
    """Starts of windows of ``window`` frames covering ``num_frames`` frames, overlapping by about half."""
    if num_frames <= window:
        return [0]
    count = math.ceil((num_frames - window) / max(1, window // 2)) + 1
    return sorted({int(round(s)) for s in np.linspace(0, num_frames - window, count)})


@torch.no_grad()
def embed_mel(embedder: AudioEmbedder, log_mel: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Log-mels ``[N, D, T]`` in the embedder's front end -> embeddings ``[N, E]`` (L2-normalised, on the
    embedder's device).

    A clip is embedded as the normalised mean of its overlapping chunk-length windows. Pass the
    output of the default codec's ``decode_mel`` directly when :func:`~musicdistill.judges.log_mel.codec_shares_front_end` holds.
    """
    if log_mel.dim() != 3 or log_mel.shape[1] != embedder.encoder.n_mels:
        raise ValueError(
            f"log_mel must have shape [N, {embedder.encoder.n_mels}, T], got {tuple(log_mel.shape)}"
        )
    was_training = embedder.training
    embedder.eval()
    starts = window_starts(log_mel.shape[-1], embedder.chunk_frames)
    length = min(embedder.chunk_frames, log_mel.shape[-1])
    out = []
    for first in range(0, log_mel.shape[0], batch_size):
        x = log_mel[first : first + batch_size].to(embedder.device)
        windows = torch.stack([x[..., s : s + length] for s in starts], dim=1)  # [B, W, D, L]
        z = embedder.encoder(windows.flatten(0, 1)).view(x.shape[0], len(starts), -1)
        out.append(F.normalize(z.mean(1), dim=-1))
    embedder.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def embed_audio(
    embedder: AudioEmbedder, wav: torch.Tensor | np.ndarray, sample_rate: int, batch_size: int = BATCH
) -> torch.Tensor:
    """Clips ``[N, S]`` (or ``[N, 1, S]``) at ``sample_rate`` -> embeddings ``[N, E]`` (L2-normalised)."""
    wav = as_waveforms(wav)
    parts = [
        embed_mel(embedder, waveform_mels(embedder.mel, wav[i : i + batch_size], sample_rate))
        for i in range(0, wav.shape[0], batch_size)
    ]
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of paired rows ``a``, ``b`` ``[B, E]`` (normalised); row i of each is a positive."""
    logits = a @ b.T / temperature  # [B, B]
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def chunk_pair_starts(
    num_clips: int, num_frames: int, chunk: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts ``[B]``, ``[B]`` of two non-overlapping chunks of ``chunk`` frames per clip, in random order."""
    if 2 * chunk > num_frames:
        raise ValueError(
            f"two chunks of {chunk} frames do not fit in a clip of {num_frames} frames; "
            "lower embed.chunk_seconds (at most half the clip duration)"
        )
    first = torch.randint(0, num_frames - 2 * chunk + 1, (num_clips,), generator=gen)
    room = num_frames - chunk - (first + chunk) + 1  # choices for the second start after the first chunk
    second = first + chunk + (torch.rand(num_clips, generator=gen) * room).long()
    swap = torch.rand(num_clips, generator=gen) < 0.5
    return torch.where(swap, second, first), torch.where(swap, first, second)


def take_chunks(mels: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """``mels[rows[i], :, starts[i]:starts[i]+length]`` for every i -> float32 ``[B, D, length]``."""
    frames = starts[:, None] + torch.arange(length)  # [B, L]
    return mels[rows[:, None], :, frames].permute(0, 2, 1).float()


def training_view(
    mels: ClipMels,
    rows: torch.Tensor,
    starts: torch.Tensor,
    length: int,
    use_recon: bool,
    gain_jitter: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Chunks ``[B, D, length]`` of real or (with probability 1/2 when ``use_recon``) reconstructed clips,
    each shifted by a random log-gain of standard deviation ``gain_jitter``."""
    x = take_chunks(mels.real, rows, starts, length)
    if use_recon and mels.recon is not None:
        pick = (torch.rand(len(rows), generator=gen) < 0.5)[:, None, None]
        x = torch.where(pick, take_chunks(mels.recon, rows, starts, length), x)
    if gain_jitter > 0:
        x = x + gain_jitter * torch.randn(len(rows), 1, 1, generator=gen)
    return x


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 10 % of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def check_training_mels(mels: ClipMels, batch_size: int, name: str) -> int:
    """The batch size actually usable with ``mels`` (at most the clip count; at least 2 clips needed)."""
    if len(mels) < 2:
        raise ValueError(f"{name} needs at least 2 training clips for contrastive negatives, got {len(mels)}")
    if batch_size > len(mels):
        log.warning(
            "%s: batch_size=%d is larger than the %d training clips; using %d",
            name,
            batch_size,
            len(mels),
            len(mels),
        )
    return min(batch_size, len(mels))


def run_steps(
    step_fn: Callable[[int], float], steps: int, max_minutes: float, desc: str
) -> list[dict[str, float]]:
    """Call ``step_fn(step) -> loss`` for ``steps`` steps (or until ``max_minutes``) with a progress bar."""
    history = []
    start = time.monotonic()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        loss = step_fn(step)
        history.append({"step": step + 1, "loss": loss, "seconds": round(time.monotonic() - start, 2)})
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        if max_minutes > 0 and time.monotonic() - start > 60 * max_minutes:
            log.info("%s: stopped after %d steps (max_minutes=%g)", desc, step + 1, max_minutes)
            break
    bar.close()
    return history


def train_embedder(
    cfg: EmbedConfig, mels: ClipMels, device: torch.device | str = "cpu"
) -> tuple[AudioEmbedder, list[dict[str, float]]]:
    """Train the contrastive embedder on training log-mels -> (embedder frozen in eval mode, loss history)."""
    batch = check_training_mels(mels, cfg.batch_size, "embed")
    torch.manual_seed(cfg.seed)
    embedder = build_embedder(cfg, mels.settings)
    embedder.encoder.set_statistics(mels.real[: min(len(mels), 2048)])
    embedder.to(device).train()
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(embedder.encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    length = embedder.chunk_frames
    use_recon = cfg.reconstructions and mels.recon is not None
    if cfg.reconstructions and mels.recon is None:
        log.warning(
            "embed.reconstructions=true but no codec reconstructions were given; training on real clips only"
        )

    def step_fn(step: int) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, min(20, max(1, cfg.steps // 10)))
        rows = torch.randperm(len(mels), generator=gen)[:batch]
        first, second = chunk_pair_starts(batch, mels.num_frames, length, gen)
        a = training_view(mels, rows, first, length, use_recon, cfg.gain_jitter, gen).to(device)
        b = training_view(mels, rows, second, length, use_recon, cfg.gain_jitter, gen).to(device)
        loss = info_nce(embedder.encoder(a), embedder.encoder(b), cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    history = run_steps(step_fn, cfg.steps, cfg.max_minutes, "embedder")
    embedder.eval().requires_grad_(False)
    return embedder, history


@torch.no_grad()
def chunk_retrieval_accuracy(
    embedder: AudioEmbedder,
    mels: ClipMels,
    batch_size: int = 64,
    rounds: int = 10,
    seed: int = 0,
    views: tuple[str, str] = ("real", "real"),
) -> float:
    """Held-out top-1 accuracy of finding a chunk's partner (the other chunk of its clip) among a batch.

    Each round draws ``batch_size`` clips and two non-overlapping chunks of each; chunk A of clip i must
    be nearest (cosine) to chunk B of clip i among the ``batch_size`` B chunks (chance: 1 / batch_size).
    ``views`` picks where the A and B chunks come from: ``"real"`` or ``"recon"``.
    """
    batch = min(batch_size, len(mels))
    if batch < 2:
        raise ValueError(f"chunk retrieval needs at least 2 clips, got {len(mels)}")
    sources = {"real": mels.real, "recon": mels.recon}
    if any(sources.get(v) is None for v in views):
        raise ValueError(f"views={views}: each must be 'real' or 'recon' (and recon needs reconstructions)")
    gen = torch.Generator().manual_seed(seed)
    length = embedder.chunk_frames
    embedder.eval()
    hits = []
    for _ in range(rounds):
        rows = torch.randperm(len(mels), generator=gen)[:batch]
        first, second = chunk_pair_starts(batch, mels.num_frames, length, gen)
        a = embedder.encoder(take_chunks(sources[views[0]], rows, first, length).to(embedder.device))
        b = embedder.encoder(take_chunks(sources[views[1]], rows, second, length).to(embedder.device))
        hits.append(((a @ b.T).argmax(1).cpu() == torch.arange(batch)).float().mean())
    return float(torch.stack(hits).mean())


def evaluate_embedder(embedder: AudioEmbedder, held_out: ClipMels) -> dict[str, float]:
    """Held-out chunk-retrieval top-1 accuracy at batch 64 and 256 (fewer when fewer clips are held out),
    on real clips and (if present) on reconstructions and across the two."""
    views = [("real", "real")] + (
        [("recon", "recon"), ("real", "recon")] if held_out.recon is not None else []
    )
    out = {}
    for batch in sorted({min(64, len(held_out)), min(256, len(held_out))}):
        for a, b in views:
            key = f"top1_b{batch}_{a}" if a == b else f"top1_b{batch}_{a}_vs_{b}"
            out[key] = round(chunk_retrieval_accuracy(embedder, held_out, batch, views=(a, b)), 4)
    return out


def fit_and_save_embedder(
    cfg: Config, train: LabelledMels, held_out: LabelledMels | None, out: str | Path
) -> dict[str, Any]:
    """Train the embedder (``embed`` section), evaluate it on the held-out clips, save it to ``out``."""
    start = time.monotonic()
    embedder, history = train_embedder(cfg.embed, train.mels, resolve_device(cfg.device))
    metrics: dict[str, Any] = {
        "train_seconds": round(time.monotonic() - start, 1),
        "steps": len(history),
        "final_loss": round(history[-1]["loss"], 4),
        "train_clips": len(train),
    }
    if held_out is not None and len(held_out) >= 2:
        metrics.update(evaluate_embedder(embedder, held_out.mels), held_out_clips=len(held_out))
    save_embedder(embedder, out, metrics)
    log.info("embedder saved to %s: %s", out, metrics)
    return metrics


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def save_embedder(
    embedder: AudioEmbedder, directory: str | Path, metrics: dict[str, Any] | None = None
) -> Path:
    """Write the embedder as ``model.safetensors`` + ``model.json`` into ``directory``."""
    meta = {
        "settings": embedder.settings,
        "chunk_frames": embedder.chunk_frames,
        "architecture": {
            "n_mels": embedder.encoder.n_mels,
            "channels": embedder.encoder.conv[0][0].out_channels,
            "dim": embedder.dim,
        },
        "config": embedder.config,
        "metrics": metrics or {},
    }
    return save_model_folder(directory, KIND, embedder.encoder.state_dict(), meta)


def load_embedder(directory: str | Path, device: torch.device | str = "cpu") -> AudioEmbedder:
    """Read an embedder folder; the model is frozen and in eval mode."""
    meta, tensors = load_model_folder(directory, KIND)
    arch = meta["architecture"]
    encoder = ConvEncoder(int(arch["n_mels"]), int(arch["channels"]), int(arch["dim"]))
    encoder.load_state_dict(tensors)
    embedder = AudioEmbedder(encoder, meta["settings"], int(meta["chunk_frames"]), meta.get("config"))
    return embedder.to(device).eval().requires_grad_(False)
