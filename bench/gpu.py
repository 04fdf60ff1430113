"""GPU benchmark of issue #10: sampling and one distillation step, against transformers' MusicGen.

Everything has random weights in musicgen-small's shape (decoder: 24 layers, width 1024, 16 heads,
FFN 4096, 4 codebooks of 2048; T5 width 768 with 12 text tokens per prompt; EnCodec 32 kHz), so
nothing is downloaded. Sampling settings everywhere: 250 frames, temperature 1, top-k 250, CFG scale
3 where guided. One run measures, in this order (a global time guard skips what would not finish in
``--budget-s`` and says so):

1. the card's bf16 matrix rate (8192^3 products, mean of 10 after 3 warm-ups);
2. our native generator (``musicdistill.model.generator``, fp16) through ``sample_tokens`` with the fast
   decoder (static KV cache, CUDA graphs, sampling on the GPU) at batch 1, 8, 32, 128, 256, with and
   without CFG; the reference loop (``fast=False``) at batch 1 and 32; greedy agreement of the two;
3. transformers' ``MusicgenForConditionalGeneration.generate`` (the baseline, fp16) at batch 1, 8, 32
   with and without CFG. As in the issue's figures, its time includes T5 encoding and EnCodec
   decoding; the EnCodec decode of the same batch is also timed alone and reported beside it;
4. the largest batch whose peak memory (weights + decoder state + step temporaries) fits in
   ``--budget-gb`` (default 40) with and without CFG, found from two probe batches by a linear fit
   and checked by running it, with its frames per second;
5. one distillation step as ``musicdistill.training.distill`` runs it (32 prompts x G = 2 rollouts of 250
   frames, fp32 student and teacher under bf16 autocast, reverse KL + beta = 15 diversity REINFORCE,
   AdamW), with a device sync closing each phase: rollout, teacher, reward (EnCodec decode + an
   untrained reward embedder), student; the teacher's and student's matmul FLOPs
   (``torch.utils.flop_counter``, counted on one prompt and scaled) over their phase times give the
   achieved TFLOP/s. The reward needs librosa and soundfile (carry them as wheels; without them the
   reward phase is skipped and reported so);
6. ``musicdistill.training.distill.distill`` for 3 steps, whole and FSDP-sharded on a one-process
   group (``bench/fsdp_phase.py``), each with its time per step, its peak memory and the memory
   plan's figure (``musicdistill plan``);
7. our sampler loop on the baseline's own decoder through ``MusicgenBackbone`` (transformers' layers
   and DynamicCache, run eagerly: not graph-captured) at batch 1, 8, 32, 128, 256 with and without CFG.

Frames per second = batch x frames / seconds (best of the timed runs, device-synchronised, after a
warm-up that also captures the graphs). Peak memory is ``torch.cuda.max_memory_allocated``. The JSON
is rewritten after every section (so a run cut short still leaves its results) and a table is
printed last. ``--smoke`` runs every section at tiny sizes on the CPU in seconds (eager: no graphs).

Usage: python bench/gpu.py [--smoke] [--out FILE] [--budget-s 420] [--budget-gb 40] [--sections a,b]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from musicdistill.config import DistillConfig, ModelConfig  # noqa: E402
from musicdistill.generation import fast_decode  # noqa: E402
from musicdistill.generation.guidance import guided_forward  # noqa: E402
from musicdistill.generation.sampling import sample_tokens  # noqa: E402
from musicdistill.model.delay import teacher_forcing_batch  # noqa: E402
from musicdistill.model.generator import build_generator  # noqa: E402
from musicdistill.model.text import TextCondition  # noqa: E402
from musicdistill.runtime import autocast  # noqa: E402
from musicdistill.training.distill import frozen_copy, reward_terms, student_rollouts  # noqa: E402
from musicdistill.training.losses import combined_loss, reinforce_loss, sequence_logprob, token_divergence  # noqa: E402

SECTIONS = ("matmul", "native", "baseline", "largest", "distill", "fsdp", "adapter")
CFG = 3.0


@dataclass(frozen=True)
class Shape:
    """Model sizes and the measurement plan."""

    name: str
    dim: int
    layers: int
    heads: int
    ffn: int
    codebooks: int
    cardinality: int
    text_tokens: int
    frames: int
    top_k: int
    t5: dict[str, Any]
    encodec: dict[str, Any]
    batches: tuple[int, ...]
    baseline_batches: tuple[int, ...]
    reference_batches: tuple[int, ...]
    probe_batches: tuple[int, int]
    distill_prompts: int
    matmul_n: int
    repeats: int
    estimates: dict[str, float] = field(default_factory=dict)  # first-run seconds the guard assumes

    @property
    def text_dim(self) -> int:
        return int(self.t5["d_model"])


FULL = Shape(
    name="musicgen-small",
    dim=1024,
    layers=24,
    heads=16,
    ffn=4096,
    codebooks=4,
    cardinality=2048,
    text_tokens=12,
    frames=250,
    top_k=250,
    t5=dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
    encodec=dict(
        sampling_rate=32000,
        codebook_size=2048,
        num_filters=64,
        hidden_size=128,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_dim=128,
        normalize=False,
        use_causal_conv=False,
        audio_channels=1,
    ),
    batches=(1, 8, 32, 128, 256),
    baseline_batches=(1, 8, 32),
    reference_batches=(1, 32),
    probe_batches=(64, 128),
    distill_prompts=32,
    matmul_n=8192,
    repeats=2,
    estimates={"native": 3.0, "reference": 4.0, "baseline": 20.0, "adapter": 20.0, "distill": 40.0},
)
SMOKE = Shape(
    name="tiny (smoke)",
    dim=64,
    layers=2,
    heads=4,
    ffn=128,
    codebooks=2,
    cardinality=64,
    text_tokens=6,
    frames=20,
    top_k=50,
    t5=dict(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    encodec=dict(
        sampling_rate=16000,
        codebook_size=64,
        num_filters=4,
        hidden_size=16,
        upsampling_ratios=[8, 8],
        target_bandwidths=[3.0],
        codebook_dim=16,
        num_lstm_layers=1,
        audio_channels=1,
    ),
    batches=(1, 2, 4),
    baseline_batches=(1, 2),
    reference_batches=(1,),
    probe_batches=(2, 4),
    distill_prompts=2,
    matmul_n=256,
    repeats=1,
    estimates={"native": 1.0, "reference": 1.0, "baseline": 1.0, "adapter": 1.0, "distill": 5.0},
)


# --------------------------------------------------------------------------------------------
# Infrastructure: time guard, device timing, memory, results
# --------------------------------------------------------------------------------------------


class Guard:
    """Skips measurements that would not finish inside the run's time budget (and records each skip)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.start = budget_s, time.perf_counter()
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, estimate_s: float) -> bool:
        left = self.budget_s - self.elapsed()
        if estimate_s <= left:
            return True
        self.skipped.append(f"{what}: time guard ({left:.0f} s left, needs about {estimate_s:.0f} s)")
        print(f"SKIPPED {self.skipped[-1]}", flush=True)
        return False


