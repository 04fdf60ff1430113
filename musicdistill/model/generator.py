"""The token generator: a text-conditioned decoder transformer over K codec codebooks.

Each step's input is the sum of K codebook embeddings (V + 1 entries each; entry V is the special
token used as BOS and delay padding, see :mod:`musicdistill.model.delay`). Pre-norm (LayerNorm) blocks of
causal self-attention (rotary or learned positions), cross-attention to the projected text-encoder
states (with their key padding mask) and a GELU or SwiGLU feed-forward; K output heads over V
entries (the special token is never predicted).

A conditioned student (:meth:`Generator.attach_dial`; its checkpoint holds ``dial.*`` weights) also takes a diversity weight w per row
(``TextCondition.dial``) through :class:`~musicdistill.model.dial.DiversityDial`, whose vector is
added to every input step; a condition without w runs it at w = 0.

Text enters through ``model.text_fusion`` (audiocraft's condition fusers): ``cross`` (cross-attention
in every block, as MusicGen), ``sum`` (the masked mean of the encoder states, i.e. the sentence
embedding, projected and added to every input step; no cross-attention layers) or ``both``. The null
condition (all-False mask) gives a zero mean, hence no added term, and zero cross-attention output.

Interface (what sampling, pretraining and distillation call; a MusicGen adapter provides the same):

- attributes ``num_codebooks`` (K), ``cardinality`` (V), ``special_token`` (= V), ``delays``
  (K ints), ``max_steps`` (context length in delayed steps), plus ``eval()`` / ``train()``;
- ``model(inputs [B, K, S], cond) -> logits [B, K, S, V]`` float32, teacher-forced, causal;
- ``init_cache(cond, max_steps) -> KVCache``: preallocates the self-attention cache and computes
  the cross-attention keys/values once;
- ``forward_step(tokens [N, K], cache, pos) -> logits [N, K, V]`` float32: the input tokens of step
  ``pos`` (steps are fed in order 0, 1, ...), equal to ``model(inputs)[:, :, pos]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from musicdistill.config import ModelConfig
from musicdistill.model.delay import check_delays, teacher_forcing_batch
from musicdistill.model.dial import DiversityDial, check_dial
from musicdistill.model.text import TextCondition


class TokenGenerator(Protocol):
    """The interface sampling, pretraining and distillation rely on (ours, or a MusicGen adapter)."""

    num_codebooks: int
    cardinality: int
    special_token: int
    delays: tuple[int, ...]
    max_steps: int
    training: bool

    def __call__(self, inputs: torch.Tensor, cond: TextCondition) -> torch.Tensor: ...

    def init_cache(self, cond: TextCondition, max_steps: int) -> Any: ...

    def forward_step(self, tokens: torch.Tensor, cache: Any, pos: int) -> torch.Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


@dataclass
class KVCache:
    """Preallocated decoding state for N rows.

    ``self_kv [L, 2, N, H, max_steps, Dh]`` holds rotated keys and values of the steps fed so far
    (``length`` of them); ``cross_kv [L, 2, N, H, S, Dh]`` the text keys/values;
    ``cross_mask [N, 1, 1, S]`` which text keys each row attends to; ``cross_drop [N, 1, 1]`` marks
    rows without any text token (the null condition), whose cross-attention output is zero, or is
    None when every row has text. Without cross-attention layers (``text_fusion=sum``) the three are
    None. ``text_sum [N, 1, D]`` is the projected sentence embedding added to every input step
    (None without sum fusion).
    """

    self_kv: torch.Tensor
    cross_kv: torch.Tensor | None
    cross_mask: torch.Tensor | None
    cross_drop: torch.Tensor | None
    text_sum: torch.Tensor | None = None
    length: int = 0

    @property
    def max_steps(self) -> int:
        return self.self_kv.shape[4]


@dataclass
class TeacherForced:
    """Logits ``[B, K, S, V]`` of a teacher-forced pass, its ``targets [B, K, S]`` and ``mask [K, S]``."""

    logits: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def rope_table(max_steps: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotary frequencies as unit complex numbers: ``[max_steps, head_dim / 2]`` complex64."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_steps, dtype=torch.float64), inv_freq)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dim: ``x [B, S, ..., Dh]`` by ``freqs [S, Dh / 2]``."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    freqs = freqs.view(freqs.shape[0], *([1] * (x.dim() - 3)), freqs.shape[1])
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``states [B, S, D]`` over the True positions of ``mask [B, S]`` -> ``[B, D]`` (zero for an empty mask)."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def cross_attention_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text mask ``[B, S]`` -> (attention mask ``[B, 1, 1, S]``, rows-without-text ``[B, 1, 1]`` or None).

    A row with no text token (the null condition) would give NaN in softmax; its keys are opened
    for the attention and its output is then zeroed, i.e. it attends to nothing.
    """
    has_text = mask.any(dim=-1)
    if bool(has_text.all()):
        return mask[:, None, None, :], None
    safe = mask | ~has_text[:, None]
    return safe[:, None, None, :], ~has_text[:, None, None]


