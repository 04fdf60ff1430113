"""The frozen models that judge generations, as plain functions of codes.

- the reward embedder (the diversity reward of distillation, and one diversity metric,
  ``diversity_reward``);
- the second embedder (:mod:`musicdistill.judges.second_embedder`: another architecture and
  objective, trained on the other half of the training split; ``diversity_second``);
- the attribute oracle: the golden quality metric (attribute adherence), attribute diversity over the
  attributes a prompt leaves open (:mod:`musicdistill.judges.attribute_diversity`;
  ``attribute_diversity``, and ``expected_attribute_diversity`` from its marginal probabilities), and its
  hand-made features (the third view, ``diversity_independent``);
- the joint text-audio scorer (text adherence).

The primary independent diversity measure, fixed before any run, is attribute diversity where an
oracle exists, else the second embedder's (:func:`primary_diversity_measure`).

Every judge reads clips as :class:`CodedClips` (codes ``[N, K, T]`` and their codec) and follows one
rule, :func:`judge_rendering`: a judge whose log-mel front end the codec shares (the default mel-RVQ
codec) reads the log-mel the codes decode to (``decode_mel``), which is the spectrogram Griffin-Lim
would resynthesise, without the cost of resynthesising it nor the error of reading it back; with any
other codec (EnCodec) the judge reads the decoded audio. Distillation (:func:`reward_embed_fn`,
:func:`golden_metric_fn`) and evaluation (:func:`build_judges`) share these judges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from musicdistill.judges.attribute_diversity import (
    attribute_diversity_per_prompt,
    expected_attribute_diversity_per_prompt,
)
from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.embedder import AudioEmbedder, embed_audio, embed_mel
from musicdistill.judges.log_mel import codec_shares_front_end
from musicdistill.judges.oracle import (
    Marginal,
    attribute_adherence,
    hand_features,
    hand_features_mel,
    load_oracle,
    predict_marginals_features,
)
from musicdistill.judges.pretrained_embedders import embedder_name, load_audio_embedder
from musicdistill.judges.scorer import load_scorer, text_adherence, text_adherence_mel
from musicdistill.judges.second_embedder import embed_audio_second, embed_mel_second, load_second_embedder
from musicdistill.judges.spectral import spectral_embedding, spectral_features

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class CodedClips:
    """Clips as codes ``[N, K, T]`` of ``codec``, with what they decode to, each decoded once on first use.

    Judges that read the same rendering of the same clips share it (:meth:`mel`, :meth:`audio`), and
    judges that need the same reading of them share it too (:meth:`memo`).
    """

    codec: Any
    codes: torch.Tensor
    _mel: torch.Tensor | None = field(default=None, init=False, repr=False)
    _audio: torch.Tensor | None = field(default=None, init=False, repr=False)
    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    def mel(self) -> torch.Tensor:
        """The log-mel the codes decode to, ``[N, D, T]`` (a codec with ``decode_mel`` only)."""
        if self._mel is None:
            with torch.no_grad():
                self._mel = self.codec.decode_mel(self.codes).float()
        return self._mel

    def audio(self) -> torch.Tensor:
        """The decoded audio ``[N, samples]`` (float32, CPU) at :attr:`sample_rate`."""
        if self._audio is None:
            self._audio = self._decode(self.codes)
        return self._audio

    def audio_rows(self, count: int) -> torch.Tensor:
        """The first ``count`` clips' audio ``[min(count, N), samples]``, decoding only those unless all
        the audio is decoded already."""
        if self._audio is not None or count >= len(self):
            return self.audio()[:count]
        return self._decode(self.codes[:count])

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.codec.decode(codes).float().reshape(codes.shape[0], -1).cpu()

    def memo(self, key: Any, compute: Callable[[], R]) -> R:
        """``compute()`` once per ``key`` for these clips (e.g. the oracle's readings, which adherence and
        attribute diversity both use)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def judge_rendering(
    clips: CodedClips,
    settings: dict[str, Any] | None,
    on_mel: Callable[[torch.Tensor], R] | None,
    on_audio: Callable[[torch.Tensor, int], R],
) -> R:
    """A judge's output on ``clips``: ``on_mel(log-mel [N, D, T])`` when it can read the decoded log-mel,
    else ``on_audio(wav [N, samples], sample_rate)``.

    It reads the log-mel when it has a log-mel entry (``on_mel``) and either the codec quantises the
    log-mel of its front end ``settings`` (:func:`musicdistill.judges.log_mel.codec_shares_front_end`), or
    ``settings`` is None, which marks features that suit any log-mel, so any codec with ``decode_mel``.
    """
    if on_mel is not None and hasattr(clips.codec, "decode_mel"):
        if settings is None or codec_shares_front_end(clips.codec, settings):
            return on_mel(clips.mel())
    return on_audio(clips.audio(), clips.sample_rate)


