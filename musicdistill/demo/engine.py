"""The model side of the merge-slider demo: loading the systems, checking requests, generating.

Systems in memory: ONE student model, whose weights :class:`musicdistill.demo.weight_dial.WeightDial`
sets in place to the merge at the chosen λ (λ = 0 the quality finetune, λ = 1 the diversity
finetune, both held once on the CPU), or, for a conditioned student (``run.conditioned``), the one
model sampled at the chosen diversity weight w (:class:`musicdistill.demo.diversity_dial.ConditionedDial`:
no weight changes); and optionally the CFG teacher (the base model) for comparison. A
request makes G variations of one prompt with each system, times the token sampling (where CFG's
second model row costs) and the decoding separately, and measures the batch's diversity as the mean
pairwise ``1 - cos`` of audio embeddings.

Embeddings come from the contrastive reward embedder when one is given (``--embedder``); without
one, a documented hand-made feature is used instead (:func:`spectral_embedding`). Nothing here
imports gradio; :mod:`musicdistill.demo.app` builds the page on top of :class:`DemoEngine`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from musicdistill.codec.factory import load_codec
from musicdistill.config import Config, section_from_dict
from musicdistill.demo.diversity_dial import ConditionedDial
from musicdistill.demo.run_folders import DemoPaths
from musicdistill.demo.weight_dial import WeightDial, endpoint_folders, mapped_endpoint
from musicdistill.generation.guidance import MAX_CFG_SCALE, is_guided
from musicdistill.generation.sampling import frames_for_duration, generate
from musicdistill.judges.diversity import pairwise_diversity
from musicdistill.judges.embedder import AudioEmbedder, embed_audio
from musicdistill.judges.pretrained_embedders import embedder_name, load_audio_embedder
from musicdistill.judges.spectral import spectral_embedding
from musicdistill.merging import config_differences, shared_base_hash
from musicdistill.model.loading import (
    LoadedGenerator,
    generator_from_state_dict,
    load_generator,
    resolve_codec_dir,
    text_encoder_name,
)
from musicdistill.model.text import build_text_encoder
from musicdistill.storage.checkpoint import MODEL_FILE, PROVENANCE_FILE, load_checkpoint

log = logging.getLogger(__name__)

MAX_VARIATIONS = 8
MAX_SEED = 2**31 - 1
MAX_TEMPERATURE = 3.0

#: ``(wav [N, samples], sample_rate) -> embeddings [N, E]``
EmbedFn = Callable[[torch.Tensor, int], torch.Tensor]


class DemoInputError(ValueError):
    """A demo request is invalid; the message is shown to the user as is."""


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLimits:
    """What a request may ask for; the page's widgets use the same bounds."""

    max_prompt_chars: int
    max_duration: float
    min_duration: float
    max_variations: int = MAX_VARIATIONS
    max_seed: int = MAX_SEED
    max_temperature: float = MAX_TEMPERATURE
    max_cfg_scale: float = MAX_CFG_SCALE


@dataclass(frozen=True)
class DemoRequest:
    """One validated request: G = ``num_variations`` samples of ``prompt`` per system."""

    prompt: str
    lam: float
    num_variations: int
    duration: float
    seed: int
    temperature: float
    compare_teacher: bool = False
    cfg_scale: float = 3.0


def _number(name: str, value: object) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DemoInputError(f"{name} is empty; enter a number")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DemoInputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise DemoInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DemoInputError(f"{name} must be a finite number, got {value!r}")
    return number


def _in_range(name: str, value: object, low: float, high: float, integer: bool = False) -> float:
    number = _number(name, value)
    if integer and not number.is_integer():
        raise DemoInputError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise DemoInputError(f"{name}={number:g} is out of range; it must lie in [{low:g}, {high:g}]")
    return number


