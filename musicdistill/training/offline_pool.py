"""The offline distillation modes' pools (docs/method.md): sequences sampled once from the CFG
teacher (``distill.mode=teacher``) with its logits computed once, or the dataset's own tokens
(``mode=dataset``), and each step's share of B groups of G sequences drawn from a pool.
"""

from __future__ import annotations

import logging

import torch

from musicdistill.config import DistillConfig
from musicdistill.generation.guidance import guided_forward
from musicdistill.generation.sampling import sample_tokens
from musicdistill.loop_kit import step_generator
from musicdistill.model.delay import teacher_forcing_batch
from musicdistill.progress import track
from musicdistill.runtime import autocast
from musicdistill.training.distill_parts import (
    OFFLINE_STREAM,
    POOL_PROMPT_STREAM,
    POOL_SAMPLE_STREAM,
    DistillParts,
    Rollouts,
)
from musicdistill.training.distributed import DistInfo

log = logging.getLogger(__name__)

#: an offline pool's teacher logits are computed once when they take at most this many bytes
MAX_POOL_LOGITS_BYTES = 1 << 30


def teacher_pool(parts: DistillParts, dc: DistillConfig, device: torch.device) -> Rollouts:
    """``offline_pool`` sequences sampled once from the CFG teacher (G per prompt)."""
    groups = max(1, dc.offline_pool // dc.group_size)
    idx = torch.randint(len(parts.train), (groups,), generator=step_generator(dc.seed, 0, POOL_PROMPT_STREAM))
    prompts = [parts.train.prompts[i] for i in idx.tolist()]
    gen = step_generator(dc.seed, 0, POOL_SAMPLE_STREAM, device=device)
    codes = []
    for start in track(range(0, groups, 16), "sampling the teacher pool", unit="batch", leave=False):
        cond = parts.encode(prompts[start : start + 16]).repeat_interleave(dc.group_size)
        c, _ = sample_tokens(parts.teacher, cond, parts.num_frames, cfg_scale=dc.gamma, generator=gen)
        codes.append(c)
    return Rollouts(torch.cat(codes), [p for p in prompts for _ in range(dc.group_size)])


@torch.no_grad()
def with_teacher_logits(
    parts: DistillParts, pool: Rollouts, dc: DistillConfig, device: torch.device
) -> Rollouts:
    """The teacher-sampled pool with the CFG teacher's logits on every sequence, computed once in batches
    of a step's size (each row's logits do not depend on the rows beside it), so the offline steps
    skip the teacher's forward. A pool whose logits would take more than ``MAX_POOL_LOGITS_BYTES``
    is returned as it is (the teacher then runs at every step)."""
    student = parts.student
    rows, k, frames = pool.codes.shape
    steps_len = frames + max(student.delays)
    size = rows * k * steps_len * student.cardinality * 4
    if size > MAX_POOL_LOGITS_BYTES:
        log.info(
            "the teacher's logits on the %d pool sequences would take %.1f GiB: computed at every step instead",
            rows,
            size / 2**30,
        )
        return pool
    batch = dc.prompts_per_step * dc.group_size
    chunks = []
    for start in track(range(0, rows, batch), "the teacher on the pool", unit="batch", leave=False):
        codes = pool.codes[start : start + batch].to(device)
        inputs, _, _ = teacher_forcing_batch(codes, student.delays, student.special_token)
        with autocast(device, dc.bf16):
            chunks.append(
                guided_forward(
                    parts.teacher, inputs, parts.encode(pool.prompts[start : start + batch]), dc.gamma
                )
            )
    return Rollouts(pool.codes, pool.prompts, torch.cat(chunks))


def offline_batch(pool: Rollouts, dc: DistillConfig, step: int, info: DistInfo) -> Rollouts:
    """This rank's share of B groups of G sequences from an offline pool (teacher or dataset)."""
    groups = pool.codes.shape[0] // dc.group_size
    idx = torch.randint(
        groups, (dc.prompts_per_step,), generator=step_generator(dc.seed, step, OFFLINE_STREAM)
    )
    share = dc.prompts_per_step // info.world_size
    mine = idx[info.rank * share : (info.rank + 1) * share]
    rows = (mine[:, None] * dc.group_size + torch.arange(dc.group_size)).flatten()
    logits = None if pool.teacher_logits is None else pool.teacher_logits[rows.to(pool.teacher_logits.device)]
    return Rollouts(pool.codes[rows], [pool.prompts[i] for i in rows.tolist()], logits)
