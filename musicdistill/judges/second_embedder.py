"""The second learned audio embedder: an evaluation-only view of diversity, independent of the reward.

It differs from the reward embedder (:mod:`musicdistill.judges.embedder`) in all three ways that
could make two embedders agree for the wrong reasons:

- **architecture**: a 2-D convolutional network over the log-mel as an image (frequency x time, 3x3
  kernels, so patterns are shared across pitch), where the reward embedder is a 1-D convolution over
  time with the mel bands as channels. The input's bands are averaged in pairs, three conv blocks
  (BatchNorm, ReLU, 2x2 / 2x2 / 2x1 max pooling) follow, each remaining time step's features pass a
  linear layer, and mean and max pooling over time feed a linear layer to the representation [E];
- **objective**: VICReg (Bardes et al. 2022), non-contrastive: two augmented views of the SAME
  segment of a clip (start shifted by at most ``max_shift_seconds``, each real or codec-reconstructed,
  with a random gain, a time mask and a frequency mask) must map to the same point of an expander
  (invariance, mean squared error), while every expander dimension keeps a standard deviation of at
  least 1 over the batch (variance) and the dimensions stay decorrelated (covariance). No negatives
  and no other chunk of the clip: the reward embedder's COLA objective pairs two different chunks of
  a clip against the other clips of the batch. Being asked to match the same notes under masking,
  this embedder keeps what a segment plays (melody, voicing, rhythm), not only what a clip is;
- **data**: the other half of the training split (:mod:`musicdistill.judges.halves`), so neither model
  ever saw the other's clips. Like the reward embedder, it never reads captions or attribute labels.

Inference embeds a clip as the mean representation of its overlapping training-length windows,
standardised per dimension with the statistics of the training clips' representations and
L2-normalised: ``1 - cos`` of two such embeddings is one minus the correlation of their standardised
representations. ``diversity_second`` in evaluation is the mean pairwise ``1 - cos`` within a prompt.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdistill.config import Config, SecondEmbedConfig
from musicdistill.judges.clip_windows import band_statistics, embed_waveforms, windowed_mean
from musicdistill.judges.embedder import (
    check_training_mels,
    fit_on_half,
    judge_optimizer,
    record_step,
    take_chunks,
    uses_reconstructions,
)
from musicdistill.judges.log_mel import (
    BATCH,
    MEL_KEYS,
    ClipMels,
    LabelledMels,
    mel_spec,
)
from musicdistill.loop_kit import deadline, optimizer_step, step_generator
from musicdistill.progress import Progress
from musicdistill.runtime import resolve_device
from musicdistill.storage.model_files import load_model_folder, save_model_folder

log = logging.getLogger(__name__)

KIND = "second_embedder"
#: the half of the training split this embedder trains on
HALF = "second"
#: training clips whose representations set the output standardisation
STAT_CLIPS = 2048


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


def _conv2d_block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(pool)
    )


class SpectroConvEncoder(nn.Module):
    """log-mel ``[N, D, T]`` -> representations ``[N, E]`` (not normalised); needs D >= 16 and T >= 4.

    Each band is standardised with the training statistics (buffers ``mean``, ``std`` [D]); bands are
    averaged in pairs; three 2-D conv blocks of ``channels``, ``2 channels``, ``2 channels`` (3x3,
    BatchNorm, ReLU, max pooling 2x2, 2x2, 2x1) give ``[N, C, F', T / 4]``; each time step's ``C F'``
    features go through ``Linear -> ReLU`` to ``hidden``; mean and max over time; ``Linear`` to E.
    """

    def __init__(self, n_mels: int, channels: int, hidden: int, dim: int) -> None:
        super().__init__()
        if n_mels < 16:
            raise ValueError(f"the second embedder needs at least 16 mel bands, got n_mels={n_mels}")
        wide = 2 * channels
        self.conv = nn.Sequential(
            _conv2d_block(1, channels, (2, 2)),
            _conv2d_block(channels, wide, (2, 2)),
            _conv2d_block(wide, wide, (2, 1)),
        )
        bands = n_mels // 2 // 2 // 2 // 2
        self.frame = nn.Sequential(nn.Linear(wide * bands, hidden), nn.ReLU())
        self.head = nn.Linear(2 * hidden, dim)
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @property
    def n_mels(self) -> int:
        return self.mean.shape[0]

    @property
    def channels(self) -> int:
        return self.conv[0][0].out_channels

    @property
    def hidden(self) -> int:
        return self.frame[0].out_features

    @property
    def dim(self) -> int:
        return self.head.out_features

    def set_statistics(self, log_mel: torch.Tensor) -> None:
        """Set the per-band standardisation from training log-mels ``[N, D, T]``."""
        mean, std = band_statistics(log_mel)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.shape[-1] < 4:
            raise ValueError(f"the second embedder needs at least 4 frames, got {log_mel.shape[-1]}")
        x = (log_mel.float() - self.mean[:, None]) / self.std[:, None]
        x = F.avg_pool2d(x[:, None], (2, 1))  # [N, 1, D/2, T]
        h = self.conv(x)  # [N, C, F', T/4]
        h = self.frame(h.permute(0, 3, 1, 2).flatten(2))  # [N, T/4, hidden]
        return self.head(torch.cat([h.mean(1), h.amax(1)], dim=1))


class SecondEmbedder(nn.Module):
    """The frozen second embedder: encoder, front end, window length and output standardisation.

    ``out_mean`` and ``out_std`` [E] standardise a clip's representation before L2 normalisation.
    """

    def __init__(
        self,
        encoder: SpectroConvEncoder,
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
        self.register_buffer("out_mean", torch.zeros(encoder.dim))
        self.register_buffer("out_std", torch.ones(encoder.dim))

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def device(self) -> torch.device:
        return self.encoder.mean.device


def frames_of(settings: dict[str, Any], seconds: float) -> int:
    """``seconds`` as a whole number of the front end's frames."""
    return round(seconds * settings["sample_rate"] / settings["hop_length"])


def build_second_embedder(cfg: SecondEmbedConfig, settings: dict[str, Any]) -> SecondEmbedder:
    """An untrained second embedder for a config and front end."""
    encoder = SpectroConvEncoder(settings["n_mels"], cfg.channels, cfg.hidden, cfg.dim)
    return SecondEmbedder(encoder, settings, max(4, frames_of(settings, cfg.chunk_seconds)), asdict(cfg))


def expander(dim: int, width: int) -> nn.Sequential:
    """VICReg's expander (training only): ``[N, E] -> [N, width]``."""
    return nn.Sequential(nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width))


