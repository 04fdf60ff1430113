"""Pretrained audio embedders from local folders: the reward and the Fréchet space from a model the
user already has, instead of the one a run trains.

- a transformers CLAP folder (``model_type: clap``): its audio tower and projection
  (:class:`musicdistill.judges.scorer.ClapScorer`'s audio path, at the feature extractor's rate);
- a transformers audio encoder that ``AutoModel`` opens with ``input_values`` (HuBERT, wav2vec 2.0,
  MERT): the time mean of its last hidden state, at its feature extractor's rate. A folder whose
  model needs code of its own (its config's ``auto_map``, as the released MERT checkpoints have)
  is refused unless ``trust_remote_code`` is given (``embed.trust_remote_code``): that runs the
  folder's Python, so only for folders the user trusts.

Both read decoded audio (they have no log-mel entry) and return L2-normalised embeddings, so
:func:`musicdistill.judges.judging.reward_judge` and the distillation reward use them as they use
the trained embedder. :func:`load_audio_embedder` opens any of the three kinds of folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicdistill.dsp.features import resample
from musicdistill.judges.embedder import AudioEmbedder, load_embedder
from musicdistill.judges.log_mel import as_waveforms
from musicdistill.judges.scorer import ClapScorer, load_clap_scorer
from musicdistill.storage.model_files import MODEL_JSON

BATCH = 16


class ClapAudioEmbedder:
    """The audio side of a transformers CLAP model as an embedder."""

    settings = None  # reads audio, never a log-mel

    def __init__(self, clap: ClapScorer) -> None:
        self.clap = clap
        self.name = f"CLAP audio tower ({Path(clap.name).name})"

    def embed_audio(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """Clips ``[N, S]`` at ``sample_rate`` -> ``[N, E]`` (L2-normalised)."""
        return self.clap.embed_audio(wav, sample_rate)


class HiddenStateEmbedder:
    """A transformers audio encoder (``input_values`` in, ``last_hidden_state`` out), mean-pooled over time."""

    settings = None

    def __init__(self, model: Any, feature_extractor: Any, name: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.features = feature_extractor
        self.name = name

    @property
    def sample_rate(self) -> int:
        return int(self.features.sampling_rate)

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """Clips ``[N, S]`` at ``sample_rate`` -> ``[N, E]`` (L2-normalised)."""
        wav = resample(as_waveforms(wav), int(sample_rate), self.sample_rate)
        device = next(self.model.parameters()).device
        out = []
        for first in range(0, wav.shape[0], BATCH):
            clips = [row.numpy() for row in wav[first : first + BATCH]]
            inputs = self.features(clips, sampling_rate=self.sample_rate, return_tensors="pt", padding=True)
            hidden = self.model(input_values=inputs["input_values"].to(device)).last_hidden_state
            out.append(F.normalize(hidden.float().mean(dim=1), dim=-1).cpu())
        return torch.cat(out)


def _model_type(config: Path, trust_remote_code: bool) -> str:
    try:
        record = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config} is not a readable JSON model config ({exc})") from None
    if record.get("auto_map") and not trust_remote_code:
        raise ValueError(
            f"{config} maps its model to Python code inside the folder (auto_map); musicdistill runs no "
            "code from model folders unless told to: set embed.trust_remote_code=true for a folder you "
            "trust, or use a CLAP folder or an audio encoder transformers knows (HuBERT, wav2vec 2.0)"
        )
    return str(record.get("model_type", ""))


def load_hidden_state_embedder(
    directory: Path, device: torch.device | str = "cpu", trust_remote_code: bool = False
) -> HiddenStateEmbedder:
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(str(directory), trust_remote_code=trust_remote_code).to(device)
    try:
        features = AutoFeatureExtractor.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"{directory} has no feature extractor (preprocessor_config.json) to say its sample rate ({exc})"
        ) from None
    return HiddenStateEmbedder(model, features, f"{type(model).__name__} ({directory.name})")


def load_audio_embedder(
    directory: str | Path, device: torch.device | str = "cpu", trust_remote_code: bool = False
) -> AudioEmbedder | ClapAudioEmbedder | HiddenStateEmbedder:
    """An embedder folder: one ``musicdistill embed train`` wrote, a transformers CLAP folder, or a
    transformers audio encoder (see the module doc). Raises FileNotFoundError / ValueError naming
    the folder and what it should hold."""
    directory = Path(directory)
    if (directory / MODEL_JSON).is_file():
        return load_embedder(directory, device=device)
    config = directory / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{directory} is not an embedder folder: it has neither {MODEL_JSON} ('musicdistill embed "
            "train') nor a transformers config.json (a CLAP model or an audio encoder)"
        )
    if _model_type(config, trust_remote_code) == "clap":
        return ClapAudioEmbedder(load_clap_scorer(directory, device))
    return load_hidden_state_embedder(directory, device, trust_remote_code)


def embedder_name(embedder: Any) -> str:
    """How the report names an embedder."""
    return str(getattr(embedder, "name", "") or "the reward embedder trained in the run")