class SelfAttention(nn.Module):
    """Causal multi-head self-attention with an optional rotary embedding."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _qkv(
        self, x: torch.Tensor, freqs: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [B, S, D]`` -> q, k, v each ``[B, H, S, Dh]`` (q and k rotated)."""
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, self.head_dim)
        qk = apply_rope(qkv[:, :, :2], freqs) if freqs is not None else qkv[:, :, :2]
        return qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._qkv(x, freqs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def step(self, x: torch.Tensor, freqs: torch.Tensor | None, kv: torch.Tensor, pos: int) -> torch.Tensor:
        """One step ``x [N, 1, D]`` at position ``pos``; writes its k, v into ``kv [2, N, H, Tmax, Dh]``."""
        q, k, v = self._qkv(x, freqs)
        kv[0, :, :, pos] = k[:, :, 0]
        kv[1, :, :, pos] = v[:, :, 0]
        y = F.scaled_dot_product_attention(q, kv[0, :, :, : pos + 1], kv[1, :, :, : pos + 1])
        return self.out(y.transpose(1, 2).reshape(x.shape))


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder to the (projected) text states."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def memory(self, text: torch.Tensor) -> torch.Tensor:
        """Projected text ``[B, S, D]`` -> keys and values ``[2, B, H, S, Dh]``."""
        b, s, _ = text.shape
        return self.kv(text).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor | None
    ) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, dropout_p=p)
        y = self.out(y.transpose(1, 2).reshape(x.shape))
        return y if drop is None else y.masked_fill(drop, 0.0)


