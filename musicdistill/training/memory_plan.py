"""How much memory one GPU needs to distil a model, with DDP and with FSDP, phase by phase.

``musicdistill plan`` prints this; :func:`musicdistill.training.distill.teacher_placement` reads it
to decide whether the frozen teacher may be replicated. All figures are bytes per process.

**What lives all the time** (:class:`Memory` ``weights``, ``gradients``, ``optimizer``, ``teacher``):
the student's fp32 weights (4 bytes a parameter), its fp32 gradients (4) and AdamW's two moments
(8), whole on every GPU with DDP and a 1/N shard with FSDP; the frozen teacher in fp32, whole with
DDP, a 1/N shard or a bf16 replica with FSDP. Communication ``buffers``: DDP on several processes
keeps its gradient buckets (a second fp32 copy of the gradients); FSDP holds gathered working
copies: the root unit (embeddings, heads) and two blocks' parameters in the compute dtype (one
computing, one prefetched) plus one block's unsharded fp32 gradients before their reduce-scatter.

**The phases** (each adds to what lives all the time; the peak is the largest):
- ``rollouts``: the student samples G continuations of its B/N prompts with a KV cache (self- and
  cross-attention keys and values of every layer); FSDP gathers the whole student for it.
- ``teacher``: the CFG teacher's teacher-forced pass over the rollouts (two rows per rollout, no
  gradients: one layer's activations at a time) and the guided logits it keeps for the loss.
- ``student``: the student's pass with gradients: every layer's saved activations (or, with
  activation checkpointing, every layer's input and one layer's activations), the logits, the
  divergence's and REINFORCE's log-probabilities over the vocabulary, and the teacher's logits.

The per-layer activation counts are those of the blocks of :mod:`musicdistill.model.generator`
(and transformers' MusicGen decoder, the same layout): ``ACT_D`` vectors of width D and ``ACT_F`` of
width F per token and layer; ``LOGIT_COPIES`` copies of the fp32 logits live in the student phase.
``tests/training/test_memory_plan.py`` measures the tiny models' peaks on the CPU against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from torch import nn

from musicdistill.config import DistillConfig
from musicdistill.training.fsdp import blocks_of

GIB = 1024**3
#: the share of a GPU's memory a plan may fill (the rest: the CUDA context, allocator fragmentation)
PLAN_HEADROOM = 0.9
#: saved activations of one block per token: vectors of width D (norm inputs, q/k/v, attention
#: outputs, projections' inputs, residuals; self- and cross-attention) and of width F (the MLP)
ACT_D = 16
ACT_F = 2
#: fp32 copies of the student's logits ``[rows, K, S, V]`` alive in its pass (logits, the
#: divergence's log-softmax and probabilities, REINFORCE's log-softmax, the gradient)
LOGIT_COPIES = 5


@dataclass(frozen=True)
class ModelSize:
    """What the plan needs of a generator: parameter counts and shapes."""

    name: str
    params: int  # the student's trainable parameters
    layers: int
    dim: int
    ffn: int
    codebooks: int
    cardinality: int
    block_params: int  # one block's parameters (an FSDP unit)
    text_tokens: int = 64  # cross-attention keys per row (0: no cross-attention)
    frame_rate: float = 50.0

    @property
    def root_params(self) -> int:
        """The parameters outside the blocks (embeddings, heads, projections, the dial)."""
        return self.params - self.layers * self.block_params


def musicgen_size(
    name: str,
    dim: int,
    layers: int,
    text_dim: int = 768,
    ffn: int | None = None,
    codebooks: int = 4,
    cardinality: int = 2048,
) -> ModelSize:
    """A MusicGen decoder (transformers' layout, no biases) of width ``dim``: self- and cross-attention,
    an MLP of ``ffn`` (default 4·dim), codebook embeddings and heads, the text projection."""
    ffn = ffn or 4 * dim
    block = 4 * dim * dim + 4 * dim * dim + 2 * dim * ffn + 3 * 2 * dim  # self, cross, MLP, 3 norms
    root = (
        codebooks * (cardinality + 1) * dim + codebooks * cardinality * dim + (text_dim + 1) * dim + 2 * dim
    )
    return ModelSize(name, layers * block + root, layers, dim, ffn, codebooks, cardinality, block)


def musicgen_folder_size(folder: str | Path) -> ModelSize:
    """The :class:`ModelSize` of a local MusicGen folder, read from its ``config.json`` (no weights)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: model.pretrained must be a local MusicGen folder (or plan for a public "
            "size with --model musicgen-small, musicgen-medium or musicgen-large)"
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    try:
        dec, text = config["decoder"], config["text_encoder"]
        return musicgen_size(
            Path(folder).name,
            int(dec["hidden_size"]),
            int(dec["num_hidden_layers"]),
            int(text.get("d_model", text.get("hidden_size", 768))),
            int(dec["ffn_dim"]),
            int(dec["num_codebooks"]),
            int(dec["vocab_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a MusicGen config (decoder/text_encoder fields: {exc})") from None


#: the public MusicGen decoders (facebook/musicgen-*: width, layers; T5-base text states)
MUSICGEN_SIZES = {
    "musicgen-small": musicgen_size("musicgen-small", 1024, 24),
    "musicgen-medium": musicgen_size("musicgen-medium", 1536, 48),
    "musicgen-large": musicgen_size("musicgen-large", 2048, 48),
}


def model_size_of(model: nn.Module, text_tokens: int = 64) -> ModelSize:
    """The :class:`ModelSize` of a live generator (native or MusicGen backbone)."""
    blocks = blocks_of(model)
    block_params = sum(p.numel() for p in blocks[0].parameters())
    params = sum(p.numel() for p in model.parameters() if p.requires_grad) or sum(
        p.numel() for p in model.parameters()
    )
    dim, ffn = _widths(blocks[0])
    cross = getattr(model, "has_cross", True)
    return ModelSize(
        type(model).__name__,
        params,
        len(blocks),
        dim,
        ffn,
        model.num_codebooks,
        model.cardinality,
        block_params,
        text_tokens if cross else 0,
    )


def _widths(block: nn.Module) -> tuple[int, int]:
    """(model width D, MLP width F) of one block: from its widest and narrowest Linear layers."""
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    dim = min(min(m.in_features, m.out_features) for m in linears)
    ffn = max(max(m.in_features, m.out_features) for m in linears)
    return dim, ffn if ffn > 3 * dim else 4 * dim


@dataclass
class Memory:
    """One setting's bytes per process: what lives all the time, and each phase's additions."""

    setting: str
    weights: float
    gradients: float
    optimizer: float
    teacher: float
    buffers: float
    rollouts: float
    teacher_pass: float
    student_pass: float
    notes: list[str] = field(default_factory=list)

    @property
    def resident(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.teacher + self.buffers

    @property
    def peak(self) -> float:
        return self.resident + max(self.rollouts, self.teacher_pass, self.student_pass)

    def fits(self, gpu_bytes: float) -> bool:
        return self.peak <= PLAN_HEADROOM * gpu_bytes

    def rows(self) -> list[tuple[str, float]]:
        names = [f.name for f in fields(self) if f.name not in ("setting", "notes")]
        return [(n, getattr(self, n)) for n in names] + [("peak", self.peak)]


def _buffers(size: ModelSize, act: int, sharded: bool, ddp_buckets: bool) -> float:
    """Communication buffers: FSDP's gathered units, or DDP's gradient buckets (see the module doc)."""
    if sharded:
        return act * (size.root_params + 2 * size.block_params) + 4 * size.block_params
    return 4.0 * size.params if ddp_buckets else 0.0


def distill_memory(
    size: ModelSize,
    dc: DistillConfig,
    num_frames: int,
    gpus: int,
    parallel: str,
    teacher: str = "shard",
    bf16: bool | None = None,
) -> Memory:
    """Bytes per process of distilling ``size`` with ``dc`` over ``gpus`` processes (``parallel``:
    ``ddp`` or ``fsdp``; ``teacher``: ``shard`` or ``replicate`` under FSDP). ``bf16``: the compute
    dtype (default ``dc.bf16``; False on the CPU)."""
    if parallel not in ("ddp", "fsdp"):
        raise ValueError(f"parallel={parallel!r} must be 'ddp' or 'fsdp'")
    if gpus < 1:
        raise ValueError(f"gpus={gpus} must be >= 1")
    half = dc.bf16 if bf16 is None else bf16
    act = 2 if half else 4  # bytes of an activation and of a gathered parameter
    p = size.params
    sharded = parallel == "fsdp"
    n = gpus if sharded else 1
    rows = math.ceil(dc.prompts_per_step / gpus) * dc.group_size
    steps = num_frames + size.codebooks - 1
    logits = rows * size.codebooks * steps * size.cardinality * 4  # one fp32 copy [rows, K, S, V]
    memory = Memory(
        setting=parallel
        if not sharded
        else f"fsdp (teacher {'replicated' if teacher == 'replicate' else 'sharded'})",
        weights=4 * p / n,
        gradients=4 * p / n,
        optimizer=8 * p / n,
        teacher=(act * p if teacher == "replicate" else 4 * p / n) if sharded else 4 * p,
        buffers=_buffers(size, act, sharded, parallel == "ddp" and gpus > 1),
        rollouts=0.0,
        teacher_pass=0.0,
        student_pass=0.0,
    )
    kv = size.layers * 2 * rows * (steps + size.text_tokens) * size.dim * act
    memory.rollouts = kv + (act * p if sharded else 0.0)
    layer_acts = steps * (ACT_D * size.dim + ACT_F * size.ffn) * act
    one_layer = 2 * rows * steps * max(size.ffn, 3 * size.dim) * act
    memory.teacher_pass = one_layer + 2 * rows * size.codebooks * steps * size.cardinality * act + logits
    if dc.activation_checkpointing and sharded:
        saved = rows * (size.layers * steps * size.dim * act + layer_acts)
    else:
        saved = rows * size.layers * layer_acts
    memory.student_pass = saved + LOGIT_COPIES * logits + logits  # its own copies + the teacher's
    if sharded and teacher == "replicate" and not half:
        memory.notes.append("a replicated teacher is held in bf16 on GPUs only; on the CPU it stays fp32")
    return memory
