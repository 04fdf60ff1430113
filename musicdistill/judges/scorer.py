"""Joint text-audio scorers (the MuLan / CLAP part): text adherence = cosine of a text and an audio embedding.

Two implementations share one small interface (:class:`TextAudioScorer`):

- :class:`JointScorer`, trained here contrastively on caption-clip pairs (CLIP loss with a learned
  temperature): the text tower is a frozen sentence encoder (the packaged all-MiniLM-L6-v2 by default:
  mean-pooled token states, L2-normalised, exactly sentence-transformers' output) followed by a
  trainable MLP; the audio tower is a :class:`musicdistill.judges.embedder.ConvEncoder` over the whole
  clip's log-mel (separate weights from the diversity embedder). Trained on real clips and their codec
  reconstructions, so that it scores decoded generations fairly.
- :class:`ClapScorer`, an adapter for transformers' ``ClapModel`` + ``ClapProcessor`` loaded from a
  local directory (e.g. a downloaded ``laion/clap-htsat-unfused``); audio is resampled to the
  processor's rate (48 kHz) as audiocraft's CLAP metric does.

:func:`load_scorer` opens either kind of folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdistill.config import Config, ScorerConfig
from musicdistill.data.caption_bank import EncodedCaptions, sentence_vectors
from musicdistill.dsp.features import resample
from musicdistill.judges.embedder import (
    ConvEncoder,
    check_training_mels,
    judge_optimizer,
    record_step,
    step_batch,
    training_view,
    uses_reconstructions,
)
from musicdistill.judges.log_mel import BATCH, ClipMels, LabelledMels, as_waveforms, mel_spec, waveform_mels
from musicdistill.loop_kit import deadline, optimizer_step, step_generator
from musicdistill.model.text import MINILM, TextEncoder, check_prompts, load_text_encoder
from musicdistill.progress import Progress
from musicdistill.runtime import resolve_device
from musicdistill.storage.model_files import MODEL_JSON, load_model_folder, save_model_folder

log = logging.getLogger(__name__)

KIND = "scorer"
#: :func:`~musicdistill.loop_kit.step_generator` stream of the training subset (steps use stream 0)
SUBSET_STREAM = 1
#: sentences per text-encoder forward
TEXT_BATCH = 128


@runtime_checkable
class TextAudioScorer(Protocol):
    """Embeds prompts and clips into one space; both outputs are L2-normalised ``[N, E]``."""

    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor: ...

    def embed_audio(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor: ...


def text_adherence(
    scorer: TextAudioScorer, prompts: Sequence[str], wav: torch.Tensor | np.ndarray, sample_rate: int
) -> torch.Tensor:
    """Cosine between each prompt and its clip: ``N`` prompts, clips ``[N, S]`` -> ``[N]`` in [-1, 1]."""
    prompts = check_prompts(prompts, 100_000)
    wav = as_waveforms(wav)
    _check_one_clip_per_prompt(prompts, wav.shape[0])
    return _paired_cosine(scorer.embed_text(prompts), scorer.embed_audio(wav, sample_rate))


def text_adherence_mel(scorer: JointScorer, prompts: Sequence[str], log_mel: torch.Tensor) -> torch.Tensor:
    """:func:`text_adherence` of whole-clip log-mels ``[N, D, T]`` in the scorer's front end (e.g. what the
    default codec's ``decode_mel`` returns) -> ``[N]`` in [-1, 1]."""
    prompts = check_prompts(prompts, 100_000)
    _check_one_clip_per_prompt(prompts, log_mel.shape[0])
    return _paired_cosine(scorer.embed_text(prompts), scorer.embed_mel(log_mel))


def _check_one_clip_per_prompt(prompts: Sequence[str], clips: int) -> None:
    if clips != len(prompts):
        raise ValueError(
            f"got {len(prompts)} prompts but {clips} clips; give one clip per prompt "
            "(repeat a prompt for each of its generations)"
        )