class Estimates:
    """Seconds one timed run of each family is expected to take, updated from the runs measured so far."""

    def __init__(self, first: dict[str, float]) -> None:
        self.last: dict[str, tuple[float, int]] = {k: (v, 1) for k, v in first.items()}

    def run_s(self, family: str, rows: int) -> float:
        seconds, at_rows = self.last[family]
        return seconds * max(1.0, rows / at_rows) ** 0.8

    def record(self, family: str, seconds: float, rows: int) -> None:
        self.last[family] = (seconds, rows)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """(best seconds of ``repeats`` synchronised runs of ``fn`` after one warm-up, peak GB during them)."""
    (warmup or fn)()
    sync(device)
    reset_peak(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, peak_gb(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), or the process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def allocated_gb(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0


def free_memory(device: torch.device, *models: torch.nn.Module) -> None:
    for model in models:
        fast_decode.release(model)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def weights_gb(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9


class Results:
    """The JSON document, rewritten after every section."""

    def __init__(self, path: Path, meta: dict[str, Any], guard: Guard) -> None:
        self.path, self.guard = path, guard
        self.doc: dict[str, Any] = {
            "meta": meta,
            "native": [],
            "reference": [],
            "baseline": [],
            "adapter": [],
            "largest": [],
            "skipped": guard.skipped,
            "errors": [],
        }

    @contextlib.contextmanager
    def attempt(self, what: str, device: torch.device, *models: torch.nn.Module) -> Iterator[None]:
        """Run one measurement; a failure is recorded (and its memory freed) instead of ending the run."""
        try:
            yield
        except Exception as exc:  # one failed measurement must not lose the rest of the run
            traceback.print_exc()
            self.doc["errors"].append(f"{what}: {type(exc).__name__}: {exc}")
            print(f"ERROR {self.doc['errors'][-1]}", flush=True)
            free_memory(device, *models)

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.doc[section].append(row)
        print(json.dumps({"section": section, **{k: _round(v) for k, v in row.items()}}), flush=True)

    def peak_gb(self) -> float:
        """The largest peak any measurement recorded (each resets the allocator's peak before it runs)."""
        rows = [r for s in ("native", "reference", "baseline", "adapter") for r in self.doc[s]]
        rows += [self.doc["distill"]] if "distill" in self.doc else []
        return max((r["peak_gb"] for r in rows if "peak_gb" in r), default=0.0)

    def save(self) -> None:
        self.doc["meta"]["elapsed_s"] = round(self.guard.elapsed(), 1)
        self.doc["meta"]["peak_gb"] = self.peak_gb()
        self.doc["targets"] = targets(self.doc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        os.replace(tmp, self.path)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


# --------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------


def build_musicgen(shape: Shape, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``MusicgenForConditionalGeneration`` with random weights in ``shape`` (as the issue's anchor builds it)."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    v = shape.cardinality
    dec = MusicgenDecoderConfig(
        vocab_size=v,
        hidden_size=shape.dim,
        num_hidden_layers=shape.layers,
        ffn_dim=shape.ffn,
        num_attention_heads=shape.heads,
        num_codebooks=shape.codebooks,
        pad_token_id=v,
        bos_token_id=v,
        max_position_embeddings=2048,
    )
    dec.decoder_start_token_id = v
    cfg = MusicgenConfig(
        text_encoder=T5Config(**shape.t5).to_dict(),
        audio_encoder=EncodecConfig(**shape.encodec).to_dict(),
        decoder=dec.to_dict(),
    )
    with torch.device(device):
        model = MusicgenForConditionalGeneration(cfg)
    return model.to(dtype).eval()


def native_config(shape: Shape) -> ModelConfig:
    steps = shape.frames + shape.codebooks - 1
    return ModelConfig(
        dim=shape.dim,
        layers=shape.layers,
        heads=shape.heads,
        ff_mult=shape.ffn // shape.dim,
        delays=list(range(shape.codebooks)),
        max_frames=max(256, steps),
    )


def build_native(shape: Shape, device: torch.device) -> torch.nn.Module:
    """Our generator in ``shape``, float32 (call ``.half()``, never ``.to(dtype)``, which drops the rotary table)."""
    torch.manual_seed(0)
    with torch.device(device):
        return build_generator(native_config(shape), shape.codebooks, shape.cardinality, shape.text_dim)


@dataclass
class Prompts:
    """Random T5 token ids ``[B, S]`` and the random T5's states for them, for the largest batch needed."""

    ids: torch.Tensor
    states: torch.Tensor

    def cond(self, batch: int, dtype: torch.dtype) -> TextCondition:
        if batch > self.ids.shape[0]:
            reps = math.ceil(batch / self.ids.shape[0])
            return TextCondition(
                self.states.repeat(reps, 1, 1)[:batch].to(dtype),
                torch.ones(batch, self.ids.shape[1], dtype=torch.bool, device=self.ids.device),
            )
        return TextCondition(
            self.states[:batch].to(dtype),
            torch.ones(batch, self.ids.shape[1], dtype=torch.bool, device=self.ids.device),
        )


def make_prompts(musicgen: torch.nn.Module, shape: Shape, rows: int, device: torch.device) -> Prompts:
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, shape.t5["vocab_size"], (rows, shape.text_tokens), generator=g).to(device)
    with torch.inference_mode():
        states = musicgen.text_encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    return Prompts(ids=ids, states=states.float().clone())


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def bench_matmul(shape: Shape, device: torch.device) -> dict[str, Any]:
    n = shape.matmul_n
    dtype = torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - t0) / reps
    return {"n": n, "dtype": "bfloat16", "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}


def sample_row(
    model,
    prompts: Prompts,
    shape: Shape,
    device: torch.device,
    batch: int,
    cfg_scale: float,
    fast: bool,
    repeats: int,
    dtype: torch.dtype,
) -> dict[str, Any]:
    cond = prompts.cond(batch, dtype)
    generator = torch.Generator(device=device).manual_seed(0)

    def run():
        codes, _ = sample_tokens(
            model,
            cond,
            shape.frames,
            temperature=1.0,
            top_k=shape.top_k,
            cfg_scale=cfg_scale,
            generator=generator,
            fast=fast,
        )
        if codes.shape != (batch, shape.codebooks, shape.frames):
            raise RuntimeError(f"sample_tokens returned codes of shape {tuple(codes.shape)}")

    before = allocated_gb(device)
    t0 = time.perf_counter()
    seconds, peak = timed(run, device, repeats)
    steps = shape.frames + shape.codebooks - 1
    return {
        "batch": batch,
        "cfg_scale": cfg_scale,
        "frames": shape.frames,
        "seconds": seconds,
        "fps": batch * shape.frames / seconds,
        "ms_per_step": 1e3 * seconds / steps,
        "peak_gb": peak,
        "state_gb": peak - before,
        "wall_incl_warmup_s": time.perf_counter() - t0,
    }


def bench_native(native, prompts, shape, device, dtype, guard, est, results) -> None:
    for batch in shape.batches:
        for cfg_scale in (1.0, CFG):
            rows = batch * (2 if cfg_scale != 1.0 else 1)
            what = f"native fast batch {batch} cfg {cfg_scale:g}"
            if not guard.allows(what, est.run_s("native", rows) * (shape.repeats + 1) + 1.0):
                continue
            with results.attempt(what, device, native):
                row = sample_row(native, prompts, shape, device, batch, cfg_scale, True, shape.repeats, dtype)
                row["graphs"] = uses_graphs(native)  # no reference kept: release() must free the decoder
                results.add("native", row)
                est.record("native", row["seconds"], rows)
            free_memory(device, native)
    for batch in shape.reference_batches:
        for cfg_scale in (1.0, CFG):
            rows = batch * (2 if cfg_scale != 1.0 else 1)
            what = f"native reference batch {batch} cfg {cfg_scale:g}"
            if not guard.allows(what, 2 * est.run_s("reference", rows)):
                continue
            with results.attempt(what, device, native):
                row = sample_row(native, prompts, shape, device, batch, cfg_scale, False, 1, dtype)
                results.add("reference", row)
                est.record("reference", row["seconds"], rows)
    if guard.allows("greedy agreement", 2 * est.run_s("reference", 8)):
        with results.attempt("greedy agreement", device, native):
            results.doc["greedy_agreement"] = greedy_agreement(native, prompts, shape, dtype)
            print(json.dumps({"greedy_agreement": results.doc["greedy_agreement"]}), flush=True)
    free_memory(device, native)


def uses_graphs(model: torch.nn.Module) -> bool:
    decoder = fast_decode.cached_decoder(model)
    return bool(decoder is not None and decoder.graphs)


def greedy_agreement(native, prompts, shape, dtype) -> dict[str, Any]:
    """Greedy tokens of the fast decoder against the reference loop, batch 4 with CFG, in the bench dtype.

    In float32 the two agree token for token (tests/generation/test_fast_decode.py); in fp16 the masked full-window
    attention and the sliced one round differently, so a near-tie can flip a token and the continuation.
    """
    cond = prompts.cond(4, dtype)
    fast, _ = sample_tokens(native, cond, shape.frames, temperature=0.0, cfg_scale=CFG, fast=True)
    ref, _ = sample_tokens(native, cond, shape.frames, temperature=0.0, cfg_scale=CFG, fast=False)
    equal = fast == ref
    differs = (~equal).flatten(1).any(0).nonzero()
    first = None
    if differs.numel():
        first = int(differs[0]) % shape.frames
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "batch": 4,
        "cfg_scale": CFG,
        "equal_fraction": float(equal.float().mean()),
        "first_differing_frame": first,
    }


def bench_baseline(musicgen, prompts, shape, device, guard, est, results) -> None:
    for batch in shape.baseline_batches:
        for cfg_scale in (1.0, CFG):
            what = f"baseline batch {batch} cfg {cfg_scale:g}"
            if not guard.allows(what, est.run_s("baseline", 1) * 1.2 + 2):
                continue
            with results.attempt(what, device):
                results.add("baseline", baseline_row(musicgen, prompts, shape, device, batch, cfg_scale))
                est.record("baseline", results.doc["baseline"][-1]["seconds"], 1)


def baseline_row(musicgen, prompts, shape, device, batch: int, cfg_scale: float) -> dict[str, Any]:
    steps = shape.frames + shape.codebooks - 1
    ids = prompts.ids[:batch]
    kw = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        top_k=shape.top_k,
        guidance_scale=cfg_scale,
        max_new_tokens=steps,
        min_new_tokens=steps,
    )
    out: dict[str, torch.Tensor] = {}

    def run():
        with torch.inference_mode():
            out["audio"] = musicgen.generate(**kw)

    def warmup():
        with torch.inference_mode():
            musicgen.generate(**{**kw, "max_new_tokens": 8, "min_new_tokens": 8})

    seconds, peak = timed(run, device, 1, warmup)
    frames = out["audio"].shape[-1] // math.prod(shape.encodec["upsampling_ratios"])
    decode_s = time_encodec_decode(musicgen, shape, device, batch, frames)
    return {
        "batch": batch,
        "cfg_scale": cfg_scale,
        "frames": frames,
        "seconds": seconds,
        "fps": batch * frames / seconds,
        "encodec_decode_s": decode_s,
        "fps_without_decode": batch * frames / max(seconds - decode_s, 1e-9),
        "peak_gb": peak,
    }


def time_encodec_decode(musicgen, shape, device, batch: int, frames: int) -> float:
    codes = torch.randint(0, shape.cardinality, (1, batch, shape.codebooks, frames), device=device)

    def run():
        with torch.inference_mode():
            musicgen.audio_encoder.decode(codes, [None] * batch)

    return timed(run, device, 1)[0]


def bench_largest(native, prompts, shape, device, dtype, budget_gb, guard, est, results) -> None:
    """Largest batch within ``budget_gb`` (weights + everything one sampling call allocates), per CFG setting."""
    for cfg_scale in (1.0, CFG):
        with results.attempt(f"largest batch cfg {cfg_scale:g}", device, native):
            largest_row(native, prompts, shape, device, dtype, budget_gb, cfg_scale, guard, est, results)


def largest_row(native, prompts, shape, device, dtype, budget_gb, cfg_scale, guard, est, results) -> None:
    w_gb = weights_gb(native)
    factor = 2 if cfg_scale != 1.0 else 1
    probes = []
    for batch in shape.probe_batches:
        if not guard.allows(
            f"largest batch probe {batch} cfg {cfg_scale:g}", 2 * est.run_s("native", batch * factor) + 1
        ):
            return
        probes.append((batch, memory_of_run(native, prompts, shape, device, dtype, batch, cfg_scale)))
    (b1, m1), (b2, m2) = probes
    per_batch = (m2 - m1) / (b2 - b1)
    fixed = m1 - per_batch * b1
    batch = int((budget_gb - w_gb - fixed) / per_batch) // 8 * 8
    row: dict[str, Any] = {
        "cfg_scale": cfg_scale,
        "budget_gb": budget_gb,
        "weights_gb": w_gb,
        "gb_per_batch_row": per_batch,
        "fixed_gb": fixed,
        "predicted_batch": batch,
    }
    for _ in range(2):
        if batch < 1:
            break
        if not guard.allows(
            f"largest batch {batch} cfg {cfg_scale:g}", 2 * est.run_s("native", batch * factor) + 2
        ):
            break
        try:
            run = sample_row(native, prompts, shape, device, batch, cfg_scale, True, 1, dtype)
        except torch.cuda.OutOfMemoryError:
            free_memory(device, native)
            row["out_of_memory_at"] = batch
            batch = int(batch * 0.9) // 8 * 8
            continue
        state = (
            run["state_gb"]
            if device.type == "cuda"
            else fast_decode.cached_decoder(native).state_bytes() / 1e9
        )
        row.update(
            batch=batch,
            fps=run["fps"],
            seconds=run["seconds"],
            total_gb=w_gb + state,
            measured="cuda allocator" if device.type == "cuda" else "decoder buffers (CPU estimate)",
        )
        est.record("native", run["seconds"], batch * factor)
        free_memory(device, native)
        if w_gb + state <= budget_gb:
            break
        batch = int(batch * 0.95) // 8 * 8  # the fit was optimistic: back off once
    results.add("largest", row)


def memory_of_run(native, prompts, shape, device, dtype, batch: int, cfg_scale: float) -> float:
    """GB one fast sampling call allocates beyond what was resident (on the CPU: the decoder's buffers)."""
    free_memory(device, native)
    cond = prompts.cond(batch, dtype)
    before = allocated_gb(device)
    reset_peak(device)
    sample_tokens(
        native,
        cond,
        shape.frames,
        top_k=shape.top_k,
        cfg_scale=cfg_scale,
        fast=True,
        generator=torch.Generator(device=device).manual_seed(0),
    )
    sync(device)
    if device.type == "cuda":
        used = peak_gb(device) - before
    else:
        used = fast_decode.cached_decoder(native).state_bytes() / 1e9
    free_memory(device, native)
    return used


# --------------------------------------------------------------------------------------------
# One distillation step
# --------------------------------------------------------------------------------------------


def build_reward(musicgen, shape: Shape, device: torch.device) -> tuple[Callable | None, str]:
    """The reward of a MusicGen run: EnCodec (fp32 copy of the baseline's) decode + an untrained embedder."""
    try:
        from musicdistill.codec.encodec_adapters import HFEncodecCodec
        from musicdistill.config import CodecConfig, EmbedConfig
        from musicdistill.judges.embedder import build_embedder
        from musicdistill.judges.judging import CodedClips, reward_judge
        from musicdistill.judges.log_mel import front_end_settings
    except ImportError as exc:
        return None, (
            f"reward phase skipped: {exc}; carry the librosa and soundfile wheels "
            "(bench/RESULTS.md, section GPU)"
        )
    codec = HFEncodecCodec(copy.deepcopy(musicgen.audio_encoder).float(), num_codebooks=shape.codebooks)
    embedder = (
        build_embedder(EmbedConfig(), front_end_settings(CodecConfig(), codec.sample_rate)).to(device).eval()
    )
    judge = reward_judge(embedder)
    return (lambda codes: judge(CodedClips(codec, codes))), "EnCodec decode + untrained reward embedder"


def bench_distill(musicgen, prompts, shape, device, guard, est, results) -> None:
    if not guard.allows("distillation step", est.run_s("distill", 1)):
        return
    with results.attempt("distillation step", device):
        distill_section(musicgen, prompts, shape, device, guard, est, results)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def distill_section(musicgen, prompts, shape, device, guard, est, results) -> None:
    dc = DistillConfig(prompts_per_step=shape.distill_prompts, group_size=2, beta=15.0, gamma=CFG, bf16=True)
    reset_peak(device)
    student = build_native(shape, device).train()
    teacher = frozen_copy(student)
    reward_embed, reward_note = build_reward(musicgen, shape, device)
    names = [f"prompt {i}" for i in range(dc.prompts_per_step)]
    table = {name: i for i, name in enumerate(names)}

    def encode(batch_prompts: list[str]) -> TextCondition:
        rows = torch.tensor([table[p] for p in batch_prompts], device=device)
        full = prompts.cond(dc.prompts_per_step, torch.float32)
        return TextCondition(full.states[rows], full.mask[rows])

    optimizer = torch.optim.AdamW(
        student.parameters(), lr=dc.lr, betas=(0.9, 0.95), weight_decay=dc.weight_decay
    )
    flops = count_flops(student, teacher, encode, names[:1], dc, shape, device)
    optimizer.zero_grad(set_to_none=True)
    steps = []
    for index in range(2):  # the first step captures the rollout graphs and warms every kernel
        if index and not guard.allows("distillation step (timed)", sum(steps[0].values())):
            break
        steps.append(
            distill_step(student, teacher, encode, names, dc, shape, device, optimizer, reward_embed)
        )
        print(
            json.dumps({"distill_step": index, **{k: round(v, 4) for k, v in steps[-1].items()}}), flush=True
        )
    times = steps[-1]
    rows = dc.prompts_per_step * dc.group_size
    total = sum(times.values())
    scale = dc.prompts_per_step  # flops were counted on one prompt
    doc = {
        "prompts": dc.prompts_per_step,
        "group_size": dc.group_size,
        "frames": shape.frames,
        "timed_step": len(steps) - 1,
        "first_step_s": sum(steps[0].values()),
        "times_s": times,
        "step_s": total,
        "frames_per_s": rows * shape.frames / total,
        "rollout_frames_per_s": rows * shape.frames / times["rollout"],
        "teacher_tflop": flops["teacher"] * scale / 1e12,
        "student_tflop": flops["student"] * scale / 1e12,
        "teacher_tflops": flops["teacher"] * scale / times["teacher"] / 1e12,
        "student_tflops": flops["student"] * scale / times["student"] / 1e12,
        "reward": reward_note,
        "peak_gb": peak_gb(device),
        "flop_count": f"torch.utils.flop_counter on one prompt (x{scale}); matmuls and attention, causal "
        "attention counted at full length",
    }
    results.doc["distill"] = doc
    print(json.dumps({"distill": {k: _round(v) for k, v in doc.items() if k != "times_s"}}), flush=True)
    est.record("distill", total, 1)
    free_memory(device, student)


def bench_fsdp(prompts, shape, device, guard, est, results) -> None:
    """Section 7: ``bench/fsdp_phase.py`` (distillation whole and FSDP-sharded, against the memory plan)."""
    if not guard.allows("FSDP distillation", 8 * est.run_s("distill", 1)):
        return
    from fsdp_phase import fsdp_section

    with results.attempt("FSDP distillation", device):
        results.doc["fsdp"] = fsdp_section(build_native, shape, prompts.cond, device)
        print(json.dumps({"fsdp": _round(results.doc["fsdp"])}), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def distill_step(
    student, teacher, encode, prompts, dc, shape, device, optimizer, reward_embed
) -> dict[str, float]:
    """``musicdistill.training.distill.distill``'s step body (on-policy, beta > 0) with a device sync closing each phase."""
    times: dict[str, float] = {}
    sync(device)
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(0)
    roll = student_rollouts(student, encode, prompts, dc, shape.frames, gen)
    codes = roll.codes.to(device)
    sync(device)
    times["rollout"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cond = encode(roll.prompts)
    inputs, targets, mask = teacher_forcing_batch(codes, student.delays, student.special_token)
    with torch.no_grad(), autocast(device, dc.bf16):
        teacher_logits = guided_forward(teacher, inputs, cond, dc.gamma)
    sync(device)
    times["teacher"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, advantages = reward_terms(reward_embed, codes, dc.group_size)
    sync(device)
    times["reward"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with autocast(device, dc.bf16):
        student_logits = student(inputs, cond)
    kl, _ = token_divergence(student_logits, teacher_logits, mask, kind=dc.divergence)
    pg = torch.zeros((), device=device)
    if advantages is not None:
        seq_lp = sequence_logprob(student_logits, targets, mask, temperature=dc.temperature)
        pg = reinforce_loss(
            seq_lp, advantages.to(device), dc.reinforce_normalize, int(mask.sum()) * codes.shape[0]
        )
    loss = combined_loss(kl, pg, dc.beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), dc.grad_clip)
    optimizer.step()
    sync(device)
    times["student"] = time.perf_counter() - t0
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the benchmark's distillation loss is {loss.item()}")
    return times


def count_flops(student, teacher, encode, prompts, dc, shape, device) -> dict[str, float]:
    """Matmul and attention FLOPs of the teacher phase and of the student's forward + backward, one prompt."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator(device="cpu").manual_seed(0)
    codes = torch.randint(0, shape.cardinality, (dc.group_size, shape.codebooks, shape.frames), generator=g)
    codes = codes.to(device)
    cond = encode([p for p in prompts for _ in range(dc.group_size)])
    inputs, _, mask = teacher_forcing_batch(codes, student.delays, student.special_token)
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast(device, dc.bf16):
        teacher_logits = guided_forward(teacher, inputs, cond, dc.gamma)
    teacher_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        with autocast(device, dc.bf16):
            logits = student(inputs, cond)
        token_divergence(logits, teacher_logits, mask, kind=dc.divergence)[0].backward()
    return {"teacher": float(teacher_flops), "student": float(counter.get_total_flops())}


# --------------------------------------------------------------------------------------------
# Our loop on the MusicGen decoder
# --------------------------------------------------------------------------------------------


def bench_adapter(musicgen, prompts, shape, device, guard, est, results) -> None:
    from musicdistill.model.musicgen import MusicgenBackbone

    backbone = MusicgenBackbone.from_musicgen(musicgen)
    dtype = next(backbone.parameters()).dtype
    for batch in shape.batches:
        for cfg_scale in (1.0, CFG):
            rows = batch * (2 if cfg_scale != 1.0 else 1)
            what = f"adapter batch {batch} cfg {cfg_scale:g}"
            if not guard.allows(what, est.run_s("adapter", rows) * 1.2 + 2):
                continue
            with results.attempt(what, device):
                results.add("adapter", adapter_row(backbone, prompts, shape, device, dtype, batch, cfg_scale))
                est.record("adapter", results.doc["adapter"][-1]["seconds"], rows)


def adapter_row(backbone, prompts, shape, device, dtype, batch: int, cfg_scale: float) -> dict[str, Any]:
    cond = prompts.cond(batch, dtype)
    generator = torch.Generator(device=device).manual_seed(0)

    def run(frames: int = shape.frames) -> None:
        sample_tokens(backbone, cond, frames, top_k=shape.top_k, cfg_scale=cfg_scale, generator=generator)

    seconds, peak = timed(run, device, 1, lambda: run(8))
    return {
        "batch": batch,
        "cfg_scale": cfg_scale,
        "frames": shape.frames,
        "seconds": seconds,
        "fps": batch * shape.frames / seconds,
        "peak_gb": peak,
    }


# --------------------------------------------------------------------------------------------
# Targets and the table
# --------------------------------------------------------------------------------------------


def _find(rows: list[dict[str, Any]], batch: int, cfg_scale: float) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("batch") == batch and r.get("cfg_scale") == cfg_scale), None)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each PASS / FAIL / not measured, with the figures behind it."""
    out = []

    def add(name: str, value: float | None, goal: float) -> None:
        status = "not measured" if value is None else ("PASS" if value >= goal else "FAIL")
        out.append({"target": name, "value": value, "goal": goal, "status": status})

    for batch, goal in ((1, 25.0), (32, 20.0)):
        for cfg_scale in (1.0, CFG):
            ours, base = _find(doc["native"], batch, cfg_scale), _find(doc["baseline"], batch, cfg_scale)
            value = ours["fps"] / base["fps"] if ours and base else None
            add(f"native / MusicGen generate, batch {batch}, cfg {cfg_scale:g} (x)", value, goal)
    plain, guided = _find(doc["native"], 256, 1.0), _find(doc["native"], 256, CFG)
    add(
        "no CFG / CFG frames/s at batch 256 (x)",
        plain["fps"] / guided["fps"] if plain and guided else None,
        1.5,
    )
    largest = {r["cfg_scale"]: r for r in doc["largest"] if "fps" in r}
    value = largest[1.0]["fps"] / largest[CFG]["fps"] if 1.0 in largest and CFG in largest else None
    add("no CFG / CFG frames/s at each largest batch (x)", value, 1.8)
    distill, matmul = doc.get("distill"), doc.get("matmul")
    for phase in ("teacher", "student"):
        value = distill[f"{phase}_tflops"] / matmul["tflops"] if distill and matmul else None
        add(f"{phase} phase TFLOP/s / card bf16 matmul rate", value, 0.30)
    return out


def print_table(doc: dict[str, Any]) -> None:
    meta = doc["meta"]
    print(
        f"\n== {meta['device_name']} | {meta['shape']} | torch {meta['torch']} | transformers {meta['transformers']}"
    )
    if doc.get("matmul"):
        print(f"bf16 matmul {doc['matmul']['n']}^3: {doc['matmul']['tflops']:.4g} TFLOP/s")
    print(f"\nframes/s, {meta['frames']} frames, top-k {meta['top_k']} (CFG {CFG:g} where cfg > 1)")
    print(
        f"{'batch':>5} {'cfg':>4} {'generate':>9} {'adapter':>8} {'reference':>9} {'native':>8} {'ms/step':>8}"
        f" {'x generate':>10} {'peak GB':>8}"
    )
    batches = sorted({r["batch"] for s in ("native", "baseline", "adapter", "reference") for r in doc[s]})
    for batch in batches:
        for cfg_scale in (1.0, CFG):
            cells = [_find(doc[s], batch, cfg_scale) for s in ("baseline", "adapter", "reference", "native")]
            if not any(cells):
                continue
            fps = [f"{c['fps']:.0f}" if c else "-" for c in cells]
            ours, base = cells[3], cells[0]
            speed = f"{ours['fps'] / base['fps']:.1f}x" if ours and base else "-"
            step = f"{ours['ms_per_step']:.2f}" if ours else "-"
            peak = f"{ours['peak_gb']:.1f}" if ours else "-"
            print(
                f"{batch:5d} {cfg_scale:4g} {fps[0]:>9} {fps[1]:>8} {fps[2]:>9} {fps[3]:>8} {step:>8} {speed:>10} "
                f"{peak:>8}"
            )
    if doc.get("greedy_agreement"):
        ga = doc["greedy_agreement"]
        print(
            f"greedy fast vs reference ({ga['dtype']}, batch 4, CFG): {100 * ga['equal_fraction']:.1f}% equal tokens, "
            f"first differing frame {ga['first_differing_frame']}"
        )
    for row in doc["largest"]:
        if "fps" in row:
            print(
                f"largest batch in {row['budget_gb']:g} GB, cfg {row['cfg_scale']:g}: {row['batch']} "
                f"({row['total_gb']:.3g} GB, {row['measured']}): {row['fps']:.0f} frames/s"
            )
    if doc.get("distill"):
        d = doc["distill"]
        split = ", ".join(f"{k} {v:.3f} s" for k, v in d["times_s"].items())
        print(
            f"distillation step {d['prompts']}x{d['group_size']}x{d['frames']}: {d['step_s']:.2f} s ({split}); "
            f"{d['frames_per_s']:.0f} frames/s; teacher {d['teacher_tflops']:.3g} TFLOP/s, "
            f"student {d['student_tflops']:.3g} TFLOP/s; reward: {d['reward']}"
        )
    for run in doc.get("fsdp", {}).get("runs", []):
        peak = "-" if run["peak_gib"] is None else f"{run['peak_gib']:.3g}"
        ratio = "-" if run["measured_over_planned"] is None else f"{run['measured_over_planned']:.2f}"
        print(
            f"distillation {run['setting']}: {run['s_per_step']:.2f} s/step; peak {peak} GiB, plan "
            f"{run['planned_gib']:.3g} GiB (measured/planned {ratio})"
        )
    print("\ntargets:")
    for t in doc.get("targets", []):
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        print(f"  {t['status']:>12}  {t['target']}: {value} (goal {t['goal']:g})")
    print(
        f"peak memory: {doc['meta'].get('peak_gb', float('nan')):.1f} GB; elapsed {meta['elapsed_s']:.0f} s"
    )
    for skip in doc["skipped"]:
        print(f"SKIPPED {skip}")
    for error in doc["errors"]:
        print(f"ERROR {error}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU, every section, a few seconds"
    )
    ap.add_argument("--out", default="", help="JSON path (default: $OUT/gpu.json, else bench/gpu.json)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="time guard in seconds: later items are skipped (and listed) past it (default 420; smoke 120)",
    )
    ap.add_argument(
        "--budget-gb",
        type=float,
        default=None,
        help="memory budget of the largest-batch search (default 40; smoke 0.005)",
    )
    ap.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    ap.add_argument("--device", default="", help="default: cuda when available (cpu with --smoke)")
    args = ap.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections has unknown entries {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shape = SMOKE if args.smoke else FULL
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("bench/gpu.py needs a CUDA GPU; use --smoke for the CPU check")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    budget_s = args.budget_s if args.budget_s is not None else (120.0 if args.smoke else 420.0)
    budget_gb = args.budget_gb if args.budget_gb is not None else (0.005 if args.smoke else 40.0)
    sections = set(args.sections.split(","))
    out = Path(
        args.out or (Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else "bench/gpu.json")
    )
    guard, est = Guard(budget_s), Estimates(shape.estimates)
    import transformers

    meta = {
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "shape": shape.name,
        "frames": shape.frames,
        "top_k": shape.top_k,
        "cfg_scale": CFG,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "budget_s": budget_s,
        "budget_gb": budget_gb,
        "sections": sorted(sections),
        "shape_detail": asdict(shape),
    }
    results = Results(out, meta, guard)
    torch.manual_seed(0)
    musicgen = build_musicgen(shape, device, dtype)
    prompts = make_prompts(musicgen, shape, max(shape.batches + shape.probe_batches), device)
    native = build_native(shape, device)
    if dtype == torch.float16:
        native = native.half()
    meta.update(
        native_params=sum(p.numel() for p in native.parameters()),
        musicgen_decoder_params=sum(p.numel() for p in musicgen.decoder.parameters()),
    )
    print(json.dumps({k: v for k, v in meta.items() if k != "shape_detail"}), flush=True)
    if "matmul" in sections:
        with results.attempt("matmul", device):
            results.doc["matmul"] = bench_matmul(shape, device)
            print(json.dumps({"matmul": results.doc["matmul"]}), flush=True)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("native", lambda: bench_native(native, prompts, shape, device, dtype, guard, est, results)),
        ("baseline", lambda: bench_baseline(musicgen, prompts, shape, device, guard, est, results)),
        (
            "largest",
            lambda: bench_largest(native, prompts, shape, device, dtype, budget_gb, guard, est, results),
        ),
        (
            "distill",
            lambda: bench_distill(musicgen, prompts, shape, device, guard, est, results),
        ),  # own attempt
        ("fsdp", lambda: bench_fsdp(prompts, shape, device, guard, est, results)),
        ("adapter", lambda: bench_adapter(musicgen, prompts, shape, device, guard, est, results)),
    ]
    for name, run in steps:
        if name in sections:
            run()
            results.save()
    results.save()
    print_table(results.doc)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