@torch.no_grad()
def representations(embedder: SecondEmbedder, log_mel: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Log-mels ``[N, D, T]`` -> raw clip representations ``[N, E]`` (mean over windows), on the CPU."""
    return windowed_mean(embedder.encoder, log_mel, embedder.chunk_frames, embedder.device, batch_size).cpu()


@torch.no_grad()
def embed_mel_second(embedder: SecondEmbedder, log_mel: torch.Tensor) -> torch.Tensor:
    """Log-mels ``[N, D, T]`` in the embedder's front end -> embeddings ``[N, E]``: representations
    standardised with the training statistics and L2-normalised (on the CPU)."""
    h = representations(embedder, log_mel)
    return F.normalize((h - embedder.out_mean.cpu()) / embedder.out_std.cpu(), dim=-1)


@torch.no_grad()
def embed_audio_second(
    embedder: SecondEmbedder, wav: torch.Tensor | np.ndarray, sample_rate: int, batch_size: int = BATCH
) -> torch.Tensor:
    """Clips ``[N, S]`` (or ``[N, 1, S]``) at ``sample_rate`` -> embeddings ``[N, E]`` (L2-normalised)."""
    return embed_waveforms(
        lambda mel: embed_mel_second(embedder, mel), embedder.mel, wav, sample_rate, batch_size
    )


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def vicreg_loss(
    a: torch.Tensor, b: torch.Tensor, invariance: float, variance: float, covariance: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """VICReg of paired expander outputs ``a``, ``b`` ``[B, X]`` -> (weighted loss, its three terms).

    invariance: mean squared difference; variance: mean hinge ``relu(1 - std)`` of each dimension over
    the batch, averaged over both branches; covariance: the squared off-diagonal covariances summed and
    divided by X, summed over both branches.
    """
    if a.shape != b.shape or a.dim() != 2 or a.shape[0] < 2:
        raise ValueError(
            f"VICReg needs two [B >= 2, X] batches of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    inv = F.mse_loss(a, b)
    var = 0.5 * sum(F.relu(1.0 - torch.sqrt(z.var(0) + 1e-4)).mean() for z in (a, b))
    cov = a.new_zeros(())
    for z in (a, b):
        centred = z - z.mean(0)
        c = centred.T @ centred / (z.shape[0] - 1)
        cov = cov + (c.square().sum() - c.diagonal().square().sum()) / z.shape[1]
    loss = invariance * inv + variance * var + covariance * cov
    parts = {
        "invariance": float(inv.detach()),
        "variance": float(var.detach()),
        "covariance": float(cov.detach()),
    }
    return loss, parts


def view_pair_starts(
    num_clips: int, num_frames: int, chunk: int, max_shift: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Starts ``[B]``, ``[B]`` of two views of ``chunk`` frames of the same segment of each clip: the
    second start is the first shifted by at most ``max_shift`` frames, both inside the clip."""
    if chunk > num_frames:
        raise ValueError(
            f"a view of {chunk} frames does not fit in a clip of {num_frames} frames; "
            "lower second_embed.chunk_seconds (at most the clip duration)"
        )
    first = torch.randint(0, num_frames - chunk + 1, (num_clips,), generator=gen)
    shift = torch.randint(-max_shift, max_shift + 1, (num_clips,), generator=gen)
    return first, (first + shift).clamp(0, num_frames - chunk)


def mask_spans(
    x: torch.Tensor, fill: torch.Tensor, fraction: float, axis: int, gen: torch.Generator
) -> torch.Tensor:
    """One random span per row of up to ``fraction`` of ``axis`` (1: bands, 2: frames) of ``x [B, D, L]``
    set to ``fill [D]`` (the band means, so a masked bin is neutral after standardisation)."""
    size = x.shape[axis]
    width = (torch.rand(x.shape[0], generator=gen) * fraction * size).long()  # [B]
    start = (torch.rand(x.shape[0], generator=gen) * (size - width + 1)).long()
    position = torch.arange(size)
    hit = (position >= start[:, None]) & (position < (start + width)[:, None])  # [B, size]
    hit = hit[:, :, None] if axis == 1 else hit[:, None, :]
    return torch.where(hit, fill[None, :, None].to(x.dtype), x)


def augmented_view(
    mels: ClipMels,
    rows: torch.Tensor,
    starts: torch.Tensor,
    length: int,
    cfg: SecondEmbedConfig,
    use_recon: bool,
    band_mean: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """One view ``[B, D, length]``: real or (with probability 1/2 when ``use_recon``) reconstructed chunks,
    a random log-gain, one time mask and one frequency mask."""
    x = take_chunks(mels.real, rows, starts, length)
    if use_recon:
        pick = (torch.rand(len(rows), generator=gen) < 0.5)[:, None, None]
        x = torch.where(pick, take_chunks(mels.recon, rows, starts, length), x)
    if cfg.gain_jitter > 0:
        x = x + cfg.gain_jitter * torch.randn(len(rows), 1, 1, generator=gen)
    if cfg.time_mask > 0:
        x = mask_spans(x, band_mean, cfg.time_mask, 2, gen)
    if cfg.freq_mask > 0:
        x = mask_spans(x, band_mean, cfg.freq_mask, 1, gen)
    return x


def train_second_embedder(
    cfg: SecondEmbedConfig, mels: ClipMels, device: torch.device | str = "cpu"
) -> tuple[SecondEmbedder, list[dict[str, float]]]:
    """Train the second embedder with VICReg on training log-mels -> (frozen embedder, loss history)."""
    batch = check_training_mels(mels, cfg.batch_size, "second_embed")
    torch.manual_seed(cfg.seed)
    embedder = build_second_embedder(cfg, mels.settings)
    length = min(embedder.chunk_frames, mels.num_frames)
    embedder.chunk_frames = length
    embedder.encoder.set_statistics(mels.real[: min(len(mels), STAT_CLIPS)])
    embedder.to(device)
    trained = nn.ModuleList([embedder.encoder, expander(cfg.dim, cfg.expander)]).to(device).train()
    optimizer, scheduler = judge_optimizer(trained, cfg.lr, cfg.weight_decay, cfg.steps)
    shift = frames_of(mels.settings, cfg.max_shift_seconds)
    band_mean = embedder.encoder.mean.cpu()
    use_recon = uses_reconstructions(cfg.reconstructions, mels, "second_embed")
    history: list[dict[str, float]] = []
    progress, stop_at = Progress("second embedder", cfg.steps), deadline(cfg.max_minutes)
    for step in range(cfg.steps):
        gen = step_generator(cfg.seed, step)
        rows = torch.randperm(len(mels), generator=gen)[:batch]
        first, second = view_pair_starts(batch, mels.num_frames, length, shift, gen)
        a = augmented_view(mels, rows, first, length, cfg, use_recon, band_mean, gen).to(device)
        b = augmented_view(mels, rows, second, length, cfg, use_recon, band_mean, gen).to(device)
        encoder, head = trained
        loss, _ = vicreg_loss(
            head(encoder(a)), head(encoder(b)), cfg.invariance, cfg.variance, cfg.covariance
        )
        optimizer_step(loss, trained, optimizer, scheduler, max_norm=0.0)
        if record_step(history, progress, loss, stop_at):
            break
    progress.close()
    embedder.eval().requires_grad_(False)
    set_output_statistics(embedder, mels.real[: min(len(mels), STAT_CLIPS)])
    return embedder, history


def set_output_statistics(embedder: SecondEmbedder, log_mel: torch.Tensor) -> None:
    """Set ``out_mean`` / ``out_std`` [E] from the representations of training clips ``[N, D, T]``."""
    h = representations(embedder, log_mel.float())
    embedder.out_mean.copy_(h.mean(0))
    embedder.out_std.copy_(h.std(0).clamp_min(1e-4) if h.shape[0] > 1 else torch.ones_like(h[0]))


# --------------------------------------------------------------------------------------------
# Held-out checks
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def view_retrieval_accuracy(
    embedder: SecondEmbedder,
    mels: ClipMels,
    batch_size: int = 64,
    rounds: int = 10,
    seed: int = 0,
    views: tuple[str, str] = ("real", "recon"),
) -> float:
    """Held-out top-1 accuracy of finding a view's partner (the same segment of the same clip, shifted by
    up to ``max_shift_seconds``, no masks) among ``batch_size`` clips, by cosine of standardised
    representations (chance: 1 / batch_size). ``views``: where each side comes from (``real``/``recon``)."""
    batch = min(batch_size, len(mels))
    sources = {"real": mels.real, "recon": mels.recon}
    if batch < 2 or any(sources.get(v) is None for v in views):
        raise ValueError(
            f"view retrieval needs >= 2 clips and views in real/recon (recon needs reconstructions), got {views}"
        )
    gen = torch.Generator().manual_seed(seed)
    length = min(embedder.chunk_frames, mels.num_frames)
    shift = frames_of(embedder.settings, float(embedder.config.get("max_shift_seconds", 0.0)))
    hits = []
    for _ in range(rounds):
        rows = torch.randperm(len(mels), generator=gen)[:batch]
        first, second = view_pair_starts(batch, mels.num_frames, length, shift, gen)
        a = embed_mel_second(embedder, take_chunks(sources[views[0]], rows, first, length))
        b = embed_mel_second(embedder, take_chunks(sources[views[1]], rows, second, length))
        hits.append(float(((a @ b.T).argmax(1) == torch.arange(batch)).float().mean()))
    return float(np.mean(hits))


def evaluate_second_embedder(embedder: SecondEmbedder, held_out: ClipMels) -> dict[str, float]:
    """Held-out view retrieval at batch 64 and 256 (fewer when fewer clips are held out), real against
    real and (with reconstructions) real against reconstructed; and the mean per-dimension standard
    deviation of the standardised held-out representations (near 0 would mean a collapsed embedder)."""
    views = [("real", "real")] + ([("real", "recon")] if held_out.recon is not None else [])
    out: dict[str, float] = {}
    for batch in sorted({min(64, len(held_out)), min(256, len(held_out))}):
        for a, b in views:
            key = f"view_top1_b{batch}_{a}" if a == b else f"view_top1_b{batch}_{a}_vs_{b}"
            out[key] = round(view_retrieval_accuracy(embedder, held_out, batch, views=(a, b)), 4)
    h = (representations(embedder, held_out.real.float()) - embedder.out_mean.cpu()) / embedder.out_std.cpu()
    out["held_out_dim_std"] = round(float(h.std(0).mean()), 4)
    return out


def fit_and_save_second_embedder(
    cfg: Config, train: LabelledMels, held_out: LabelledMels | None, out: str | Path
) -> dict[str, Any]:
    """Train the second embedder (``second_embed`` section) on the ``"second"`` half of the training clips
    (:mod:`musicdistill.judges.halves`), evaluate it on the held-out clips, save it to ``out``."""
    device = resolve_device(cfg.device)
    return fit_on_half(
        train,
        held_out,
        HALF,
        "second embedder",
        lambda mels: train_second_embedder(cfg.second_embed, mels, device),
        evaluate_second_embedder,
        save_second_embedder,
        out,
    )


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def save_second_embedder(
    embedder: SecondEmbedder, directory: str | Path, metrics: dict[str, Any] | None = None
) -> Path:
    """Write the embedder (encoder and output standardisation) as ``model.safetensors`` + ``model.json``."""
    enc = embedder.encoder
    meta = {
        "settings": embedder.settings,
        "chunk_frames": embedder.chunk_frames,
        "architecture": {
            "n_mels": enc.n_mels,
            "channels": enc.channels,
            "hidden": enc.hidden,
            "dim": enc.dim,
        },
        "config": embedder.config,
        "metrics": metrics or {},
    }
    tensors = {
        **{f"encoder.{k}": v for k, v in enc.state_dict().items()},
        "out_mean": embedder.out_mean,
        "out_std": embedder.out_std,
    }
    return save_model_folder(directory, KIND, tensors, meta)


def load_second_embedder(directory: str | Path, device: torch.device | str = "cpu") -> SecondEmbedder:
    """Read a second-embedder folder; the model is frozen and in eval mode."""
    meta, tensors = load_model_folder(directory, KIND)
    arch = meta["architecture"]
    encoder = SpectroConvEncoder(
        int(arch["n_mels"]), int(arch["channels"]), int(arch["hidden"]), int(arch["dim"])
    )
    encoder.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
    )
    embedder = SecondEmbedder(encoder, meta["settings"], int(meta["chunk_frames"]), meta.get("config"))
    embedder.out_mean.copy_(tensors["out_mean"])
    embedder.out_std.copy_(tensors["out_std"])
    return embedder.to(device).eval().requires_grad_(False)
