"""Classifier-free guidance: the one place its arithmetic lives (sampler, teacher and demo use it).

CFG mixes the conditional and unconditional logits in raw logit space, before temperature, top-k/p
and softmax, exactly as audiocraft (``LMModel._sample_next_token``) and transformers
(``ClassifierFreeGuidanceLogitsProcessor``) do::

    l_γ = l(·|∅) + γ · (l(·|x) − l(·|∅))

It runs as one forward at double batch size: the conditional rows first, the null rows second
(:func:`cfg_batch`), so it costs two model rows per sample.
"""

from __future__ import annotations

import torch

from musicdistill.config import MAX_CFG_SCALE
from musicdistill.model.generator import TokenGenerator
from musicdistill.model.text import TextCondition, concat_conditions, null_condition


def check_cfg_scale(scale: float, name: str = "cfg_scale") -> float:
    """Validate a guidance scale: a number in [0, 50] (1 = no guidance, 0 = unconditional)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= MAX_CFG_SCALE:
        raise ValueError(
            f"{name}={scale!r} is out of range; it must lie in [0, {MAX_CFG_SCALE:g}] (1 = no guidance)"
        )
    return float(scale)


def is_guided(scale: float) -> bool:
    """Whether a scale needs the unconditional branch (any scale but exactly 1)."""
    return scale != 1.0


def apply_cfg(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale · (cond − uncond)`` on raw logits of any (equal) shape; scale 1 returns ``cond_logits``."""
    if scale == 1.0:
        return cond_logits
    return uncond_logits + (cond_logits - uncond_logits) * scale


def cfg_batch(cond: TextCondition) -> TextCondition:
    """``[N]`` conditions -> ``[2N]``: the N conditional rows first, then N null rows (:func:`null_condition`)."""
    return concat_conditions([cond, null_condition(cond)])


def combine_cfg_batch(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits of a :func:`cfg_batch` forward ``[2N, ...]`` -> guided logits ``[N, ...]``."""
    n = logits.shape[0] // 2
    if logits.shape[0] != 2 * n:
        raise ValueError(
            f"a CFG batch has an even number of rows (conditional, then null); got {logits.shape[0]}"
        )
    return apply_cfg(logits[:n], logits[n:], scale)


def guided_forward(
    model: TokenGenerator, inputs: torch.Tensor, cond: TextCondition, scale: float
) -> torch.Tensor:
    """Teacher-forced guided logits: ``inputs [N, K, S]`` -> ``[N, K, S, V]`` (distillation's CFG teacher).

    ``model`` is any generator with ``forward(inputs, cond)``. Scale 1 runs the conditional rows
    only; any other scale runs one doubled batch and combines it with :func:`apply_cfg`.
    """
    if not is_guided(scale):
        return model(inputs, cond)
    return combine_cfg_batch(model(torch.cat([inputs, inputs]), cfg_batch(cond)), scale)
