"""Sampling: next-token selection, the KV-cached decode loop with CFG, and ``generate``.

Everything random goes through an explicit ``torch.Generator``: the same seed and settings give the
same tokens. Shapes: B prompts, G samples per prompt, N = B·G rows (prompt-major: the G samples of a
prompt are consecutive), K codebooks, T frames, S = T + max(delays) decoding steps, V entries.

The decode loop feeds step s the tokens of step s - 1 (the special token at s = 0) for all K
codebooks at once; at steps outside a codebook's span of the delay pattern its token is forced to
the special token and its log-probability is dropped (see :mod:`musicdistill.model.delay`). With CFG
(scale ≠ 1) each step is one forward of 2N rows (conditional rows, then null rows), combined by
:func:`musicdistill.generation.guidance.apply_cfg` before temperature and truncation. On CUDA the native
generator runs the same loop in :mod:`musicdistill.generation.fast_decode` (static shapes, CUDA graphs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from musicdistill.generation import fast_decode
from musicdistill.generation.guidance import cfg_batch, combine_cfg_batch
from musicdistill.generation.next_token import (
    check_deadline,
    check_num_frames,
    draw_next_token,
    model_device,
)
from musicdistill.generation.spec import SamplingSpec
from musicdistill.model.delay import undo_delay, valid_mask
from musicdistill.model.dial import check_w
from musicdistill.model.generator import TokenGenerator
from musicdistill.model.text import TextCondition, TextEncoder
from musicdistill.progress import track

log = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    """Output of :func:`generate` for B prompts × G samples (prompt-major rows).

    ``codes [B·G, K, T]`` undelayed token ids; ``logprobs [B·G, K, T]`` float32 log-probabilities of
    the sampled tokens under the distribution they were drawn from (after CFG, temperature and
    top-k/top-p truncation; 0 under greedy decoding); ``audio [B·G, 1, samples]`` when a codec was
    given; ``prompts`` the B prompts; ``settings`` everything needed to reproduce the call.
    """

    codes: torch.Tensor
    logprobs: torch.Tensor
    audio: torch.Tensor | None
    prompts: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    def prompt_of(self, row: int) -> str:
        """The prompt that row ``row`` of ``codes`` was generated from."""
        return self.prompts[row // self.settings["num_samples"]]


# --------------------------------------------------------------------------------------------
# The decode loop
# --------------------------------------------------------------------------------------------


def sample_tokens(
    model: TokenGenerator,
    cond: TextCondition,
    num_frames: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    progress: bool = False,
    fast: bool | None = None,
    deadline: float | None = None,
    spec: SamplingSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample N sequences, one per condition row: -> (codes ``[N, K, T]``, logprobs ``[N, K, T]``).

    The sampling is ``spec`` when given (checked once by :class:`SamplingSpec`), else the four
    settings ``cfg_scale``, ``temperature``, ``top_k`` and ``top_p``.

    ``deadline`` (a ``time.perf_counter()`` value) stops the loop with TimeoutError at the first
    step that starts after it (the demo's request time limit).

    ``model`` is any generator with the interface of :mod:`musicdistill.model.generator`; it runs in eval
    mode for the call and gets its previous mode back. ``use_cache=False`` recomputes the whole prefix at every step (the slow
    reference path that tests compare against). ``fast`` picks :mod:`musicdistill.generation.fast_decode` (static
    KV cache, sampling on the device, CUDA graphs on CUDA; the native generator only): None uses it
    for a native generator on CUDA with ``use_cache``, True also on the CPU (eager), False never.
    Returned tensors are ordinary (not inference-mode) tensors, so they can feed a training forward
    (distillation).
    """
    if spec is None:
        spec = SamplingSpec(cfg_scale, temperature, top_k, top_p)
    spec = spec.for_cardinality(model.cardinality)
    check_num_frames(model, num_frames)
    use_fast = _use_fast_decode(model, fast, use_cache, spec)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if use_fast:
                seq, logps = fast_decode.decode(
                    model,
                    cond,
                    num_frames,
                    spec.temperature,
                    spec.top_k,
                    spec.top_p,
                    spec.cfg_scale,
                    generator,
                    progress,
                    deadline=deadline,
                )
            else:
                seq, logps = _decode(model, cond, num_frames, spec, generator, use_cache, progress, deadline)
    finally:
        model.train(was_training)
    return undo_delay(seq, model.delays).clone(), undo_delay(logps, model.delays).clone()


def _use_fast_decode(model: TokenGenerator, fast: bool | None, use_cache: bool, spec: SamplingSpec) -> bool:
    """Whether :func:`sample_tokens` runs :mod:`musicdistill.generation.fast_decode` (see its ``fast``
    argument; the fast decoder draws by the race only)."""
    if spec.draw != "race":
        if fast:
            raise ValueError(f"fast=True draws by the race only; draw={spec.draw!r} needs fast=None or False")
        return False
    if fast is not None and not isinstance(fast, bool):
        raise ValueError(f"fast={fast!r} must be None (automatic: CUDA only), True or False")
    if fast is None:
        return use_cache and fast_decode.supports(model) and model_device(model).type == "cuda"
    if fast and not (use_cache and fast_decode.supports(model)):
        raise ValueError(
            f"fast=True needs use_cache=True and the native generator (got use_cache={use_cache}, "
            f"{type(model).__name__}); use fast=None or False"
        )
    return fast