def _paired_cosine(text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of text ``[N, E]`` and audio ``[N, E]`` embeddings -> ``[N]`` on CPU."""
    return (
        (F.normalize(text.float(), dim=-1) * F.normalize(audio.float(), dim=-1).to(text.device)).sum(-1).cpu()
    )


# --------------------------------------------------------------------------------------------
# Sentence embeddings
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sentence_embeddings(
    encoder: TextEncoder, prompts: Sequence[str], batch_size: int = TEXT_BATCH
) -> torch.Tensor:
    """Mean-pooled (over real tokens), L2-normalised encoder states: ``N`` prompts -> ``[N, D]`` on CPU.

    Each distinct prompt is encoded once; prompts are batched by length and padded within a batch (the
    attention mask keeps padding out of attention and pooling).
    """
    prompts = check_prompts(prompts, encoder.max_prompt_chars)
    unique = sorted(set(prompts), key=lambda p: (len(p), p))
    pooled_rows = []
    for first in range(0, len(unique), batch_size):
        batch = encoder.tokenizer(
            unique[first : first + batch_size],
            padding=True,
            truncation=True,
            max_length=encoder.max_tokens,
            return_tensors="pt",
        ).to(encoder.device)
        hidden = encoder.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        pooled_rows.append(F.normalize(pooled.float(), dim=-1).cpu())
    table = torch.cat(pooled_rows)
    index = {p: i for i, p in enumerate(unique)}
    return table[torch.tensor([index[p] for p in prompts])]


# --------------------------------------------------------------------------------------------
# The trained joint scorer
# --------------------------------------------------------------------------------------------


class JointScorer(nn.Module):
    """Frozen sentence encoder + trainable text MLP, and a conv audio tower over whole-clip log-mels.

    ``audio`` maps log-mels ``[N, D, T]`` to ``[N, E]``; ``text_projection`` maps sentence embeddings
    ``[N, D_text]`` to ``[N, E]``; ``logit_scale`` is the learned inverse temperature (log).
    """

    def __init__(
        self,
        audio: ConvEncoder,
        text_dim: int,
        text_hidden: int,
        dim: int,
        settings: dict[str, Any],
        text_encoder: TextEncoder | None = None,
        text_encoder_name: str = MINILM,
        init_temperature: float = 0.07,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.audio = audio
        self.text_projection = nn.Sequential(
            nn.Linear(text_dim, text_hidden), nn.GELU(), nn.Linear(text_hidden, dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.settings = dict(settings)
        self.mel = mel_spec(self.settings)
        self.text_encoder = text_encoder
        self.text_encoder_name = text_encoder_name
        self.config = dict(config or {})

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def project_text(self, sentences: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``[N, D_text]`` -> joint-space text embeddings ``[N, E]`` (normalised)."""
        return F.normalize(self.text_projection(sentences.to(self.device).float()), dim=-1)

    def _encoder(self) -> TextEncoder:
        if self.text_encoder is None:
            self.text_encoder = load_text_encoder(self.text_encoder_name, device=self.device)
        return self.text_encoder

    @torch.no_grad()
    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``N`` prompts -> ``[N, E]`` (the sentence encoder is loaded on first use)."""
        return self.project_text(sentence_embeddings(self._encoder(), prompts)).cpu()

    @torch.no_grad()
    def embed_mel(self, log_mel: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Whole-clip log-mels ``[N, D, T]`` in the scorer's front end -> ``[N, E]``."""
        if log_mel.dim() != 3 or log_mel.shape[1] != self.audio.n_mels:
            raise ValueError(
                f"log_mel must have shape [N, {self.audio.n_mels}, T], got {tuple(log_mel.shape)}"
            )
        was_training = self.training
        self.eval()
        out = [
            self.audio(log_mel[i : i + batch_size].to(self.device)).cpu()
            for i in range(0, log_mel.shape[0], batch_size)
        ]
        self.train(was_training)
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """Clips ``[N, S]`` at ``sample_rate`` -> ``[N, E]``."""
        wav = as_waveforms(wav)
        return torch.cat(
            [
                self.embed_mel(waveform_mels(self.mel, wav[i : i + BATCH], sample_rate))
                for i in range(0, wav.shape[0], BATCH)
            ]
        )


def build_scorer(
    cfg: ScorerConfig, settings: dict[str, Any], text_dim: int, text_encoder: TextEncoder | None = None
) -> JointScorer:
    """An untrained joint scorer for a config, a front end and a sentence width."""
    audio = ConvEncoder(settings["n_mels"], cfg.channels, cfg.dim)
    return JointScorer(
        audio,
        text_dim,
        cfg.text_hidden,
        cfg.dim,
        settings,
        text_encoder,
        cfg.text_encoder,
        cfg.init_temperature,
        asdict(cfg),
    )


def clip_loss(text: torch.Tensor, audio: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss of paired rows ``[B, E]`` (normalised); the scale is capped at 100."""
    logits = logit_scale.exp().clamp(max=100.0) * text @ audio.T
    labels = torch.arange(text.shape[0], device=text.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def train_scorer(
    cfg: ScorerConfig,
    captions: Sequence[str],
    mels: ClipMels,
    text_encoder: TextEncoder | None = None,
    device: torch.device | str = "cpu",
    captions_bank: EncodedCaptions | None = None,
) -> tuple[JointScorer, list[dict[str, float]]]:
    """Train the joint scorer on caption-clip pairs; returns it (frozen, eval mode) and the loss history.

    At most ``cfg.max_clips`` pairs are used (a seeded random subset). ``text_encoder`` defaults to
    ``cfg.text_encoder`` loaded here; every caption is encoded once, or read from ``captions_bank``
    (encodings by the same encoder, see :mod:`musicdistill.data.caption_bank`) when given.
    """
    if len(captions) != len(mels):
        raise ValueError(f"captions has {len(captions)} entries but mels has {len(mels)} clips")
    if len(mels) > cfg.max_clips:
        subset = step_generator(cfg.seed, 0, SUBSET_STREAM)
        keep = torch.randperm(len(mels), generator=subset)[: cfg.max_clips].sort().values
        captions, mels = [captions[i] for i in keep.tolist()], mels.select(keep)
        log.info("scorer: training on %d of the clips (scorer.max_clips)", cfg.max_clips)
    batch = check_training_mels(mels, cfg.batch_size, "scorer")
    encoder = text_encoder or load_text_encoder(cfg.text_encoder)
    if captions_bank is not None:
        sentences = sentence_vectors(captions_bank, list(captions))  # [N, D_text]
    else:
        sentences = sentence_embeddings(encoder, list(captions))
    torch.manual_seed(cfg.seed)
    scorer = build_scorer(cfg, mels.settings, sentences.shape[1], encoder)
    scorer.audio.set_statistics(mels.real[: min(len(mels), 2048)])
    scorer.to(device).train()
    optimizer, scheduler = judge_optimizer(scorer, cfg.lr, cfg.weight_decay, cfg.steps)
    frame_rate = mels.settings["sample_rate"] / mels.settings["hop_length"]
    crop = min(mels.num_frames, max(4, round(cfg.crop_seconds * frame_rate)))
    use_recon = uses_reconstructions(cfg.reconstructions, mels, "scorer")
    history: list[dict[str, float]] = []
    progress, stop_at = Progress("scorer", cfg.steps), deadline(cfg.max_minutes)
    for step in range(cfg.steps):
        gen, rows = step_batch(cfg.seed, step, len(mels), batch)
        starts = torch.randint(0, mels.num_frames - crop + 1, (batch,), generator=gen)
        x = training_view(mels, rows, starts, crop, use_recon, cfg.gain_jitter, gen).to(device)
        loss = clip_loss(scorer.project_text(sentences[rows]), scorer.audio(x), scorer.logit_scale)
        optimizer_step(loss, scorer, optimizer, scheduler, max_norm=0.0)
        if record_step(history, progress, loss, stop_at):
            break
    progress.close()
    scorer.eval().requires_grad_(False)
    return scorer, history


def _matches_stated(
    caption_attributes: dict[str, Any] | None, clip_attributes: dict[str, Any] | None
) -> bool:
    """Does a clip have every attribute the caption states?"""
    if not caption_attributes or not clip_attributes:
        return False
    stated = caption_attributes.get("stated", [])
    return all(str(clip_attributes.get(a)) == str(caption_attributes.get(a)) for a in stated)


def retrieval_at_1(
    text: torch.Tensor,
    audio: torch.Tensor,
    num_candidates: int = 100,
    rounds: int = 10,
    seed: int = 0,
    attributes: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, float]:
    """Text-to-audio retrieval among ``num_candidates`` pairs of ``text``, ``audio`` ``[N, E]`` (row i of each
    belongs to clip i), averaged over ``rounds`` random candidate sets.

    ``recall_at_1``: a caption's own clip ranks first (chance ``1 / num_candidates``). With
    ``attributes`` (one dict per clip, with ``stated``), ``stated_match_at_1``: the top clip has every
    attribute the caption states (its own clip always does; others may when the caption leaves
    attributes unstated).
    """
    if text.shape[0] != audio.shape[0] or text.shape[0] < 2:
        raise ValueError(
            f"need at least 2 captions and one clip per caption, got {text.shape[0]} and {audio.shape[0]}"
        )
    count = min(num_candidates, text.shape[0])
    gen = torch.Generator().manual_seed(seed)
    recall, matched = [], []
    for _ in range(rounds):
        rows = torch.randperm(text.shape[0], generator=gen)[:count]
        best = (text[rows] @ audio[rows].T).argmax(1)
        recall.append(float((best == torch.arange(count)).float().mean()))
        if attributes is not None:
            pairs = zip(rows.tolist(), rows[best].tolist())
            matched.append(np.mean([_matches_stated(attributes[i], attributes[j]) for i, j in pairs]))
    out = {"recall_at_1": float(np.mean(recall)), "chance": 1.0 / count, "candidates": count}
    if matched:
        out["stated_match_at_1"] = float(np.mean(matched))
    return out


@torch.no_grad()
def text_to_audio_recall(
    scorer: JointScorer,
    captions: Sequence[str],
    log_mel: torch.Tensor,
    num_candidates: int = 100,
    rounds: int = 10,
    seed: int = 0,
    attributes: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, float]:
    """:func:`retrieval_at_1` of held-out captions against their clips' log-mels ``[N, D, T]``."""
    if len(captions) != log_mel.shape[0]:
        raise ValueError(f"got {len(captions)} captions but {log_mel.shape[0]} log-mels")
    text, audio = scorer.embed_text(list(captions)), scorer.embed_mel(log_mel)
    return retrieval_at_1(text, audio, num_candidates, rounds, seed, attributes)


def evaluate_scorer(
    scorer: JointScorer,
    captions: Sequence[str],
    held_out: ClipMels,
    attributes: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Held-out retrieval at 100 candidates and at all held-out clips, on real clips and reconstructions."""
    text = scorer.embed_text(list(captions))
    sources = {"real": held_out.real} | ({"recon": held_out.recon} if held_out.recon is not None else {})
    out: dict[str, Any] = {}
    for name, mels in sources.items():
        audio = scorer.embed_mel(mels.float())
        for count in sorted({min(100, len(held_out)), len(held_out)}):
            found = retrieval_at_1(text, audio, count, attributes=attributes)
            out[f"n{count}_{name}"] = {
                k: round(v, 4) if isinstance(v, float) else v for k, v in found.items()
            }
    return out


def fit_and_save_scorer(
    cfg: Config,
    train: LabelledMels,
    held_out: LabelledMels | None,
    out: str | Path,
    captions: EncodedCaptions | None = None,
) -> dict[str, Any]:
    """Train the scorer (``scorer`` section), evaluate retrieval on the held-out clips, save it to ``out``.

    ``captions``: encodings of the training captions by ``scorer.text_encoder`` (the main job's
    captions stage), which saves encoding them again.
    """
    start = time.monotonic()
    device = resolve_device(cfg.device)
    encoder = load_text_encoder(cfg.scorer.text_encoder, device=device)
    scorer, history = train_scorer(
        cfg.scorer, [e.caption for e in train.entries], train.mels, encoder, device, captions_bank=captions
    )
    metrics: dict[str, Any] = {
        "train_seconds": round(time.monotonic() - start, 1),
        "steps": len(history),
        "final_loss": round(history[-1]["loss"], 4),
        "train_clips": min(len(train), cfg.scorer.max_clips),
    }
    if held_out is not None and len(held_out) >= 2:
        metrics["retrieval"] = evaluate_scorer(
            scorer,
            [e.caption for e in held_out.entries],
            held_out.mels,
            [e.attributes for e in held_out.entries],
        )
        metrics["held_out_clips"] = len(held_out)
    save_scorer(scorer, out, metrics)
    log.info("scorer saved to %s: %s", out, metrics)
    return metrics


def save_scorer(scorer: JointScorer, directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write the trained parts (audio tower, text MLP, logit scale) + ``model.json``; the frozen sentence
    encoder is recorded by name (``text_encoder``), not copied."""
    tensors = scorer.state_dict()
    first = scorer.text_projection[0]
    meta = {
        "settings": scorer.settings,
        "text_encoder": scorer.text_encoder_name,
        "architecture": {
            **scorer.audio.architecture(),  # the audio tower's dim is the joint space's
            "text_dim": first.in_features,
            "text_hidden": first.out_features,
        },
        "config": scorer.config,
        "metrics": metrics or {},
    }
    return save_model_folder(directory, KIND, tensors, meta)


def load_joint_scorer(directory: str | Path, device: torch.device | str = "cpu") -> JointScorer:
    """Read a folder written by :func:`save_scorer` (frozen, eval mode; the sentence encoder loads lazily)."""
    meta, tensors = load_model_folder(directory, KIND)
    arch = meta["architecture"]
    audio = ConvEncoder(int(arch["n_mels"]), int(arch["channels"]), int(arch["dim"]))
    scorer = JointScorer(
        audio,
        int(arch["text_dim"]),
        int(arch["text_hidden"]),
        int(arch["dim"]),
        meta["settings"],
        text_encoder_name=meta["text_encoder"],
        config=meta.get("config"),
    )
    try:
        scorer.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(
            f"{Path(directory) / MODEL_JSON}: the weights do not fit the recorded architecture "
            f"({exc}); retrain the scorer"
        ) from None
    return scorer.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# transformers CLAP adapter
# --------------------------------------------------------------------------------------------


def _pooled(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` it is (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClapScorer:
    """transformers ``ClapModel`` + ``ClapProcessor`` behind :class:`TextAudioScorer`.

    Audio is mono, resampled to the feature extractor's rate (48 kHz for LAION CLAP). Clips longer than
    the extractor's ``max_length_s`` are cut by the extractor itself (at random for ``rand_trunc``).
    """

    def __init__(self, model: Any, processor: Any, name: str = "") -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @torch.no_grad()
    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = check_prompts(prompts, 100_000)
        out = []
        for first in range(0, len(prompts), TEXT_BATCH):
            batch = self.processor.tokenizer(
                prompts[first : first + TEXT_BATCH], padding=True, truncation=True, return_tensors="pt"
            ).to(self.device)
            features = _pooled(
                self.model.get_text_features(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                )
            )
            out.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        wav = resample(as_waveforms(wav), int(sample_rate), self.sample_rate)
        out = []
        for first in range(0, wav.shape[0], BATCH):
            clips = [row.numpy() for row in wav[first : first + BATCH]]
            inputs = self.processor.feature_extractor(
                clips, sampling_rate=self.sample_rate, return_tensors="pt"
            )
            is_longer = inputs.get("is_longer")
            features = _pooled(
                self.model.get_audio_features(
                    input_features=inputs["input_features"].to(self.device),
                    is_longer=None if is_longer is None else is_longer.to(self.device),
                )
            )
            out.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(out)


def load_clap_scorer(directory: str | Path, device: torch.device | str = "cpu") -> ClapScorer:
    """A ``ClapModel`` + ``ClapProcessor`` saved in a local directory (hubs are offline)."""
    from transformers import ClapModel, ClapProcessor

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} has no config.json; pass a local folder holding a transformers "
            "ClapModel and its processor (e.g. a download of laion/clap-htsat-unfused)"
        )
    model = ClapModel.from_pretrained(str(directory)).to(device)
    processor = ClapProcessor.from_pretrained(str(directory))
    return ClapScorer(model, processor, str(directory))


def load_scorer(directory: str | Path, device: torch.device | str = "cpu") -> JointScorer | ClapScorer:
    """Open a scorer folder: one written by ``musicdistill embed scorer``, or a transformers CLAP folder."""
    directory = Path(directory)
    if (directory / MODEL_JSON).is_file():
        return load_joint_scorer(directory, device)
    config = directory / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config} is not valid JSON ({exc})") from None
        if model_type == "clap":
            return load_clap_scorer(directory, device)
        raise ValueError(
            f"{config} describes a '{model_type}' model; a scorer folder must hold a CLAP model "
            "or one trained by 'musicdistill embed scorer'"
        )
    raise FileNotFoundError(
        f"{directory} is not a scorer folder: it has neither {MODEL_JSON} "
        "('musicdistill embed scorer') nor a transformers CLAP config.json"
    )
