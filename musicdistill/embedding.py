"""The contrastive audio embedder: the diversity reward model (method.md section 3).

A small 1-D conv encoder reads log-mel frames (the same front end as the default codec, so the
generator's decoded log-mels can be embedded without Griffin-Lim, see :func:`embed_mel`) and outputs
L2-normalised embeddings ``[N, E]``. It is trained COLA-style: the positive pair is two
non-overlapping chunks of the same clip, the negatives are the other clips of the batch, and the
loss is the symmetric InfoNCE at a fixed temperature. With ``reconstructions`` each chunk is taken
from the real clip or from its codec reconstruction at random, so that the embedder sees decoded
audio (what generations are) as the same music as the clip it came from.

Inference embeds a whole clip as the normalised mean of the embeddings of overlapping windows of the
training chunk length. The embedder is frozen once trained.

This module also holds what the scorer (:mod:`musicdistill.scorer`) and the oracle
(:mod:`musicdistill.oracle`) share with it: the log-mel front end, :class:`ClipMels` (log-mels of
clips and of their codec reconstructions, computed once) and the ``model.json`` +
``model.safetensors`` folder format.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from musicdistill.atomic import atomic_write_text, atomic_write_with
from musicdistill.checkpoint import file_sha256
from musicdistill.config import CodecConfig, Config, EmbedConfig
from musicdistill.data import Entry, load_dataset
from musicdistill.features import MelSpec, resample
from musicdistill.runtime import resolve_device

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
FORMAT = "musicdistill-model"
FORMAT_VERSION = 1
KIND = "embedder"
#: the log-mel settings every model of this module keeps (the arguments of :class:`MelSpec`)
MEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
#: clips per batch when computing log-mels and embeddings
BATCH = 64


# --------------------------------------------------------------------------------------------
# Log-mel front end
# --------------------------------------------------------------------------------------------


def front_end_settings(codec: CodecConfig, sample_rate: int) -> dict[str, Any]:
    """The log-mel settings of the default codec (``codec`` section) at ``sample_rate``, as a dict."""
    return {
        "sample_rate": int(sample_rate),
        "n_fft": codec.n_fft,
        "hop_length": codec.hop_length,
        "n_mels": codec.n_mels,
        "fmin": float(codec.fmin),
        "fmax": float(min(codec.fmax, sample_rate / 2)),
    }


def mel_spec(settings: dict[str, Any]) -> MelSpec:
    """The :class:`MelSpec` a settings dict describes."""
    missing = [k for k in MEL_KEYS if k not in settings]
    if missing:
        raise ValueError(f"log-mel settings lack {missing}; expected the keys {list(MEL_KEYS)}")
    return MelSpec(**{k: settings[k] for k in MEL_KEYS})


def codec_shares_front_end(codec: Any, settings: dict[str, Any]) -> bool:
    """True when ``codec`` quantises exactly this log-mel (so its ``decode_mel`` output can be embedded)."""
    own = getattr(codec, "settings", None)
    if own is None or not hasattr(codec, "encode_mel") or not hasattr(codec, "decode_mel"):
        return False
    return all(math.isclose(float(getattr(own, k)), float(settings[k])) for k in MEL_KEYS)


def as_waveforms(wav: torch.Tensor | np.ndarray, name: str = "wav") -> torch.Tensor:
    """Mono clips as float32 ``[N, S]`` from a tensor/array ``[N, S]`` or ``[N, 1, S]``."""
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.array(wav, copy=not wav.flags.writeable or not wav.flags.c_contiguous))
    if not isinstance(wav, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy array [N, samples], got {type(wav).__name__}"
        )
    if wav.dim() == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.dim() != 2 or wav.shape[0] < 1 or wav.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape [N, samples] or [N, 1, samples] (mono), got {tuple(wav.shape)}"
        )
    if not wav.is_floating_point():
        raise ValueError(f"{name} must be floating-point audio in [-1, 1], got dtype {wav.dtype}")
    return wav.float()


def check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


@torch.no_grad()
def waveform_mels(mel: MelSpec, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Clips ``[N, S]`` at ``sample_rate`` -> log-mels ``[N, D, T]`` (resampled to the front end's rate)."""
    wav = resample(as_waveforms(wav), check_sample_rate(sample_rate), mel.sample_rate)
    return mel(wav.to(mel.filters.device))


