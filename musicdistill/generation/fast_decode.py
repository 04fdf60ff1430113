"""Fast decoding for the native generator: static shapes, sampling on the device, CUDA graphs on CUDA.

The reference loop (:func:`musicdistill.generation.sampling.sample_tokens` with ``fast=False``) launches every
kernel of a decode step from Python: a 24-layer step is about 700 kernels of a few microseconds each,
so at small batch a GPU spends most of its time waiting for the launches. A CUDA graph replays a
whole captured step at once, but capture needs every shape and address fixed. This runner therefore

- preallocates the self-attention cache for all steps (zeros, so entries not yet written are finite)
  and writes step s's keys and values at a position held in a device tensor (``index_copy_``);
- attends over a fixed window of the cache with the mask ``key <= pos`` instead of slicing it to
  ``pos + 1``. The window ends at the end of the current chunk of ``chunk`` steps, one graph per
  chunk, so early steps read a short prefix of the cache (about half the cache traffic of one
  full-length window). Masks are additive (0 / -inf in the model's dtype, what SDPA turns a boolean
  mask into), built once per step (self-attention) or per call (text), not once per layer;
- keeps the text keys/values and masks, the fed tokens, the output sequence and its log-probabilities
  in static buffers; a condition with fewer text tokens than the buffer is padded with masked keys;
- samples on the device: CFG (:func:`musicdistill.generation.guidance.combine_cfg_batch`), temperature and top-k/top-p
  (:func:`musicdistill.generation.sampling.truncated_logprobs`) and the exponential race of
  :func:`musicdistill.generation.sampling.sample_next_token`, whose noise the caller's ``torch.Generator`` draws
  into a static buffer before each step exactly as the reference draws it, so a fixed seed gives the
  same samples;
- reads nothing back to the host until the loop ends.

What a captured graph holds: the whole decode step (embedding, all blocks, output heads, CFG,
truncation, the race, delay forcing, writing the outputs and the next inputs, advancing ``pos``).
What runs outside it: the per-step noise draw (one kernel, skipped under greedy decoding), the text
keys/values (computed once per call by ``Generator.init_cache``) and :func:`~musicdistill.model.delay.undo_delay`.
On the CPU, or with ``graphs=False``, the same step runs eagerly; that is the path the CPU tests
compare with the reference loop token for token.

The MusicGen backbone (:class:`musicdistill.model.musicgen.MusicgenBackbone`) is not handled here: it keeps
transformers' decoder, whose ``DynamicCache`` grows by concatenation every step, so it runs the
reference loop eagerly (sampling on the device, no host sync per step, one Python-launched decoder
forward per step).

A decoder keeps its buffers (the KV cache: ``layers x 2 x rows x heads x steps x head_dim`` elements)
and graphs between calls: :func:`decode` caches one per model and reuses it while the settings,
shapes and parameter storage stay the same. Parameters updated in place (an optimizer step) are read
by the next replay; :func:`release` frees the memory.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from musicdistill.generation.guidance import cfg_batch, combine_cfg_batch, is_guided
from musicdistill.generation.next_token import (
    check_deadline,
    check_num_frames,
    race_draw,
    race_noise_,
    truncated_logprobs,
)
from musicdistill.generation.spec import SamplingSpec
from musicdistill.model.delay import valid_mask
from musicdistill.model.generator import Generator
from musicdistill.model.text import TextCondition
from musicdistill.progress import track

log = logging.getLogger(__name__)

#: default steps per attention window (and per captured graph)
CHUNK = 64


@dataclass(frozen=True)
class DecodeSpec:
    """What stays fixed while a decoder is reused: N sequences of ``num_frames`` frames, at most
    ``text_len`` text tokens per row, the sampling settings and the attention window ``chunk``."""

    rows: int
    num_frames: int
    text_len: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    cfg_scale: float = 1.0
    chunk: int = CHUNK


def supports(model: object) -> bool:
    """Whether :class:`StaticDecoder` can run ``model`` (the native :class:`~musicdistill.model.generator.Generator`)."""
    return isinstance(model, Generator)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")


def _pad_text(cond: TextCondition, length: int) -> TextCondition:
    """Zero states and False mask appended to ``length`` text tokens (masked keys change no output)."""
    pad = length - cond.states.shape[1]
    if pad == 0:
        return cond
    return TextCondition(
        F.pad(cond.states, (0, 0, 0, pad)), F.pad(cond.mask, (0, pad), value=False), cond.dial
    )


class StaticDecoder:
    """The sampler's decode loop for one native generator and one :class:`DecodeSpec`, with static shapes.

    Args:
        model: the native generator (its parameters are read at every step, not copied).
        spec: rows, frames, text length and sampling settings.
        graphs: capture each step in a CUDA graph (default: on CUDA); True on the CPU is an error.

    :meth:`run` returns the delayed sequence ``[N, K, S]`` and its log-probabilities ``[N, K, S]``
    (S = num_frames + max(delays)), equal to what the reference loop returns for the same inputs.
    """

    def __init__(self, model: Generator, spec: DecodeSpec, graphs: bool | None = None) -> None:
        if not supports(model):
            raise ValueError(
                f"StaticDecoder runs the native Generator only, got {type(model).__name__}; other "
                "generators (the MusicGen backbone) use sample_tokens(..., fast=False)"
            )
        _check_positive("rows", spec.rows)
        _check_positive("text_len", spec.text_len)
        _check_positive("chunk", spec.chunk)
        SamplingSpec(spec.cfg_scale, spec.temperature, spec.top_k, spec.top_p).for_cardinality(
            model.cardinality
        )
        check_num_frames(model, spec.num_frames)
        weight = model.embed
        self.device, self.dtype = weight.device, weight.dtype
        if graphs is None:
            graphs = self.device.type == "cuda"
        if graphs and self.device.type != "cuda":
            raise ValueError(f"graphs=True needs the model on a CUDA device; it is on {self.device}")
        self.spec, self.graphs = spec, graphs
        self._model = weakref.ref(model)  # a strong reference would keep the module cache's key alive
        self.guided = is_guided(spec.cfg_scale)
        self.steps = spec.num_frames + max(model.delays)
        self.model_rows = 2 * spec.rows if self.guided else spec.rows
        self.special = model.special_token
        self.limits = sorted({self.limit(s) for s in range(self.steps)})
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        with torch.inference_mode():
            self._allocate(model)

    # -- state -----------------------------------------------------------------------------------

    def _allocate(self, model: Generator) -> None:
        """Zero-filled static buffers (finite everywhere, so masked entries never turn into NaN)."""
        rows, n, k = self.model_rows, self.spec.rows, model.num_codebooks
        heads, head_dim, dim = model.heads, model.head_dim, model.cfg.dim
        blocks, text_len = len(model.blocks), self.spec.text_len
        on = {"device": self.device}
        self.self_kv = torch.zeros(blocks, 2, rows, heads, self.steps, head_dim, dtype=self.dtype, **on)
        self.cross_kv = self.cross_mask = self.cross_drop = self.text_sum = None
        if model.has_cross:
            self.cross_kv = torch.zeros(blocks, 2, rows, heads, text_len, head_dim, dtype=self.dtype, **on)
            # additive mask [R, 1, 1, S], rows padded to 16 elements (the alignment fused attention kernels
            # want, so they need no padded copy of it per layer)
            padded = -(-text_len // 16) * 16
            self.cross_mask = torch.zeros(rows, 1, 1, padded, dtype=self.dtype, **on)[..., :text_len]
            self.cross_drop = torch.zeros(rows, 1, 1, dtype=torch.bool, **on)
        if model.text_sum is not None or model.dial is not None:
            self.text_sum = torch.zeros(rows, 1, dim, dtype=self.dtype, **on)
        self.tokens = torch.full((rows, k), self.special, dtype=torch.long, **on)
        self.pos = torch.zeros(1, dtype=torch.long, **on)
        self.positions = torch.arange(self.steps, **on)
        self.open = torch.zeros(self.steps, dtype=self.dtype, **on)  # additive mask of visible keys
        self.forced = ~valid_mask(k, self.spec.num_frames, model.delays, device=self.device)  # [K, S]
        self.seq = torch.full((n, k, self.steps), self.special, dtype=torch.long, **on)
        self.logps = torch.zeros(n, k, self.steps, dtype=torch.float32, **on)
        greedy = self.spec.temperature == 0.0
        self.race = None if greedy else torch.ones(n, k, model.cardinality, dtype=torch.float32, **on)

    def state_bytes(self) -> int:
        """Bytes held by the static buffers (the KV cache dominates)."""
        tensors = (
            self.self_kv,
            self.cross_kv,
            self.cross_mask,
            self.cross_drop,
            self.text_sum,
            self.tokens,
            self.seq,
            self.logps,
            self.race,
        )
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def _model_or_raise(self) -> Generator:
        model = self._model()
        if model is None:
            raise RuntimeError("the generator this StaticDecoder was built for no longer exists")
        return model

    def _load(self, model: Generator, cond: TextCondition) -> None:
        """Copy the condition's text keys/values (and masks, sentence term) into the static buffers."""
        if len(cond) != self.spec.rows:
            raise ValueError(
                f"the condition has {len(cond)} rows; this decoder was built for {self.spec.rows}"
            )
        if cond.states.shape[1] > self.spec.text_len:
            raise ValueError(
                f"the condition has {cond.states.shape[1]} text tokens; this decoder holds at most "
                f"{self.spec.text_len}"
            )
        cond = _pad_text(cond.to(self.device), self.spec.text_len)
        rows_cond = cfg_batch(cond) if self.guided else cond
        cache = model.init_cache(rows_cond, 1)
        if self.cross_kv is not None:
            self.cross_kv.copy_(cache.cross_kv)
            self.cross_mask.copy_(torch.zeros_like(self.cross_mask).masked_fill(~cache.cross_mask, -math.inf))
            if cache.cross_drop is None:
                self.cross_drop.zero_()
            else:
                self.cross_drop.copy_(cache.cross_drop)
        if self.text_sum is not None:
            self.text_sum.copy_(cache.text_sum)

    def _restart(self) -> None:
        self.pos.zero_()
        self.tokens.fill_(self.special)

    def limit(self, step: int) -> int:
        """The attention window (cache prefix length) used at ``step``."""
        return min(self.steps, (step // self.spec.chunk + 1) * self.spec.chunk)

    # -- one step ------------------------------------------------------------------------------------

    def _step(self, model: Generator, limit: int) -> None:
        """Feed ``self.tokens`` at step ``self.pos`` over the cache prefix ``[0, limit)``; write the step's
        tokens and log-probs, the next inputs, and advance ``pos``. Static shapes, no host sync."""
        pos = self.pos
        flat = model.embed.view(-1, model.embed.shape[-1])
        x = F.embedding(self.tokens + model.offsets, flat).sum(dim=1, keepdim=True)  # [R, 1, D]
        if model.pos_embed is not None:
            x = x + model.pos_embed.weight.index_select(0, pos)
        if self.text_sum is not None:
            x = x + self.text_sum
        freqs = model.freqs.index_select(0, pos) if model.freqs is not None else None
        visible = self.open[:limit].masked_fill(self.positions[:limit] > pos, -math.inf).view(1, 1, 1, limit)
        for i, block in enumerate(model.blocks):
            x = self._block(block, i, x, freqs, visible, limit)
        logits = model._logits(x)[:, 0]  # [R, K, V] float32
        self._sample(logits)

    def _block(
        self, block, i: int, x: torch.Tensor, freqs: torch.Tensor | None, visible: torch.Tensor, limit: int
    ) -> torch.Tensor:
        """``Block.step`` with the cache written at the device position and read through a masked window."""
        q, k, v = block.self_attn._qkv(block.norm_self(x), freqs)  # [R, H, 1, Dh] each
        kv = self.self_kv[i]
        kv[0].index_copy_(2, self.pos, k)
        kv[1].index_copy_(2, self.pos, v)
        y = F.scaled_dot_product_attention(q, kv[0, :, :, :limit], kv[1, :, :, :limit], attn_mask=visible)
        x = x + block.self_attn.out(y.transpose(1, 2).reshape(x.shape))
        if block.has_cross:
            x = x + block.cross_attn(block.norm_cross(x), self.cross_kv[i], self.cross_mask, self.cross_drop)
        return x + block.ff(block.norm_ff(x))

    def _sample(self, logits: torch.Tensor) -> None:
        """``sample_next_token`` after CFG, on the device, into the static outputs."""
        spec = self.spec
        if self.guided:
            logits = combine_cfg_batch(logits, spec.cfg_scale)
        if self.race is None:
            tokens = logits.argmax(dim=-1)
            logp = torch.zeros_like(tokens, dtype=torch.float32)
        else:
            tokens, logp = race_draw(
                truncated_logprobs(logits, spec.temperature, spec.top_k, spec.top_p), self.race
            )
        tokens = tokens.masked_fill(self.forced.index_select(1, self.pos).view(-1), self.special)
        self.seq.index_copy_(2, self.pos, tokens.unsqueeze(-1))
        self.logps.index_copy_(2, self.pos, logp.unsqueeze(-1))
        self.tokens.copy_(tokens.repeat(self.model_rows // spec.rows, 1))
        self.pos.add_(1)

    # -- graphs -----------------------------------------------------------------------------------

    def _capture(self, model: Generator) -> None:
        """One CUDA graph per attention window, sharing one memory pool, after an eager warm-up on a side
        stream (cuBLAS and attention pick their kernels there, outside the capture)."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for limit in self.limits:
                self._restart()
                self._step(model, limit)
        current.wait_stream(side)
        pool = None
        for limit in self.limits:
            self._restart()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._step(model, limit)
            pool = graph.pool()
            self._graphs[limit] = graph
        log.debug(
            "captured %d decode-step graphs (%d rows, %d steps)",
            len(self._graphs),
            self.model_rows,
            self.steps,
        )

    # -- the loop ---------------------------------------------------------------------------------

    def run(
        self,
        cond: TextCondition,
        generator: torch.Generator | None = None,
        progress: bool = False,
        deadline: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``cond``'s N rows: -> (delayed tokens ``[N, K, S]``, log-probs ``[N, K, S]``).
        ``deadline`` stops it with TimeoutError as :func:`musicdistill.generation.sampling.sample_tokens` does.

        The results are the decoder's own buffers, overwritten by the next run: copy them to keep them.
        The model runs in eval mode for the call (and gets its previous mode back).
        """
        model = self._model_or_raise()
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                self._load(model, cond)
                if self.graphs and not self._graphs:
                    self._capture(model)
                self._restart()
                for s in track(
                    range(self.steps), desc="sampling", unit="step", enabled=progress, leave=False
                ):
                    check_deadline(deadline, s, self.steps)
                    if self.race is not None:
                        race_noise_(self.race, generator)
                    limit = self.limit(s)
                    if self.graphs:
                        self._graphs[limit].replay()
                    else:
                        self._step(model, limit)
        finally:
            model.train(was_training)
        return self.seq, self.logps


# --------------------------------------------------------------------------------------------
# One cached decoder per model
# --------------------------------------------------------------------------------------------

_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (storage key, StaticDecoder)


def _storage_key(model: torch.nn.Module) -> tuple:
    """Where the parameters and buffers live: a captured graph reads these addresses."""
    return tuple((t.data_ptr(), t.dtype) for t in itertools.chain(model.parameters(), model.buffers()))


def cached_decoder(model: torch.nn.Module) -> StaticDecoder | None:
    """The decoder :func:`decode` keeps for ``model``, if any."""
    entry = _DECODERS.get(model)
    return None if entry is None else entry[1]


def release(model: torch.nn.Module) -> None:
    """Drop the decoder (buffers and graphs) kept for ``model``."""
    _DECODERS.pop(model, None)


def decoder_for(model: Generator, spec: DecodeSpec, graphs: bool | None = None) -> StaticDecoder:
    """The cached decoder of ``model`` if it fits ``spec`` (same settings, at least ``spec.text_len`` text
    tokens, same parameter storage), else a new one, which replaces it (the old one is freed first)."""
    key = _storage_key(model)
    entry = _DECODERS.get(model)
    if entry is not None:
        old_key, old = entry
        wanted_graphs = old.device.type == "cuda" if graphs is None else graphs
        if (
            old_key == key
            and old.graphs == wanted_graphs
            and old.spec.text_len >= spec.text_len
            and old.spec == replace(spec, text_len=old.spec.text_len)
        ):
            return old
        release(model)
    decoder = StaticDecoder(model, spec, graphs)
    _DECODERS[model] = (key, decoder)
    return decoder


def decode(
    model: Generator,
    cond: TextCondition,
    num_frames: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    chunk: int = CHUNK,
    deadline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast counterpart of the reference loop: delayed tokens and log-probs ``[N, K, S]``.

    Runs the model's cached :class:`StaticDecoder` (see :func:`decoder_for`); the results are its
    buffers, valid until the next call for this model.
    """
    spec = DecodeSpec(
        rows=len(cond),
        num_frames=num_frames,
        text_len=cond.states.shape[1],
        temperature=float(temperature),
        top_k=top_k,
        top_p=float(top_p),
        cfg_scale=float(cfg_scale),
        chunk=chunk,
    )
    return decoder_for(model, spec).run(cond, generator, progress, deadline)
