"""The contrastive audio embedder: the diversity reward model (docs/method.md section 4).

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
:class:`ConvEncoder` and the training helpers (:func:`judge_optimizer`, :func:`training_view`,
:func:`record_step`); both train with the kit of :mod:`musicdistill.loop_kit`.
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

from musicdistill.config import Config, EmbedConfig
from musicdistill.judges.clip_windows import band_statistics, embed_waveforms, windowed_mean
from musicdistill.judges.halves import select_half
from musicdistill.judges.log_mel import (
    BATCH,
    MEL_KEYS,
    ClipMels,
    LabelledMels,
    mel_spec,
)
from musicdistill.loop_kit import (
    JUDGE_BETAS,
    deadline,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    past,
    step_generator,
)
from musicdistill.progress import Progress
from musicdistill.runtime import resolve_device
from musicdistill.storage.model_files import load_model_folder, save_model_folder

log = logging.getLogger(__name__)

KIND = "embedder"
#: the half of the training split the reward embedder trains on (:mod:`musicdistill.judges.halves`)
REWARD_HALF = "reward"


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
        mean, std = band_statistics(log_mel)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def architecture(self) -> dict[str, int]:
        """The constructor's arguments, as saved in ``model.json``."""
        return {
            "n_mels": self.n_mels,
            "channels": self.conv[0][0].out_channels,
            "dim": self.head[-1].out_features,
        }

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


@torch.no_grad()
def embed_mel(embedder: AudioEmbedder, log_mel: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Log-mels ``[N, D, T]`` in the embedder's front end -> embeddings ``[N, E]`` (L2-normalised, on the
    embedder's device).

    A clip is embedded as the normalised mean of its overlapping chunk-length windows. Pass the
    output of the default codec's ``decode_mel`` directly when :func:`~musicdistill.judges.log_mel.codec_shares_front_end` holds.
    """
    return F.normalize(
        windowed_mean(embedder.encoder, log_mel, embedder.chunk_frames, embedder.device, batch_size), dim=-1
    )


@torch.no_grad()
def embed_audio(
    embedder: AudioEmbedder, wav: torch.Tensor | np.ndarray, sample_rate: int, batch_size: int = BATCH
) -> torch.Tensor:
    """Clips ``[N, S]`` (or ``[N, 1, S]``) at ``sample_rate`` -> embeddings ``[N, E]`` (L2-normalised)."""
    return embed_waveforms(lambda mel: embed_mel(embedder, mel), embedder.mel, wav, sample_rate, batch_size)


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


def random_eq(x: torch.Tensor, strength: float, gen: torch.Generator, harmonics: int = 3) -> torch.Tensor:
    """Log-mels ``[B, D, T]`` each tilted by its own smooth random curve over the D bands (a random EQ).

    The curve is a sum of ``harmonics`` cosines over the band axis with random phases and amplitudes
    of standard deviation ``strength / k`` for the k-th, so it changes the spectral envelope (timbre)
    and leaves the fine structure (which bands carry the notes, when they start) in place.
    """
    if strength <= 0:
        return x
    b, d, _ = x.shape
    bands = torch.linspace(0.0, math.pi, d)  # [D]
    k = torch.arange(1, harmonics + 1, dtype=torch.float32)  # [H]
    amplitude = strength * torch.randn(b, harmonics, generator=gen) / k  # [B, H]
    phase = 2 * math.pi * torch.rand(b, harmonics, generator=gen)  # [B, H]
    curve = (amplitude[:, :, None] * torch.cos(k[None, :, None] * bands + phase[:, :, None])).sum(1)  # [B, D]
    return x + curve[:, :, None].to(x.dtype)


def random_band_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Log-mels ``[B, D, T]`` each moved along the band axis by its own whole number of bands in
    ``[-max_shift, max_shift]`` (a small transposition: one band is about 0.5-1.5 semitones over
    30-8000 Hz at 128 bands); the bands moved in from the edge copy the edge band.

    Views of one clip then differ in pitch by up to a few semitones, so the embedder learns to care
    less about the exact pitches (the key) and keeps what is coarser (register, rhythm, timbre).
    """
    if max_shift <= 0:
        return x
    d = x.shape[1]
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=gen)  # [B]
    source = (torch.arange(d)[None, :] - shifts[:, None]).clamp(0, d - 1)  # [B, D]: band each output reads
    return torch.gather(x, 1, source[:, :, None].expand(-1, -1, x.shape[2]).to(x.device))