class FeedForward(nn.Module):
    """GELU MLP (``dim -> ff_mult·dim -> dim``) or SwiGLU with about the same parameter count."""

    def __init__(self, dim: int, ff_mult: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.swiglu = activation == "swiglu"
        hidden = ff_mult * dim
        if self.swiglu:
            hidden = max(8, round(2 * hidden / 3 / 8) * 8)
        self.up = nn.Linear(dim, 2 * hidden if self.swiglu else hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        return self.drop(self.down(h))


class Block(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention, feed-forward, each residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(cfg.dim)
        self.self_attn = SelfAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.has_cross = cfg.text_fusion in ("cross", "both")
        if self.has_cross:
            self.norm_cross = nn.LayerNorm(cfg.dim)
            self.cross_attn = CrossAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.norm_ff = nn.LayerNorm(cfg.dim)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult, cfg.activation, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, freqs, memory, cross_mask, cross_drop) -> torch.Tensor:
        """``memory``: the projected text ``[B, S, D]`` (None without cross-attention); its keys and
        values are computed here, inside the block, so a sharded block holds its weights for them."""
        x = x + self.drop(self.self_attn(self.norm_self(x), freqs))
        if self.has_cross:
            cross_kv = self.cross_attn.memory(memory)
            x = x + self.drop(self.cross_attn(self.norm_cross(x), cross_kv, cross_mask, cross_drop))
        return x + self.ff(self.norm_ff(x))

    def step(self, x, freqs, self_kv, pos, cross_kv, cross_mask, cross_drop) -> torch.Tensor:
        x = x + self.self_attn.step(self.norm_self(x), freqs, self_kv, pos)
        if self.has_cross:
            x = x + self.cross_attn(self.norm_cross(x), cross_kv, cross_mask, cross_drop)
        return x + self.ff(self.norm_ff(x))


class Generator(nn.Module):
    """The native token generator; see the module docstring for its interface."""

    def __init__(self, cfg: ModelConfig, num_codebooks: int, cardinality: int, text_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_codebooks, self.cardinality, self.text_dim = num_codebooks, cardinality, text_dim
        self.special_token = cardinality
        self.delays = check_delays(cfg.delays, num_codebooks)
        self.max_steps = cfg.max_frames
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.embed = nn.Parameter(torch.empty(num_codebooks, cardinality + 1, cfg.dim))  # [K, V + 1, D]
        self.register_buffer("offsets", torch.arange(num_codebooks) * (cardinality + 1), persistent=False)
        self.pos_embed = nn.Embedding(cfg.max_frames, cfg.dim) if cfg.positions == "learned" else None
        freqs = rope_table(cfg.max_frames, self.head_dim) if cfg.positions == "rope" else None
        self.register_buffer("freqs", freqs, persistent=False)
        self.has_cross = cfg.text_fusion in ("cross", "both")
        self.text_proj = nn.Linear(text_dim, cfg.dim, bias=False) if self.has_cross else None
        self.text_sum = (
            nn.Linear(text_dim, cfg.dim, bias=False) if cfg.text_fusion in ("sum", "both") else None
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Parameter(torch.empty(num_codebooks, cardinality, cfg.dim))  # [K, V, D]
        self.dial: DiversityDial | None = None  # a conditioned student's (attach_dial)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2·layers)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            outs = (block.self_attn.out, block.ff.down) + ((block.cross_attn.out,) if block.has_cross else ())
            for proj in outs:
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * len(self.blocks)))
        nn.init.normal_(self.embed, std=0.02)
        nn.init.normal_(self.head, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def attach_dial(self, hidden: int) -> None:
        """Make this generator a conditioned student: a fresh :class:`~musicdistill.model.dial.DiversityDial`
        of ``hidden`` units (output layer at zero, so no output changes); kept when it has one that wide."""
        if self.dial is not None:
            if self.dial.hidden != hidden:
                raise ValueError(f"this generator's dial has {self.dial.hidden} hidden units, not {hidden}")
            return
        like = self.embed
        self.dial = DiversityDial(self.cfg.dim, hidden).to(device=like.device, dtype=like.dtype)

    # -- shared pieces --------------------------------------------------------------------

    def _embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, K, S]`` -> ``[B, S, D]`` (sum of the K codebook embeddings)."""
        flat = self.embed.view(-1, self.embed.shape[-1])
        return F.embedding(tokens + self.offsets.view(1, -1, 1), flat).sum(dim=1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` -> ``[B, S, K, V]`` float32."""
        logits = F.linear(self.norm(h), self.head.view(-1, self.head.shape[-1]))
        return logits.view(*h.shape[:2], self.num_codebooks, self.cardinality).float()

    def _text_sum(self, cond: TextCondition) -> torch.Tensor | None:
        """What is added to every input step ``[B, 1, D]``: the projected sentence embedding (sum fusion)
        plus the diversity dial's vector (a conditioned student); None when neither applies."""
        added = None
        if self.text_sum is not None:
            states = masked_mean(cond.states, cond.mask).to(self.text_sum.weight.dtype)
            added = self.text_sum(states).unsqueeze(1)
        if self.dial is not None:
            w = cond.dial if cond.dial is not None else cond.states.new_zeros(len(cond))
            dial = self.dial(check_dial(w.to(cond.states.device), len(cond)))
            added = dial if added is None else added + dial
        return added

    def _cross_memory(
        self, cond: TextCondition
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Projected text states ``[B, S, D]``, attention mask and null rows (all None without cross-attention)."""
        if self.text_proj is None:
            return None, None, None
        mask, drop = cross_attention_mask(cond.mask)
        return self.text_proj(cond.states.to(self.text_proj.weight.dtype)), mask, drop

    def _check_cond(self, cond: TextCondition, rows: int) -> None:
        if len(cond) != rows:
            raise ValueError(f"the condition has {len(cond)} rows but the token batch has {rows}")
        if cond.dim != self.text_dim:
            raise ValueError(
                f"the condition has width {cond.dim}; this generator expects text_dim={self.text_dim}"
            )

    # -- teacher-forced ---------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor, cond: TextCondition) -> torch.Tensor:
        """Teacher-forced logits: ``inputs [B, K, S]`` (see ``delay.teacher_forcing_batch``) -> ``[B, K, S, V]``."""
        if inputs.dim() != 3 or inputs.shape[1] != self.num_codebooks:
            raise ValueError(
                f"inputs must have shape [B, K={self.num_codebooks}, S], got {tuple(inputs.shape)}"
            )
        b, _, s = inputs.shape
        if s > self.max_steps:
            raise ValueError(
                f"inputs have {s} steps; the model's context is model.max_frames={self.max_steps}"
            )
        if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) > self.special_token):
            raise ValueError(
                f"input tokens must lie in [0, {self.special_token}] (V entries plus the special token)"
            )
        self._check_cond(cond, b)
        x = self._embed_tokens(inputs)
        if self.pos_embed is not None:
            x = x + self.pos_embed.weight[:s]
        freqs = self.freqs[:s] if self.freqs is not None else None
        text_sum = self._text_sum(cond)
        if text_sum is not None:
            x = x + text_sum
        memory, mask, drop = self._cross_memory(cond)
        for block in self.blocks:
            x = block(x, freqs, memory, mask, drop)
        return self._logits(x).permute(0, 2, 1, 3)

    # -- incremental decoding ----------------------------------------------------------------

    def init_cache(self, cond: TextCondition, max_steps: int) -> KVCache:
        """Allocate the cache for ``len(cond)`` rows and ``max_steps`` steps; compute the text keys/values."""
        if not 1 <= max_steps <= self.max_steps:
            raise ValueError(f"max_steps={max_steps} must lie in [1, {self.max_steps}] (model.max_frames)")
        self._check_cond(cond, len(cond))
        memory, mask, drop = self._cross_memory(cond)
        cross_kv = (
            None
            if memory is None
            else torch.stack([block.cross_attn.memory(memory) for block in self.blocks])
        )
        text_sum = self._text_sum(cond)
        like = cross_kv if cross_kv is not None else text_sum
        shape = (len(self.blocks), 2, len(cond), self.heads, max_steps, self.head_dim)
        self_kv = torch.empty(shape, dtype=like.dtype, device=like.device)
        return KVCache(
            self_kv=self_kv, cross_kv=cross_kv, cross_mask=mask, cross_drop=drop, text_sum=text_sum
        )

    def forward_step(self, tokens: torch.Tensor, cache: KVCache, pos: int) -> torch.Tensor:
        """Logits ``[N, K, V]`` (float32) after feeding the input tokens ``[N, K]`` of step ``pos``."""
        if pos != cache.length or pos >= cache.max_steps:
            raise ValueError(
                f"pos={pos}: the cache holds {cache.length} of {cache.max_steps} steps; feed step "
                f"{cache.length} next"
            )
        x = F.embedding(tokens + self.offsets, self.embed.view(-1, self.embed.shape[-1])).sum(
            dim=1, keepdim=True
        )
        if self.pos_embed is not None:
            x = x + self.pos_embed.weight[pos]
        if cache.text_sum is not None:
            x = x + cache.text_sum
        freqs = self.freqs[pos : pos + 1] if self.freqs is not None else None
        for i, block in enumerate(self.blocks):
            cross_kv = cache.cross_kv[i] if cache.cross_kv is not None else None
            x = block.step(x, freqs, cache.self_kv[i], pos, cross_kv, cache.cross_mask, cache.cross_drop)
        cache.length = pos + 1
        return self._logits(x)[:, 0]


def build_generator(model_cfg: ModelConfig, num_codebooks: int, cardinality: int, text_dim: int) -> Generator:
    """A freshly initialised :class:`Generator` with the shape ``model_cfg`` describes."""
    if model_cfg.dim % model_cfg.heads:
        raise ValueError(f"model.heads={model_cfg.heads} must divide model.dim={model_cfg.dim}")
    if model_cfg.positions == "rope" and (model_cfg.dim // model_cfg.heads) % 2:
        raise ValueError("model.dim / model.heads must be even with model.positions=rope")
    delays = check_delays(model_cfg.delays, num_codebooks)
    if max(delays) >= model_cfg.max_frames:
        raise ValueError(f"model.max_frames={model_cfg.max_frames} leaves no room for delays {list(delays)}")
    if cardinality < 2 or text_dim < 1:
        raise ValueError(f"cardinality={cardinality} must be >= 2 and text_dim={text_dim} >= 1")
    return Generator(model_cfg, num_codebooks, cardinality, text_dim)


def teacher_forced(model: TokenGenerator, codes: torch.Tensor, cond: TextCondition) -> TeacherForced:
    """Run any generator teacher-forced on undelayed ``codes [B, K, T]`` (pretraining, distillation)."""
    inputs, targets, mask = teacher_forcing_batch(codes, model.delays, model.special_token)
    return TeacherForced(logits=model(inputs, cond), targets=targets, mask=mask)
