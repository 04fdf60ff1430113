"""Pick a codec: open a codec directory by its ``codec.json`` kind, or build the one a config describes."""

from __future__ import annotations

from pathlib import Path

import torch

from musicdistill.codec.encodec_adapters import EncodecPackageCodec, HFEncodecCodec
from musicdistill.codec.interface import KINDS, Codec, read_codec_json
from musicdistill.codec.melrvq import MelCodecSettings, MelRVQCodec
from musicdistill.config import CodecConfig


def load_codec(directory: str | Path) -> Codec:
    """Open a codec directory written by any codec's ``save`` (``musicdistill codec fit``)."""
    meta = read_codec_json(directory)
    kind = meta["kind"]
    if kind == "melrvq":
        return MelRVQCodec.load(directory)
    return HFEncodecCodec.load(directory) if kind == "encodec_hf" else EncodecPackageCodec.load(directory)


def fit_codec(cfg: CodecConfig, audio: torch.Tensor | None, sample_rate: int) -> Codec:
    """Build the codec that ``cfg`` describes.

    ``melrvq`` is fitted on ``audio`` (mono clips [N, S] at ``sample_rate``, the training split);
    the EnCodec kinds have nothing to fit and load ``cfg.pretrained`` (``audio`` is ignored).
    """
    if cfg.kind == "melrvq":
        if audio is None:
            raise ValueError("codec.kind=melrvq is fitted on training audio; pass the train split's clips")
        audio = torch.as_tensor(audio)
        settings = MelCodecSettings(
            sample_rate=sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin,
            fmax=min(cfg.fmax, sample_rate / 2),
            power=cfg.power,
            griffin_lim_iters=cfg.griffin_lim_iters,
        )
        return MelRVQCodec.fit(
            audio,
            settings,
            cfg.num_codebooks,
            cfg.cardinality,
            cfg.kmeans_iters,
            cfg.max_fit_frames,
            cfg.seed,
        )
    if cfg.kind not in KINDS:
        raise ValueError(f"codec.kind={cfg.kind!r} is unknown; choose one of {list(KINDS)}")
    if not cfg.pretrained:
        raise ValueError(
            f"codec.kind={cfg.kind} needs codec.pretrained: a local model directory "
            "(or a hub id / package model name when online)"
        )
    adapter = HFEncodecCodec if cfg.kind == "encodec_hf" else EncodecPackageCodec
    return adapter.from_pretrained(cfg.pretrained, num_codebooks=cfg.num_codebooks)
