"""What the distillation loop is given and passes between its pieces: the prompt sets, the parts
(:class:`DistillParts`: student, teacher, text encoding, reward), one batch of rollouts
(:class:`Rollouts`) and the random streams each kind of draw takes.

The loop is :mod:`musicdistill.training.distill`; the offline pools are
:mod:`musicdistill.training.offline_pool`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from musicdistill.model.text import TextCondition

#: :func:`~musicdistill.loop_kit.step_generator` streams, one per kind of random draw
(
    ROLLOUT_STREAM,
    PROMPT_STREAM,
    POOL_PROMPT_STREAM,
    POOL_SAMPLE_STREAM,
    OFFLINE_STREAM,
    EVAL_STREAM,
    DIAL_STREAM,
) = range(7)

#: codes [N, K, T] -> L2-normalised embeddings [N, E] of the decoded audio (the reward model)
RewardEmbed = Callable[[torch.Tensor], torch.Tensor]
#: (codes [N, K, T], per-row attribute dicts) -> golden quality in [0, 1] (e.g. attribute adherence)
GoldenMetric = Callable[[torch.Tensor, list[dict[str, Any] | None]], float]


@dataclass
class PromptSet:
    """Prompts with optional attribute labels (for the golden metric)."""

    prompts: list[str]
    attributes: list[dict[str, Any] | None]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class DistillParts:
    """Everything the loop needs, built by the caller (CLI, pipeline or test).

    ``student`` and ``teacher`` are generators with the interface of :mod:`musicdistill.model.generator`
    (the teacher is frozen); ``encode`` maps prompts to a :class:`TextCondition`; ``num_frames`` is
    the rollout length; ``reward_embed`` is required when β > 0; ``golden`` is optional.
    ``dataset_codes`` / ``dataset_prompts`` feed ``mode="dataset"``.
    """

    student: torch.nn.Module
    teacher: torch.nn.Module
    encode: Callable[[list[str]], TextCondition]
    train: PromptSet
    held_out: PromptSet
    num_frames: int
    reward_embed: RewardEmbed | None = None
    golden: GoldenMetric | None = None
    dataset_codes: torch.Tensor | None = None
    dataset_prompts: list[str] | None = None


@dataclass
class Rollouts:
    """``codes [N, K, T]`` for N = B·G rows (prompt-major) and the N prompts they answer; for an
    offline pool, optionally the CFG teacher's logits on them ``[N, K, S, V]``, computed once; for a
    conditioned student, the diversity weight w each row was sampled at ``[N]``."""

    codes: torch.Tensor
    prompts: list[str]
    teacher_logits: torch.Tensor | None = None
    dial: torch.Tensor | None = None  # a conditioned student's w per row [N] (the same within a group)