def validate_request(
    limits: DemoLimits,
    prompt: object,
    lam: object,
    num_variations: object,
    duration: object,
    seed: object,
    temperature: object,
    compare_teacher: object = False,
    cfg_scale: object = 3.0,
) -> DemoRequest:
    """Check raw widget values against ``limits``; raises :class:`DemoInputError` naming field and range."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise DemoInputError("The prompt is empty; describe the music you want (or pick an example).")
    prompt = prompt.strip()
    if len(prompt) > limits.max_prompt_chars:
        raise DemoInputError(
            f"The prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}. Shorten it."
        )
    if not isinstance(compare_teacher, bool):
        raise DemoInputError(f"compare with the teacher must be true or false, got {compare_teacher!r}")
    return DemoRequest(
        prompt=prompt,
        lam=_in_range("λ", lam, 0.0, 1.0),
        num_variations=int(_in_range("variations", num_variations, 1, limits.max_variations, integer=True)),
        duration=_in_range("duration (s)", duration, limits.min_duration, limits.max_duration),
        seed=int(_in_range("seed", seed, 0, limits.max_seed, integer=True)),
        temperature=_in_range("temperature", temperature, 0.0, limits.max_temperature),
        compare_teacher=compare_teacher,
        cfg_scale=_in_range("CFG scale", cfg_scale, 0.0, limits.max_cfg_scale) if compare_teacher else 1.0,
    )


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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _load_teacher(
    teacher_dir: Path, student: LoadedGenerator, student_codec_dir: Path | None, device: torch.device
) -> LoadedGenerator:
    """The base model, sharing the student's text encoder and codec when it uses the same ones."""
    ckpt = load_checkpoint(teacher_dir)
    cfg = section_from_dict(Config, ckpt.config)
    if cfg.model.backbone == "musicgen":  # a pretrained MusicGen brings its own T5 (and EnCodec)
        shared = student.text_encoder if student.text_encoder.name == text_encoder_name(teacher_dir) else None
        return load_generator(teacher_dir, device, text_encoder=shared)
    model = generator_from_state_dict(cfg.model, ckpt.state_dict).to(device).eval()
    encoder = student.text_encoder if cfg.text == student.cfg.text else build_text_encoder(cfg.text, device)
    if encoder.dim != model.text_dim:
        raise ValueError(
            f"teacher {teacher_dir}: its text encoder {cfg.text.encoder!r} has width {encoder.dim} "
            f"but the generator was trained on width {model.text_dim}"
        )
    codec_dir = resolve_codec_dir(teacher_dir, ckpt.provenance)
    if codec_dir is None or not codec_dir.is_dir():
        raise FileNotFoundError(
            f"teacher checkpoint {teacher_dir} records no existing codec_dir ({codec_dir}), "
            "so its samples cannot be played; restore the codec folder next to it"
        )
    if student_codec_dir is not None and codec_dir.resolve() == student_codec_dir.resolve():
        codec = student.codec
    else:
        codec = load_codec(codec_dir)
    if (codec.num_codebooks, codec.cardinality) != (model.num_codebooks, model.cardinality):
        raise ValueError(
            f"teacher {teacher_dir}: codec {codec_dir} has {codec.num_codebooks} codebooks of "
            f"{codec.cardinality} entries but the generator expects {model.num_codebooks} of "
            f"{model.cardinality}"
        )
    return LoadedGenerator(model=model, text_encoder=encoder, codec=codec, cfg=cfg)


