"""The frozen models that judge generations, as plain functions of codes or audio.

- the reward embedder (the diversity reward of distillation, and one diversity metric);
- the attribute oracle (the golden quality metric) and its hand-made features (the independent
  embedding that shows reward hacking);
- the joint text-audio scorer (text adherence).

With the default codec, generations are judged on the log-mel the codec decodes to (``decode_mel``)
when the judge shares the codec's front end: the same spectrogram Griffin-Lim would resynthesise,
without the cost of resynthesising it. Otherwise codes are decoded to audio first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: wav [N, samples] float32 at the codec's rate -> L2-normalised embeddings [N, E]
Embed = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Judges:
    """Frozen models that score generations; any may be None except the independent embedding."""

    independent: Embed
    reward: Embed | None = None
    adherence: Callable[[torch.Tensor, list[dict[str, Any] | None]], np.ndarray] | None = None
    text_adherence: Callable[[list[str], torch.Tensor], np.ndarray] | None = None




def _mel_or_audio(codec, settings: dict[str, Any], codes: torch.Tensor,
                  on_mel: Callable[[torch.Tensor], Any], on_audio: Callable[[torch.Tensor, int], Any]) -> Any:
    from musicdistill.embedding import codec_shares_front_end

    with torch.inference_mode():
        if codec_shares_front_end(codec, settings):
            return on_mel(codec.decode_mel(codes).float())
        wav = codec.decode(codes).float().reshape(codes.shape[0], -1)
    return on_audio(wav, int(codec.sample_rate))


def reward_embed_fn(embedder_dir: Path, codec, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """codes ``[N, K, T]`` -> reward-embedder embeddings ``[N, E]`` (L2-normalised)."""
    from musicdistill.embedding import embed_audio, embed_mel, load_embedder

    embedder = load_embedder(embedder_dir, device=device)
    settings = embedder.settings

    def reward_embed(codes: torch.Tensor) -> torch.Tensor:
        return _mel_or_audio(codec, settings, codes, lambda mel: embed_mel(embedder, mel),
                             lambda wav, sr: embed_audio(embedder, wav, sr))

    return reward_embed


def golden_metric_fn(oracle_dir: Path, codec) -> Callable[[torch.Tensor, list[dict[str, Any] | None]], float]:
    """(codes ``[N, K, T]``, attribute dicts) -> mean attribute adherence under the oracle."""
    from musicdistill.oracle import (
        attribute_adherence,
        load_oracle,
        predict_attributes,
        predict_attributes_mel,
    )

    oracle = load_oracle(oracle_dir)

    def golden(codes: torch.Tensor, attributes: list[dict[str, Any] | None]) -> float:
        predicted = _mel_or_audio(codec, oracle.settings, codes, lambda mel: predict_attributes_mel(oracle, mel),
                                  lambda wav, sr: predict_attributes(oracle, wav, sr))
        values = [attribute_adherence(p, a) for p, a in zip(predicted, attributes) if a]
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    return golden


def audio_judges(sample_rate: int, device: torch.device, embedder_dir: Path | None = None,
                 oracle_dir: Path | None = None, scorer_dir: Path | None = None) -> Judges:
    """Judges of decoded audio ``[N, samples]`` at ``sample_rate`` for :mod:`musicdistill.evaluate`.

    The independent embedding is the oracle's standardised hand-made features when an oracle is
    given, else the demo's spectral features; the reward embedder, oracle and scorer are optional.
    """
    reward = adherence = text_adherence = None
    if embedder_dir is not None:
        from musicdistill.embedding import embed_audio, load_embedder

        embedder = load_embedder(embedder_dir, device=device)

        def reward(wav: torch.Tensor) -> torch.Tensor:
            return embed_audio(embedder, wav, sample_rate)

    if oracle_dir is not None:
        from musicdistill.oracle import attribute_adherence, hand_features, load_oracle, predict_attributes

        oracle = load_oracle(oracle_dir)

        def independent(wav: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.normalize(hand_features(oracle, wav, sample_rate).float(), dim=-1)

        def adherence(wav: torch.Tensor, attributes: list[dict[str, Any] | None]) -> np.ndarray:
            predicted = predict_attributes(oracle, wav, sample_rate)
            return np.array([attribute_adherence(p, a) if a else np.nan for p, a in zip(predicted, attributes)])
    else:
        from musicdistill.demo_engine import spectral_embedding

        def independent(wav: torch.Tensor) -> torch.Tensor:
            return spectral_embedding(wav, sample_rate)

    if scorer_dir is not None:
        from musicdistill.scorer import load_scorer
        from musicdistill.scorer import text_adherence as score_text

        scorer = load_scorer(scorer_dir, device=device)

        def text_adherence(prompts: list[str], wav: torch.Tensor) -> np.ndarray:
            return score_text(scorer, prompts, wav, sample_rate).numpy()

    return Judges(independent=independent, reward=reward, adherence=adherence, text_adherence=text_adherence)