#: clips -> embeddings ``[N, E]``, L2-normalised
Embed = Callable[[CodedClips], torch.Tensor]
#: (clips, one attribute dict or None per clip) -> adherence ``[N]`` in [0, 1], NaN where undefined
Adherence = Callable[[CodedClips, list[dict[str, Any] | None]], np.ndarray]
#: (one prompt per clip, clips) -> text-clip cosine ``[N]``
TextAdherence = Callable[[list[str], CodedClips], np.ndarray]
#: (clips ``[B·G]`` prompt-major, one attribute dict or None per PROMPT, G) -> ``[B]``, NaN where undefined
AttributeDiversity = Callable[[CodedClips, list[dict[str, Any] | None], int], np.ndarray]

#: the primary independent diversity measures, in order of preference (fixed before any run)
PRIMARY_DIVERSITY = ("attribute_diversity", "diversity_second")
#: every diversity measure by its stable name (a per-prompt column of the evaluation)
DIVERSITY_MEASURES = ("attribute_diversity", "diversity_second", "diversity_independent", "diversity_reward")


@dataclass
class Judges:
    """Frozen models that score generations; any may be None except the independent embedding
    (the hand-made features, the third view)."""

    independent: Embed
    reward: Embed | None = None
    adherence: Adherence | None = None
    text_adherence: TextAdherence | None = None
    second: Embed | None = None
    attribute_diversity: AttributeDiversity | None = None
    expected_attribute_diversity: AttributeDiversity | None = None
    reward_name: str = ""  # how the report names the reward embedder (trained, CLAP, ...)


def primary_diversity_measure(per_prompt: dict[str, Any]) -> str | None:
    """The primary independent diversity measure among per-prompt columns (name -> values): attribute
    diversity where it is defined for some prompt (an oracle exists and some prompt leaves an
    attribute open), else the second embedder's diversity; None when neither was measured."""
    for name in PRIMARY_DIVERSITY:
        values = np.asarray(per_prompt.get(name, []), dtype=np.float64)
        if values.size and np.isfinite(values).any():
            return name
    return None


def diversity_measures(
    clips: CodedClips, attributes: list[dict[str, Any] | None], group: int, judges: Judges
) -> dict[str, np.ndarray]:
    """Every diversity measure the judges give, per prompt: clips ``[B·G]`` (prompt-major), one attribute
    dict or None per prompt -> ``{name: [B]}`` (names of :data:`DIVERSITY_MEASURES`; NaN where undefined).

    Embedding measures are the mean pairwise ``1 - cos`` within a prompt; attribute diversity needs an
    oracle (:mod:`musicdistill.judges.attribute_diversity`).
    """
    if group < 2 or len(clips) != len(attributes) * group:
        raise ValueError(f"need G >= 2 samples for each of {len(attributes)} prompts, got {len(clips)} clips")
    out: dict[str, np.ndarray] = {}
    if judges.attribute_diversity is not None:
        out["attribute_diversity"] = np.asarray(judges.attribute_diversity(clips, attributes, group))
    for name, judge in (
        ("second", judges.second),
        ("independent", judges.independent),
        ("reward", judges.reward),
    ):
        if judge is not None:
            emb = judge(clips).float().cpu()
            out[f"diversity_{name}"] = pairwise_diversity(emb.reshape(len(attributes), group, -1))
    return out