@dataclass
class ClipMels:
    """Log-mels of clips and (optionally) of their codec reconstructions, stored as float16.

    ``real`` and ``recon`` are ``[N, D, T]``; ``settings`` are the front end's :data:`MEL_KEYS`.
    """

    real: torch.Tensor
    recon: torch.Tensor | None
    settings: dict[str, Any]

    def __len__(self) -> int:
        return self.real.shape[0]

    @property
    def num_frames(self) -> int:
        return self.real.shape[-1]

    def select(self, rows: torch.Tensor | np.ndarray | list[int]) -> ClipMels:
        """The clips ``rows`` (indices or a boolean mask)."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            rows = rows.nonzero()[:, 0]
        return ClipMels(self.real[rows], None if self.recon is None else self.recon[rows], self.settings)


def _reconstruct(
    codec: Any,
    mel: MelSpec,
    wav: torch.Tensor,
    log_mel: torch.Tensor,
    sample_rate: int,
    shares_front_end: bool,
) -> torch.Tensor:
    """The log-mel of the codec's reconstruction of a batch: ``[B, D, T]`` like ``log_mel``."""
    if shares_front_end:
        return codec.decode_mel(codec.encode_mel(log_mel))
    decoded = codec.decode(codec.encode(wav[:, None], sample_rate))[:, 0]  # [B, S'] at codec rate
    rebuilt = waveform_mels(mel, decoded.cpu(), codec.sample_rate)
    frames = log_mel.shape[-1]
    if rebuilt.shape[-1] < frames:
        rebuilt = F.pad(rebuilt, (0, frames - rebuilt.shape[-1]), value=float(log_mel.min()))
    return rebuilt[..., :frames]


@torch.no_grad()
def clip_mels(
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    settings: dict[str, Any],
    codec: Any = None,
    batch_size: int = BATCH,
) -> ClipMels:
    """Log-mels of clips ``[N, S]`` and, when a codec is given, of their codec reconstructions.

    A default (mel) codec with the same front end is applied in the log-mel domain
    (``decode_mel(encode_mel(.))``, cheap); any other codec decodes to audio first.
    """
    audio = as_waveforms(audio, "audio")
    mel = mel_spec(settings)
    shares = codec is not None and codec_shares_front_end(codec, settings)
    real, recon = [], []
    starts = range(0, audio.shape[0], batch_size)
    for start in tqdm(starts, desc="log-mels", unit="batch", disable=len(starts) < 8):
        wav = audio[start : start + batch_size]
        log_mel = waveform_mels(mel, wav, sample_rate)
        real.append(log_mel.half())
        if codec is not None:
            recon.append(_reconstruct(codec, mel, wav, log_mel, sample_rate, shares).half())
    return ClipMels(torch.cat(real), torch.cat(recon) if recon else None, dict(settings))


@dataclass
class LabelledMels:
    """Clips of some splits of a manifest: their entries (captions, attributes) and log-mels."""

    entries: list[Entry]
    mels: ClipMels

    def __len__(self) -> int:
        return len(self.entries)


#: the splits models are evaluated on
HELD_OUT = ("valid", "test")


def load_labelled_mels(
    cfg: Config, manifest: str | Path, codec: Any = None
) -> tuple[LabelledMels, LabelledMels | None]:
    """Load a manifest's usable clips (``data`` section: rate, duration, workers) and compute their log-mels
    (``codec`` section's front end) and, with ``codec``, their reconstructions.

    Returns the train split and the held-out clips (valid + test), or None when there are none.
    """
    rate = cfg.data.sample_rate
    entries, audio = load_dataset(
        manifest,
        rate,
        cfg.data.duration,
        strict=cfg.data.strict,
        workers=cfg.data.workers,
        min_duration=cfg.data.min_duration,
    )
    mels = clip_mels(audio, rate, front_end_settings(cfg.codec, rate), codec)
    train = np.array([e.split == "train" for e in entries])
    if not train.any():
        raise ValueError(
            f"{manifest}: no clip is in the 'train' split; give the manifest a 'split' column "
            "or leave splits to the caption hash"
        )
    held = np.array([e.split in HELD_OUT for e in entries])
    return _subset(entries, mels, train), (_subset(entries, mels, held) if held.any() else None)


def _subset(entries: list[Entry], mels: ClipMels, mask: np.ndarray) -> LabelledMels:
    return LabelledMels([e for e, keep in zip(entries, mask) if keep], mels.select(torch.from_numpy(mask)))


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
    output of the default codec's ``decode_mel`` directly when :func:`codec_shares_front_end` holds.
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
# Model folders (shared by embedder, scorer and oracle)
# --------------------------------------------------------------------------------------------


def save_model_folder(
    directory: str | Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (kind, meta, the weights' sha256) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = atomic_write_with(directory / MODEL_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    record = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        **meta,
        "weights": {"file": MODEL_WEIGHTS, "sha256": file_sha256(path)},
    }
    atomic_write_text(directory / MODEL_JSON, json.dumps(record, indent=2) + "\n")
    return directory


def read_model_json(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and check ``model.json``; raises FileNotFoundError / ValueError naming the file and the fix."""
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a model folder written by musicdistill "
            "(train one with 'musicdistill embed train|scorer|oracle')"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); retrain the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f'{path} is not a musicdistill model file (expected "format": "{FORMAT}")')
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('version')!r}; this musicdistill reads {FORMAT_VERSION}"
        )
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a '{meta.get('kind')}' model, not a '{kind}'")
    return meta


def load_model_folder(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``model.json`` and the verified tensors of a folder written by :func:`save_model_folder`."""
    directory = Path(directory)
    meta = read_model_json(directory, kind)
    path = directory / MODEL_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; the folder was copied incompletely, retrain or copy it again"
        )
    if file_sha256(path) != meta["weights"]["sha256"]:
        raise ValueError(
            f"{path}: its sha256 does not match {MODEL_JSON}; the folder is incomplete or was modified"
        )
    return meta, load_file(str(path))


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