def _decode(
    model: TokenGenerator,
    cond: TextCondition,
    num_frames: int,
    spec: SamplingSpec,
    generator: torch.Generator | None,
    use_cache: bool,
    progress: bool,
    deadline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop itself; returns the delayed sequence ``[N, K, S]`` and its per-token log-probs."""
    device = model_device(model)
    cond = cond.to(device)
    n, k, special = len(cond), model.num_codebooks, model.special_token
    steps = num_frames + max(model.delays)
    guided = spec.guided
    rows_cond = cfg_batch(cond) if guided else cond
    rows = len(rows_cond)
    forced = ~valid_mask(k, num_frames, model.delays, device=device)  # [K, S]
    inputs = torch.full((rows, k, steps), special, dtype=torch.long, device=device)
    seq = torch.full((n, k, steps), special, dtype=torch.long, device=device)
    logps = torch.zeros(n, k, steps, dtype=torch.float32, device=device)
    cache = model.init_cache(rows_cond, steps) if use_cache else None
    for s in track(range(steps), desc="sampling", unit="step", enabled=progress, leave=False):
        check_deadline(deadline, s, steps)
        if cache is not None:
            logits = model.forward_step(inputs[:, :, s], cache, s)
        else:
            logits = model(inputs[:, :, : s + 1], rows_cond)[:, :, s]
        if guided:
            logits = combine_cfg_batch(logits, spec.cfg_scale)
        tokens, logp = draw_next_token(logits, spec, generator)
        tokens = tokens.masked_fill(forced[:, s], special)
        seq[:, :, s] = tokens
        logps[:, :, s] = logp
        if s + 1 < steps:
            inputs[:, :, s + 1] = tokens.repeat(rows // n, 1) if guided else tokens
    return seq, logps


# --------------------------------------------------------------------------------------------
# generate: prompts in, tokens (and audio) out
# --------------------------------------------------------------------------------------------


def frames_for_duration(duration: float, frame_rate: float) -> int:
    """Frames covering ``duration`` seconds at ``frame_rate`` Hz (rounded to the nearest frame)."""
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
        raise ValueError(f"duration={duration!r} must be a positive number of seconds")
    return max(1, round(duration * frame_rate))


def generate(
    model: TokenGenerator,
    prompts: Sequence[str] | str,
    num_samples: int = 1,
    duration: float = 4.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    cfg_scale: float = 3.0,
    seed: int = 0,
    codec=None,
    *,
    text_encoder: TextEncoder,
    frame_rate: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    deadline: float | None = None,
    draw: str = "race",
    w: float | None = None,
) -> GenerationResult:
    """Generate ``num_samples`` sequences for each prompt (prompt-major) and decode them if a codec is given.

    ``frame_rate`` (frames per second) defaults to ``codec.frame_rate``. Rows are decoded in chunks
    of ``batch_size`` (default: all at once) with one generator seeded by ``seed``; the output
    depends on (seed, settings, batch_size) only; ``draw`` is :class:`SamplingSpec`'s; ``w`` is a
    conditioned student's diversity weight (:mod:`musicdistill.model.dial`; None: w = 0). Raises
    ValueError naming any bad argument, and
    TimeoutError once ``deadline`` (a ``time.perf_counter()`` value) has passed.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1 (or None for all rows at once)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    spec = SamplingSpec(cfg_scale, temperature, top_k, top_p, draw).for_cardinality(model.cardinality)
    if frame_rate is None:
        if codec is None:
            raise ValueError("frame_rate is needed when no codec is given (frames per second of the tokens)")
        frame_rate = float(codec.frame_rate)
    num_frames = frames_for_duration(duration, frame_rate)
    steps = num_frames + max(model.delays)
    if steps > model.max_steps:
        longest = (model.max_steps - max(model.delays)) / frame_rate
        raise ValueError(
            f"duration={duration} s is {num_frames} frames + {max(model.delays)} delay steps, beyond the model's "
            f"context of {model.max_steps} steps (model.max_frames); it must lie in (0, {longest:g}] s"
        )
    cond = text_encoder.encode(prompts).with_dial(None if w is None else check_w(w))
    cond = cond.repeat_interleave(num_samples)
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = len(cond)
    chunk = batch_size or rows
    codes, logprobs = [], []
    for start in range(0, rows, chunk):
        c, lp = sample_tokens(
            model,
            cond.select(slice(start, start + chunk)),
            num_frames,
            spec=spec,
            generator=generator,
            progress=progress,
            deadline=deadline,
        )
        codes.append(c)
        logprobs.append(lp)
    codes_t = torch.cat(codes)
    log.debug(
        "generated %d x %d frames (cfg %.3g, temperature %.3g, seed %d)",
        rows,
        num_frames,
        spec.cfg_scale,
        spec.temperature,
        seed,
    )
    audio = _decode_audio(codec, codes_t) if codec is not None else None
    settings = {
        "num_samples": num_samples,
        "duration": float(duration),
        "frame_rate": frame_rate,
        "num_frames": num_frames,
        "temperature": spec.temperature,
        "top_k": spec.top_k,
        "top_p": spec.top_p,
        "cfg_scale": spec.cfg_scale,
        "seed": seed,
        "batch_size": chunk,
    }
    if w is not None:
        settings["w"] = float(w)
    return GenerationResult(
        codes=codes_t, logprobs=torch.cat(logprobs), audio=audio, prompts=prompts, settings=settings
    )


def _decode_audio(codec, codes: torch.Tensor) -> torch.Tensor:
    """``codec.decode(codes [N, K, T])`` as ``[N, 1, samples]`` float32 on the CPU."""
    with torch.inference_mode():
        audio = codec.decode(codes)
    audio = torch.as_tensor(audio).float().cpu()
    if audio.dim() == 2:
        audio = audio.unsqueeze(1)
    return audio.clone()