def _embedder_judge(embedder, from_mel: Callable, from_audio: Callable) -> Embed:
    """An embedder as a judge: ``from_mel(embedder, mel)`` on the codec's log-mels, else
    ``from_audio(embedder, wav, sr)`` on decoded audio (:func:`judge_rendering` picks)."""

    def judge(clips: CodedClips) -> torch.Tensor:
        return judge_rendering(
            clips,
            embedder.settings,
            lambda mel: from_mel(embedder, mel),
            lambda wav, sr: from_audio(embedder, wav, sr),
        )

    return judge


def reward_judge(embedder) -> Embed:
    """The reward embedder as a judge: a trained :class:`musicdistill.judges.embedder.AudioEmbedder`
    (log-mel or audio), or a pretrained one of :mod:`musicdistill.judges.pretrained_embedders` (audio)."""
    if isinstance(embedder, AudioEmbedder):
        return _embedder_judge(embedder, embed_mel, embed_audio)
    return lambda clips: judge_rendering(clips, None, None, embedder.embed_audio)


def second_judge(embedder) -> Embed:
    """The second embedder (:class:`musicdistill.judges.second_embedder.SecondEmbedder`) as a judge."""
    return _embedder_judge(embedder, embed_mel_second, embed_audio_second)


def oracle_readings(oracle, clips: CodedClips) -> list[dict[str, str]]:
    """The oracle's reading ``{attribute: value}`` of every clip: the argmax of each attribute's marginal
    probabilities (as :func:`musicdistill.judges.oracle.predict_attributes_mel`), computed once per clips
    and oracle from the shared features."""

    def read() -> list[dict[str, str]]:
        marginals = oracle_marginals(oracle, clips)
        columns = {a: m.argmax() for a, m in marginals.items()}
        return [{a: values[row] for a, values in columns.items()} for row in range(len(clips))]

    return clips.memo(("oracle_readings", id(oracle)), read)


def oracle_features(oracle, clips: CodedClips) -> torch.Tensor:
    """The oracle's standardised hand-made features ``[N, F]`` of the clips, computed once per clips and
    oracle (the independent embedding and the marginal probabilities share them)."""
    return clips.memo(
        ("oracle_features", id(oracle)),
        lambda: judge_rendering(
            clips,
            oracle.settings,
            lambda mel: hand_features_mel(oracle, mel.cpu()),
            lambda wav, sr: hand_features(oracle, wav, sr),
        ),
    )


def oracle_marginals(oracle, clips: CodedClips) -> dict[str, Marginal]:
    """Each attribute the oracle reads -> its marginal class probabilities ``[N, K]`` for every clip
    (:func:`musicdistill.judges.oracle.predict_marginals_features`), computed once per clips and oracle."""
    return clips.memo(
        ("oracle_marginals", id(oracle)),
        lambda: predict_marginals_features(oracle, oracle_features(oracle, clips)),
    )


def _check_prompt_major(clips: CodedClips, attributes: list[dict[str, Any] | None], group: int) -> None:
    if len(attributes) * group != len(clips):
        raise ValueError(
            f"got {len(attributes)} prompts x G={group} for {len(clips)} clips; give one attribute "
            "entry per prompt and G samples per prompt, prompt-major"
        )


def attribute_diversity_judge(oracle) -> AttributeDiversity:
    """Attribute diversity (:mod:`musicdistill.judges.attribute_diversity`) under the oracle's readings."""

    def diversity(clips: CodedClips, attributes: list[dict[str, Any] | None], group: int) -> np.ndarray:
        _check_prompt_major(clips, attributes, group)
        return attribute_diversity_per_prompt(
            oracle_readings(oracle, clips), attributes, group, oracle.attributes
        )

    return diversity


def expected_attribute_diversity_judge(oracle) -> AttributeDiversity:
    """Expected attribute diversity (:func:`musicdistill.judges.attribute_diversity.
    expected_attribute_diversity_per_prompt`) under the oracle's marginal class probabilities."""

    def diversity(clips: CodedClips, attributes: list[dict[str, Any] | None], group: int) -> np.ndarray:
        _check_prompt_major(clips, attributes, group)
        probs = {a: m.probs for a, m in oracle_marginals(oracle, clips).items()}
        return expected_attribute_diversity_per_prompt(probs, attributes, group)

    return diversity


