"""A loaded text-to-music model with one call to make audio: :class:`Model` and its :class:`Generation`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import torch

from musicdistill.generation.sampling import generate
from musicdistill.model.loading import LoadedGenerator
from musicdistill.storage.atomic import atomic_write_with

log = logging.getLogger(__name__)


class Generation(NamedTuple):
    """What :meth:`Model.generate` returns; unpacks as ``audio, sample_rate``.

    ``audio [N, samples]`` float32 in [-1, 1] roughly, one row per sample, prompt-major (N = prompts
    x ``num_samples``).
    """

    audio: np.ndarray
    sample_rate: int


@dataclass
class Model:
    """A generator with its text encoder and codec, ready to sample (see :func:`musicdistill.load`).

    ``default_cfg_scale`` is what :meth:`generate` uses when no ``cfg_scale`` is given: 1 (no
    guidance) for a distilled student or a merge, the config's ``generate.cfg_scale`` for a base.
    ``source`` says where it came from (a folder, with the run's role and λ when loaded from a run).
    """

    loaded: LoadedGenerator
    default_cfg_scale: float
    source: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_rate(self) -> int:
        return int(self.loaded.codec.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.loaded.codec.frame_rate)

    @property
    def max_duration(self) -> float:
        """The longest clip in seconds the model's context holds."""
        model = self.loaded.model
        return (model.max_steps - max(model.delays)) / self.frame_rate

    @property
    def device(self) -> torch.device:
        return next(self.loaded.model.parameters()).device

    @property
    def conditioned(self) -> bool:
        """Whether the model takes a diversity weight ``w`` (a conditioned student, docs/method.md 4.1)."""
        return getattr(self.loaded.model, "dial", None) is not None

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        cfg_scale: float | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        duration: float | None = None,
        seed: int = 0,
        num_samples: int = 1,
        batch_size: int | None = 64,
        draw: str = "race",
        w: float | None = None,
    ) -> Generation:
        """Audio for each prompt: ``num_samples`` clips of ``duration`` seconds (default: the longest
        the model holds, at most 10 s), the same for the same ``seed`` and settings. ``draw``:
        ``race`` (default) or ``multinomial`` (transformers' way of drawing; see
        :class:`musicdistill.generation.spec.SamplingSpec`). ``w``: a conditioned student's diversity
        weight in [0, 1] (0 = its quality end, the default; 1 = its diversity end).

        Raises ValueError naming any bad argument (range included), and ``w`` for a model without a dial.
        """
        if w is not None and not self.conditioned:
            raise ValueError(
                f"w={w!r}: this model has no diversity dial (it is not a conditioned student); leave w out, "
                "or load the run's conditioned student (role='conditioned')"
            )
        if duration is None:
            duration = min(10.0, self.max_duration)
        out = generate(
            self.loaded.model,
            prompts,
            num_samples,
            duration,
            temperature,
            top_k,
            top_p,
            self.default_cfg_scale if cfg_scale is None else cfg_scale,
            seed,
            self.loaded.codec,
            text_encoder=self.loaded.text_encoder,
            batch_size=batch_size,
            draw=draw,
            w=w,
        )
        audio = out.audio[:, 0].numpy() if out.audio is not None else np.zeros((0, 0), np.float32)
        return Generation(audio=audio, sample_rate=self.sample_rate)

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.loaded.model.parameters())
        return (
            f"Model({self.source}, {params / 1e6:.2f}M parameters, default cfg_scale {self.default_cfg_scale:g}, "
            f"{self.sample_rate} Hz, up to {self.max_duration:g} s)"
        )


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write one clip ``[samples]`` (or ``[1, samples]``) as 16-bit PCM WAV, peak-normalised only if it clips."""
    clip = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.abs(clip).max()) if clip.size else 0.0
    clip = clip / max(1.0, peak)
    return atomic_write_with(
        Path(path), lambda p: sf.write(str(p), clip, int(sample_rate), format="WAV", subtype="PCM_16")
    )
