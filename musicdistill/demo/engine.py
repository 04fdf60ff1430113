"""The model side of the merge-slider demo: generating a request with the systems in memory.

Systems in memory: ONE student model, whose weights :class:`musicdistill.demo.weight_dial.WeightDial`
sets in place to the merge at the chosen λ (λ = 0 the quality finetune, λ = 1 the diversity
finetune, both held once on the CPU), or, for a conditioned student (``run.conditioned``), the one
model sampled at the chosen diversity weight w (:class:`musicdistill.demo.diversity_dial.ConditionedDial`:
no weight changes); and optionally the CFG teacher (the base model) for comparison. A
request (:mod:`musicdistill.demo.requests`) makes G variations of one prompt with each system, times
the token sampling (where CFG's second model row costs) and the decoding separately, and measures
the batch's diversity as the mean pairwise ``1 - cos`` of audio embeddings.

Embeddings come from the contrastive reward embedder when one is given (``--embedder``); without
one, a documented hand-made feature is used instead (:func:`spectral_embedding`). Loading the
systems from checkpoints is :mod:`musicdistill.demo.loading`. Nothing here imports gradio;
:mod:`musicdistill.demo.app` builds the page on top of :class:`DemoEngine`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from musicdistill.demo.diversity_dial import ConditionedDial
from musicdistill.demo.requests import DemoInputError, DemoLimits, DemoRequest
from musicdistill.demo.run_folders import DemoPaths
from musicdistill.demo.weight_dial import WeightDial
from musicdistill.generation.guidance import is_guided
from musicdistill.generation.sampling import frames_for_duration, generate
from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.embedder import AudioEmbedder, embed_audio
from musicdistill.judges.pretrained_embedders import embedder_name, load_audio_embedder
from musicdistill.judges.spectral import spectral_embedding
from musicdistill.model.loading import LoadedGenerator

log = logging.getLogger(__name__)


#: ``(wav [N, samples], sample_rate) -> embeddings [N, E]``
EmbedFn = Callable[[torch.Tensor, int], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def mean_pairwise_diversity(embeddings: torch.Tensor) -> float | None:
    """Mean of ``1 - cos(e_i, e_j)`` over all pairs i < j of ``embeddings [N, E]``; None when N < 2."""
    if embeddings.shape[0] < 2:
        return None
    return float(pairwise_diversity(embeddings.float()[None])[0])


def load_embed_fn(embedder_dir: Path | None, device: torch.device) -> tuple[EmbedFn, str]:
    """The embedding used for the diversity read-out and its description."""
    if embedder_dir is None:
        return spectral_embedding, "hand-made log-mel features (envelope + variation; no embedder given)"
    embedder = load_audio_embedder(embedder_dir, device=device)
    if isinstance(embedder, AudioEmbedder):
        return (
            lambda wav, sr: embed_audio(embedder, wav.to(device), sr)
        ), f"the reward embedder {embedder_dir}"
    return embedder.embed_audio, f"the reward embedder {embedder_dir}: {embedder_name(embedder)}"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class SystemOutput:
    """G variations from one system: ``audio [G, samples]`` float32 in [-1, 1] on the CPU."""

    name: str
    description: str
    audio: np.ndarray
    sample_rate: int
    num_frames: int
    rows_per_sample: int
    sampling_seconds: float
    decode_seconds: float
    diversity: float | None

    @property
    def frames_per_second(self) -> float:
        """Token frames sampled per second of wall clock (all G variations together)."""
        return self.audio.shape[0] * self.num_frames / max(self.sampling_seconds, 1e-9)


@dataclass
class DemoResult:
    """A request and what each system produced (the student first, then the teacher if asked)."""

    request: DemoRequest
    systems: list[SystemOutput]
    embedding: str


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_duration(loaded: LoadedGenerator) -> float:
    """Longest request (seconds) that fits the model's context at its codec's frame rate."""
    model = loaded.model
    return (model.max_steps - max(model.delays)) / float(loaded.codec.frame_rate)


class DemoEngine:
    """The systems in memory and the generation they serve; one instance per demo.

    ``student`` is the single model whose weights ``dial`` sets to the merge at λ (it starts with
    the quality weights, λ = 0), or a conditioned student that ``dial`` samples at w; ``teacher`` the optional base model sampled with CFG (it may share
    the student's text encoder and codec). Model work, dial moves included, is serialised by one
    lock, so a queue that lets several requests run at once stays correct.
    """

    def __init__(
        self,
        student: LoadedGenerator,
        dial: WeightDial | ConditionedDial,
        teacher: LoadedGenerator | None = None,
        embed: EmbedFn = spectral_embedding,
        embedding_name: str = "hand-made log-mel features",
        paths: DemoPaths | None = None,
        time_limit: float | None = None,
    ) -> None:
        for name, loaded in (("student", student), ("teacher", teacher)):
            if loaded is not None and loaded.codec is None:
                raise ValueError(
                    f"the {name} has no codec, so its tokens cannot be played; give it a codec_dir"
                )
        if dial.model is not student.model:
            raise ValueError("the dial must set the student's own model")
        self.student, self.dial, self.teacher = student, dial, teacher
        self.embed, self.embedding_name, self.paths = embed, embedding_name, paths
        self.time_limit = time_limit  # seconds a request may sample (None: no limit)
        self.device = next(student.model.parameters()).device
        self._model_lock = threading.Lock()
        durations = [max_duration(m) for m in (student, teacher) if m is not None]
        frame_rate = float(student.codec.frame_rate)
        self.limits = DemoLimits(
            max_prompt_chars=student.text_encoder.max_prompt_chars,
            max_duration=math.floor(min(durations) * 10) / 10,
            min_duration=math.ceil(10 / frame_rate) / 10,  # at least one frame, on the 0.1 s grid
        )
        if self.limits.max_duration < self.limits.min_duration:
            raise ValueError(
                f"the model's context holds only {min(durations):.3f} s of audio; nothing to demo"
            )
        self.default_duration = min(
            max(student.cfg.generate.duration, self.limits.min_duration), self.limits.max_duration
        )

    @property
    def loaded_lam(self) -> float | None:
        """λ of the weights currently in the student model (None before the first request)."""
        return self.dial.lam

    def prepare(self, lam: float) -> float:
        """Set the weights to λ ahead of the next request (the slider moved); returns the seconds it
        took. Waits for a running request, whose weights it would otherwise change."""
        with self._model_lock:
            return self.dial.set(lam)

    def _student_at(self, lam: float) -> torch.nn.Module:
        """The student with the merged weights at ``lam`` (call with the model lock held)."""
        self.dial.set(lam)
        return self.student.model

    def run(self, request: DemoRequest) -> DemoResult:
        """Generate ``request.num_variations`` samples with the student (and the teacher if asked)."""
        if request.compare_teacher and self.teacher is None:
            raise DemoInputError("No CFG teacher is loaded; restart the demo with --teacher (or --run).")
        with self._model_lock:
            deadline = None if self.time_limit is None else time.perf_counter() + self.time_limit
            model = self._student_at(request.lam)
            outputs = [
                self._sample(
                    "student",
                    self.dial.describe(),
                    model,
                    self.student,
                    request,
                    cfg_scale=1.0,
                    deadline=deadline,
                    w=self.dial.w,
                )
            ]
            if request.compare_teacher:
                outputs.append(
                    self._sample(
                        "CFG teacher",
                        f"base, CFG {request.cfg_scale:g}",
                        self.teacher.model,
                        self.teacher,
                        request,
                        cfg_scale=request.cfg_scale,
                        deadline=deadline,
                    )
                )
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return DemoResult(request=request, systems=outputs, embedding=self.embedding_name)

    def _sample(
        self,
        name: str,
        description: str,
        model: torch.nn.Module,
        loaded: LoadedGenerator,
        request: DemoRequest,
        cfg_scale: float,
        deadline: float | None = None,
        w: float | None = None,
    ) -> SystemOutput:
        codec = loaded.codec
        loaded.text_encoder.encode([request.prompt])  # cached now, so the timing below is token sampling only
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            result = self._generate(model, loaded, request, cfg_scale, deadline, w)
        except TimeoutError:
            raise DemoInputError(
                f"The request ran past the demo's time limit of {self.time_limit:g} s and was stopped; "
                "ask for fewer variations or a shorter clip."
            ) from None
        _synchronize(self.device)
        sampled = time.perf_counter()
        with torch.inference_mode():
            audio = torch.as_tensor(codec.decode(result.codes.cpu())).float().cpu()
        decoded = time.perf_counter()
        audio = audio.reshape(audio.shape[0], -1).clamp(-1.0, 1.0)  # [G, 1, samples] -> [G, samples]
        with torch.inference_mode():
            diversity = mean_pairwise_diversity(self.embed(audio, codec.sample_rate).cpu())
        log.info(
            "%s: %d x %d frames in %.2f s (+%.2f s decoding), diversity %s",
            name,
            request.num_variations,
            result.settings["num_frames"],
            sampled - start,
            decoded - sampled,
            diversity,
        )
        return SystemOutput(
            name=name,
            description=description,
            audio=audio.numpy(),
            sample_rate=int(codec.sample_rate),
            num_frames=int(result.settings["num_frames"]),
            rows_per_sample=2 if is_guided(cfg_scale) else 1,
            sampling_seconds=sampled - start,
            decode_seconds=decoded - sampled,
            diversity=diversity,
        )

    def _generate(
        self,
        model: torch.nn.Module,
        loaded: LoadedGenerator,
        request: DemoRequest,
        cfg_scale: float,
        deadline: float | None,
        w: float | None = None,
    ):
        """The request's tokens (no audio yet), a conditioned student's at ``w``; raises TimeoutError
        once ``deadline`` has passed."""
        settings = loaded.cfg.generate
        return generate(
            model,
            [request.prompt],
            num_samples=request.num_variations,
            duration=request.duration,
            temperature=request.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            cfg_scale=cfg_scale,
            seed=request.seed,
            codec=None,
            text_encoder=loaded.text_encoder,
            frame_rate=float(loaded.codec.frame_rate),
            deadline=deadline,
            w=w,
        )

    def warm_up(self) -> None:
        """One short request per system, so the first user's timings do not include one-off start-up costs."""
        request = DemoRequest(
            prompt="warm-up",
            lam=0.0,
            num_variations=2,
            duration=self.limits.min_duration,
            seed=0,
            temperature=1.0,
            compare_teacher=self.teacher is not None,
        )
        limit, self.time_limit = self.time_limit, None  # start-up costs are not a request's
        try:
            self.run(request)
        finally:
            self.time_limit = limit

    def num_frames(self, duration: float) -> int:
        """Frames a request of ``duration`` seconds samples."""
        return frames_for_duration(duration, float(self.student.codec.frame_rate))