def oracle_judges(oracle) -> tuple[Embed, Adherence]:
    """The oracle's judges: its standardised hand-made features (L2-normalised) and attribute adherence."""

    def independent(clips: CodedClips) -> torch.Tensor:
        return F.normalize(oracle_features(oracle, clips).float(), dim=-1)

    def adherence(clips: CodedClips, attributes: list[dict[str, Any] | None]) -> np.ndarray:
        if len(attributes) != len(clips):
            raise ValueError(
                f"got {len(attributes)} attribute entries for {len(clips)} clips; give one per clip"
            )
        predicted = oracle_readings(oracle, clips)
        return np.array([attribute_adherence(p, a) if a else np.nan for p, a in zip(predicted, attributes)])

    return independent, adherence


def spectral_judge(clips: CodedClips) -> torch.Tensor:
    """The independent embedding without an oracle: band envelope and variation of a log-mel
    (:func:`musicdistill.judges.spectral.spectral_features`), of whatever log-mel the codec decodes to."""
    return judge_rendering(clips, None, lambda mel: spectral_features(mel.cpu()), spectral_embedding)


def text_judge(scorer) -> TextAdherence:
    """A joint text-audio scorer as a judge (a CLAP scorer has no log-mel entry: it reads audio)."""
    settings = getattr(scorer, "settings", None)
    has_mel = settings is not None and hasattr(scorer, "embed_mel")

    def text_adherence_of(prompts: list[str], clips: CodedClips) -> np.ndarray:
        on_mel = (lambda mel: text_adherence_mel(scorer, prompts, mel)) if has_mel else None
        return judge_rendering(
            clips, settings, on_mel, lambda wav, sr: text_adherence(scorer, prompts, wav, sr)
        ).numpy()

    return text_adherence_of


def build_judges(
    device: torch.device,
    embedder_dir: Path | None = None,
    oracle_dir: Path | None = None,
    scorer_dir: Path | None = None,
    second_dir: Path | None = None,
    trust_remote_code: bool = False,
) -> Judges:
    """The judges of :mod:`musicdistill.evaluation.evaluate` from their folders.

    The independent embedding is the oracle's standardised hand-made features when an oracle is
    given, else :func:`spectral_judge`; the reward embedder, oracle (adherence, attribute diversity and
    its expected variant), scorer and second embedder are optional.
    """
    judges = Judges(independent=spectral_judge)
    if embedder_dir is not None:
        embedder = load_audio_embedder(embedder_dir, device=device, trust_remote_code=trust_remote_code)
        judges.reward, judges.reward_name = reward_judge(embedder), embedder_name(embedder)
    if second_dir is not None:
        judges.second = second_judge(load_second_embedder(second_dir, device=device))
    if oracle_dir is not None:
        oracle = load_oracle(oracle_dir)
        judges.independent, judges.adherence = oracle_judges(oracle)
        judges.attribute_diversity = attribute_diversity_judge(oracle)
        judges.expected_attribute_diversity = expected_attribute_diversity_judge(oracle)
    if scorer_dir is not None:
        judges.text_adherence = text_judge(load_scorer(scorer_dir, device=device))
    return judges


def reward_embed_fn(
    embedder_dir: Path, codec, device: torch.device, trust_remote_code: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """codes ``[N, K, T]`` of ``codec`` -> reward-embedder embeddings ``[N, E]`` (L2-normalised)."""
    reward = reward_judge(
        load_audio_embedder(embedder_dir, device=device, trust_remote_code=trust_remote_code)
    )
    return lambda codes: reward(CodedClips(codec, codes))


def golden_metric_fn(oracle_dir: Path, codec) -> Callable[[torch.Tensor, list[dict[str, Any] | None]], float]:
    """(codes ``[N, K, T]`` of ``codec``, attribute dicts) -> mean attribute adherence under the oracle
    (NaN when no clip's adherence is defined)."""
    _, adherence = oracle_judges(load_oracle(oracle_dir))

    def golden(codes: torch.Tensor, attributes: list[dict[str, Any] | None]) -> float:
        values = adherence(CodedClips(codec, codes), attributes)
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")

    return golden