#: ``--dtype`` names
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast ``module``'s real floating parameters and buffers to ``dtype`` in place; complex buffers
    (the rotary table) keep their dtype, which ``Module.to`` would drop to real."""
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    for owner in module.modules():
        for key, buf in owner._buffers.items():
            if buf is not None and buf.is_floating_point() and buf.dtype != dtype:
                owner._buffers[key] = buf.to(dtype)
    return module


def load_engine(
    paths: DemoPaths,
    device: torch.device | str = "cpu",
    method: str = "lerp",
    force: bool = False,
    dtype: str = "fp32",
    time_limit: float | None = None,
) -> DemoEngine:
    """Load the student (quality weights), the dial's endpoints, the optional teacher and embedder.

    A request that samples longer than ``time_limit`` seconds is stopped. The student and the
    teacher run in ``dtype`` (``fp32``, ``bf16`` or ``fp16``); the dial keeps
    its endpoints on the CPU in that dtype. The two finetunes must share a base model (their
    provenance's ``base_hash``) unless ``force``; SLERP needs the teacher, which is that base.
    Raises FileNotFoundError / ValueError naming the folder and the fix.
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if paths.conditioned is not None:
        return _load_conditioned_engine(paths, device, dtype, time_limit)
    if paths.quality is None or paths.diversity is None:
        raise ValueError("the merge slider needs both --quality and --diversity (or a run with both)")
    if method == "slerp" and paths.teacher is None:
        raise ValueError(
            "--method slerp interpolates task vectors relative to the base model; pass it with --teacher"
        )
    student = load_generator(paths.quality, device)
    if student.codec is None:
        raise FileNotFoundError(
            f"quality checkpoint {paths.quality} records no codec_dir, so samples cannot be played"
        )
    quality, diversity = load_checkpoint(paths.quality), load_checkpoint(paths.diversity)
    shared_base_hash(quality, diversity, force)
    diffs = config_differences(quality, diversity)
    if diffs:
        log.warning(
            "quality and diversity configs differ (%s); the student uses the quality model's config",
            "; ".join(diffs[:5]),
        )
    teacher = None
    if paths.teacher is not None:
        student_codec_dir = resolve_codec_dir(paths.quality, quality.provenance)
        teacher = _load_teacher(paths.teacher, student, student_codec_dir, device)
        cast_floating(teacher.model, DTYPES[dtype])
    del quality, diversity  # read for their provenance and configs; the dial maps the weights
    cast_floating(student.model, DTYPES[dtype])
    mapped = {
        name: mapped_endpoint(folder / MODEL_FILE, DTYPES[dtype])
        for name, folder in endpoint_folders(paths, method)
    }
    dial = WeightDial(
        student.model,
        mapped["quality"],
        mapped["diversity"],
        method,
        mapped.get("base"),
        store_dtype=DTYPES[dtype],
        copy=False,
    )
    log.info("dial endpoints: %.1f MB, memory-mapped (%s)", dial.endpoint_bytes() / 1e6, dtype)
    embed, embedding_name = load_embed_fn(paths.embedder, device)
    engine = DemoEngine(student, dial, teacher, embed, embedding_name, paths, time_limit)
    engine.warm_up()
    return engine


def _load_conditioned_engine(
    paths: DemoPaths, device: torch.device, dtype: str, time_limit: float | None
) -> DemoEngine:
    """The engine for one conditioned student: its slider sets w; one decoder's weights in memory."""
    student = load_generator(paths.conditioned, device)
    if student.codec is None:
        raise FileNotFoundError(
            f"conditioned checkpoint {paths.conditioned} records no codec_dir, so samples cannot be played"
        )
    provenance = json.loads((paths.conditioned / PROVENANCE_FILE).read_text(encoding="utf-8"))
    dial_info = provenance.get("dial")
    if getattr(student.model, "dial", None) is None or not isinstance(dial_info, dict):
        raise ValueError(
            f"{paths.conditioned} is not a conditioned student (its model has no diversity dial, or its "
            "provenance.json records none); serve a merge with --quality and --diversity"
        )
    teacher = None
    if paths.teacher is not None:
        student_codec_dir = resolve_codec_dir(paths.conditioned, provenance)
        teacher = _load_teacher(paths.teacher, student, student_codec_dir, device)
        cast_floating(teacher.model, DTYPES[dtype])
    cast_floating(student.model, DTYPES[dtype])
    dial = ConditionedDial(student.model, float(dial_info.get("beta_max", 0.0)))
    embed, embedding_name = load_embed_fn(paths.embedder, device)
    engine = DemoEngine(student, dial, teacher, embed, embedding_name, paths, time_limit)
    engine.warm_up()
    return engine
