"""Log-mels of clips: the front end that the embedder, the scorer and the oracle share.

The front end is the default codec's log-mel (``codec`` section, :func:`front_end_settings`), so that
the generator's decoded log-mels can be judged without Griffin-Lim when the codec quantises exactly
this log-mel (:func:`codec_shares_front_end`). :class:`ClipMels` holds the log-mels of clips and of
their codec reconstructions, computed once (:func:`clip_mels`); :func:`load_labelled_mels` reads a
manifest's training and held-out clips with their entries (:class:`LabelledMels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicdistill.config import CodecConfig, Config
from musicdistill.data.loading import load_data
from musicdistill.data.manifest import Entry
from musicdistill.dsp.features import MelSpec, resample
from musicdistill.progress import track

#: the log-mel settings that every judge model keeps (the arguments of :class:`MelSpec`)
MEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")
#: clips per batch when computing log-mels and embeddings
BATCH = 64


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
    for start in track(starts, desc="log-mels", unit="batch", enabled=len(starts) >= 8):
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
    """Load a manifest's usable clips (``data`` section: rate, duration, windows, workers) and compute their log-mels
    (``codec`` section's front end) and, with ``codec``, their reconstructions.

    Returns the train split and the held-out clips (valid + test), or None when there are none.
    """
    rate = cfg.data.sample_rate
    entries, audio = load_data(cfg.data, manifest)
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