def judge_optimizer(
    model: nn.Module, lr: float, weight_decay: float, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """The judges' AdamW and schedule: warm-up over a tenth of the steps (at most 20), cosine to 10 %."""
    optimizer = make_optimizer(model, lr, weight_decay, JUDGE_BETAS)
    return optimizer, make_scheduler(optimizer, steps, min(20, max(1, steps // 10)), min_ratio=0.1)


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


def step_batch(seed: int, step: int, num_clips: int, batch: int) -> tuple[torch.Generator, torch.Tensor]:
    """A training step's generator (:func:`~musicdistill.loop_kit.step_generator`) and the ``[batch]``
    distinct clip rows it draws first."""
    gen = step_generator(seed, step)
    return gen, torch.randperm(num_clips, generator=gen)[:batch]


def uses_reconstructions(wanted: bool, mels: ClipMels, section: str) -> bool:
    """Whether training mixes in codec reconstructions: ``wanted`` and present (a warning when missing)."""
    if wanted and mels.recon is None:
        log.warning(
            "%s.reconstructions=true but no codec reconstructions were given; training on real clips only",
            section,
        )
    return wanted and mels.recon is not None


def record_step(
    history: list[dict[str, float]], progress: Progress, loss: torch.Tensor, stop_at: float
) -> bool:
    """Append a step's history row (step, loss, seconds) and report it; True once ``stop_at`` has passed."""
    done = len(history) + 1
    history.append(
        {"step": done, "loss": float(loss.detach()), "seconds": round(time.monotonic() - progress.started, 2)}
    )
    progress.update(done, loss=history[-1]["loss"])
    if past(stop_at):
        log.info("%s: stopped after %d steps (max_minutes)", progress.desc, done)
        return True
    return False


def train_embedder(
    cfg: EmbedConfig, mels: ClipMels, device: torch.device | str = "cpu"
) -> tuple[AudioEmbedder, list[dict[str, float]]]:
    """Train the contrastive embedder on training log-mels -> (embedder frozen in eval mode, loss history)."""
    batch = check_training_mels(mels, cfg.batch_size, "embed")
    torch.manual_seed(cfg.seed)
    embedder = build_embedder(cfg, mels.settings)
    embedder.encoder.set_statistics(mels.real[: min(len(mels), 2048)])
    embedder.to(device).train()
    optimizer, scheduler = judge_optimizer(embedder.encoder, cfg.lr, cfg.weight_decay, cfg.steps)
    length = embedder.chunk_frames
    use_recon = uses_reconstructions(cfg.reconstructions, mels, "embed")
    history: list[dict[str, float]] = []
    progress, stop_at = Progress("embedder", cfg.steps), deadline(cfg.max_minutes)
    for step in range(cfg.steps):
        gen, rows = step_batch(cfg.seed, step, len(mels), batch)
        first, second = chunk_pair_starts(batch, mels.num_frames, length, gen)
        a = training_view(mels, rows, first, length, use_recon, cfg.gain_jitter, gen)
        b = training_view(mels, rows, second, length, use_recon, cfg.gain_jitter, gen)
        a = random_band_shift(random_eq(a, cfg.eq_jitter, gen), cfg.pitch_jitter, gen).to(device)
        b = random_band_shift(random_eq(b, cfg.eq_jitter, gen), cfg.pitch_jitter, gen).to(device)
        loss = info_nce(embedder.encoder(a), embedder.encoder(b), cfg.temperature)
        optimizer_step(loss, embedder.encoder, optimizer, scheduler, max_norm=0.0)
        if record_step(history, progress, loss, stop_at):
            break
    progress.close()
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


def fit_on_half(
    train: LabelledMels,
    held_out: LabelledMels | None,
    half: str,
    name: str,
    fit: Callable[[ClipMels], tuple[Any, list[dict[str, float]]]],
    evaluate: Callable[[Any, ClipMels], dict[str, Any]],
    save: Callable[[Any, Path, dict[str, Any]], Path],
    out: str | Path,
) -> dict[str, Any]:
    """Train a self-supervised embedder on one half of the training clips (:mod:`musicdistill.judges.halves`),
    evaluate it on the held-out clips, save it to ``out`` with its metrics; returns the metrics.

    ``fit(mels) -> (model, history)``, ``evaluate(model, held-out mels) -> metrics``,
    ``save(model, out, metrics)``: the reward embedder and the second embedder share this recipe.
    """
    train = select_half(train, half, name)
    start = time.monotonic()
    model, history = fit(train.mels)
    metrics: dict[str, Any] = {
        "train_seconds": round(time.monotonic() - start, 1),
        "steps": len(history),
        "final_loss": round(history[-1]["loss"], 4),
        "train_clips": len(train),
        "train_half": half,
    }
    if held_out is not None and len(held_out) >= 2:
        metrics.update(evaluate(model, held_out.mels), held_out_clips=len(held_out))
    save(model, Path(out), metrics)
    log.info("%s saved to %s: %s", name, out, metrics)
    return metrics


def fit_and_save_embedder(
    cfg: Config, train: LabelledMels, held_out: LabelledMels | None, out: str | Path
) -> dict[str, Any]:
    """Train the embedder (``embed`` section) on the ``"reward"`` half of the training clips (the other
    half is the second embedder's, :mod:`musicdistill.judges.halves`), evaluate it on the held-out clips,
    save it to ``out``."""
    device = resolve_device(cfg.device)
    return fit_on_half(
        train,
        held_out,
        REWARD_HALF,
        "embedder",
        lambda mels: train_embedder(cfg.embed, mels, device),
        evaluate_embedder,
        save_embedder,
        out,
    )


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
        "architecture": embedder.encoder.architecture(),
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
