"""Diversity-rewarded CFG distillation: THE finetuning loop, readable top to bottom.

Each step (docs/method.md sections 3-4):

1. take B prompts and draw G rollouts per prompt from the student, without CFG, with the KV cache
   and no gradient (``mode="on_policy"``; the offline modes take sequences sampled once from the
   CFG teacher, or dataset clips, to compare against: teacher hacking; :mod:`musicdistill.training.offline_pool`);
2. run the frozen teacher teacher-forced on those rollouts, conditional and null rows in one
   batch-doubled forward combined at scale γ (:func:`~musicdistill.generation.guidance.guided_forward`),
   and the student teacher-forced with gradients;
3. distillation loss: per-position, per-codebook divergence over valid positions (reverse
   KL(student ‖ CFG teacher) by default), averaged over valid tokens;
4. decode the rollouts, embed them with the frozen reward embedder, reward each rollout by its
   mean cosine distance to its siblings, leave-one-out baseline, REINFORCE on the sequence
   log-probability, weighted by β;
5. ``loss = KL + β · REINFORCE``, AdamW (no weight decay on norms, biases and embeddings), gradient
   clipping, learning rate constant after a linear warm-up.

Batches and random draws are pure functions of (seed, step, rank), so a resumed run ends with
exactly the parameters of an uninterrupted one. Optimizer, schedule, step seeding, snapshots and
progress come from the kit in :mod:`musicdistill.loop_kit`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musicdistill.config import Config, ConfigError, DistillConfig, config_to_dict
from musicdistill.generation.guidance import guided_forward
from musicdistill.generation.sampling import sample_tokens
from musicdistill.loop_kit import (
    make_optimizer,
    make_scheduler,
    optimizer_step,
    resume_training,
    save_training_snapshot,
    step_generator,
)
from musicdistill.model.delay import teacher_forcing_batch
from musicdistill.model.dial import W_RANGE, check_dial_lr_scale
from musicdistill.progress import Progress
from musicdistill.runtime import autocast, device_clock
from musicdistill.storage.checkpoint import save_checkpoint
from musicdistill.storage.row_sinks import RowLog
from musicdistill.storage.sharded_snapshot import save_sharded_snapshot
from musicdistill.training.distill_parts import (
    DIAL_STREAM,
    EVAL_STREAM,
    PROMPT_STREAM,
    ROLLOUT_STREAM,
    DistillParts,
    PromptSet,
    RewardEmbed,
    Rollouts,
)
from musicdistill.training.distributed import DistInfo, all_reduce_mean, any_rank, barrier
from musicdistill.training.fsdp import full_state_dict, gathered
from musicdistill.training.losses import (
    combined_loss,
    group_normalized,
    leave_one_out_advantages,
    pairwise_distances,
    pairwise_diversity_reward,
    policy_entropy,
    reinforce_loss,
    sequence_logprob,
    token_divergence,
)
from musicdistill.training.offline_pool import offline_batch, teacher_pool, with_teacher_logits
from musicdistill.training.parallel import parallelize

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Pieces of one step
# --------------------------------------------------------------------------------------------


def step_prompts(prompts: PromptSet, dc: DistillConfig, step: int, info: DistInfo) -> list[str]:
    """This rank's share of the step's B prompts (drawn identically on every rank, then split)."""
    g = step_generator(dc.seed, step, PROMPT_STREAM)
    idx = torch.randint(len(prompts), (dc.prompts_per_step,), generator=g).tolist()
    share = dc.prompts_per_step // info.world_size
    mine = idx[info.rank * share : (info.rank + 1) * share]
    return [prompts.prompts[i] for i in mine]


def step_dial(dc: DistillConfig, step: int, info: DistInfo) -> torch.Tensor:
    """A conditioned student's w for this rank's share of the step's B prompts, ``[B / ranks]``
    (w ~ U[0, 1], drawn identically on every rank, then split)."""
    w = torch.rand(dc.prompts_per_step, generator=step_generator(dc.seed, step, DIAL_STREAM))
    share = dc.prompts_per_step // info.world_size
    return w[info.rank * share : (info.rank + 1) * share]


def student_rollouts(
    student,
    encode,
    prompts: list[str],
    dc: DistillConfig,
    num_frames: int,
    generator: torch.Generator,
    dial: torch.Tensor | None = None,
) -> Rollouts:
    """G samples per prompt from the student without CFG (KV cache, no gradient); a conditioned
    student samples prompt b's G rollouts at its ``dial[b]``."""
    cond = encode(prompts)
    if dial is not None:
        cond = cond.with_dial(dial.to(cond.states.device))
    cond = cond.repeat_interleave(dc.group_size)
    codes, _ = sample_tokens(
        student, cond, num_frames, temperature=dc.temperature, cfg_scale=1.0, generator=generator
    )
    return Rollouts(codes=codes, prompts=[p for p in prompts for _ in range(dc.group_size)], dial=cond.dial)


def reward_terms(
    reward_embed: RewardEmbed | None, codes: torch.Tensor, group_size: int, advantage_norm: str = "none"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(rewards [N], leave-one-out advantages [N]) of the rollouts, or (None, None) without a reward model.

    ``advantage_norm="group"`` divides each prompt's advantages by their standard deviation
    (:func:`group_normalized`); ``"none"`` keeps them in the reward's units.
    """
    if reward_embed is None:
        return None, None
    with torch.no_grad():
        embeddings = reward_embed(codes).float()  # [N, E]
        rewards = pairwise_diversity_reward(embeddings, group_size)
        advantages = leave_one_out_advantages(pairwise_distances(embeddings, group_size))
        if advantage_norm == "group":
            advantages = group_normalized(advantages, group_size)
    return rewards, advantages


# --------------------------------------------------------------------------------------------
# Held-out evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_student(parts: DistillParts, dc: DistillConfig, device: torch.device) -> dict[str, float]:
    """On held-out prompts: student samples (no CFG), their KL to the CFG teacher, reward, golden metric."""
    n = min(dc.eval_prompts, len(parts.held_out))
    prompts = parts.held_out.prompts[:n]
    gen = step_generator(dc.seed, 0, EVAL_STREAM, device=device)
    with gathered(parts.student):
        roll = student_rollouts(parts.student, parts.encode, prompts, dc, parts.num_frames, gen)
    cond = parts.encode(roll.prompts)
    inputs, _, mask = teacher_forcing_batch(roll.codes, parts.student.delays, parts.student.special_token)
    parts.student.eval()
    with autocast(device, dc.bf16):
        teacher_logits = guided_forward(parts.teacher, inputs, cond, dc.gamma)
        student_logits = parts.student(inputs, cond)
    kl, _ = token_divergence(student_logits, teacher_logits, mask, kind="reverse_kl")
    parts.student.train()
    out = {"eval_teacher_kl": kl.item()}
    rewards, _ = reward_terms(parts.reward_embed, roll.codes, dc.group_size)
    if rewards is not None:
        out["eval_diversity"] = rewards.mean().item()
    if parts.golden is not None:
        attrs = [parts.held_out.attributes[i] for i in range(n) for _ in range(dc.group_size)]
        out["eval_golden"] = float(parts.golden(roll.codes, attrs))
    return out


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


class StepTimer:
    """Wall time of the phases of one step on the device's clock: ``with timer("teacher"): ...``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.times: dict[str, float] = {}
        self._phase: str | None = None
        self._t0 = 0.0

    def __call__(self, phase: str) -> StepTimer:
        self._phase = phase
        return self

    def __enter__(self) -> StepTimer:
        self._t0 = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.times[str(self._phase)] = self.clock() - self._t0

    def take(self) -> dict[str, float]:
        """The step's phase times (seconds), cleared for the next step."""
        times, self.times = self.times, {}
        return times


@dataclass
class StepResult:
    """What one training step computed: the losses, the student's logits and mask (for the log), the
    rewards (None off-policy or without a reward model) and the gradient norm (None: step skipped)."""

    loss: torch.Tensor
    kl: torch.Tensor
    pg: torch.Tensor
    student_logits: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor | None
    grad_norm: float | None


def train_step(
    parts: DistillParts,
    model: torch.nn.Module,
    roll: Rollouts,
    dc: DistillConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    info: DistInfo,
    timer: StepTimer,
    on_policy: bool = True,
) -> StepResult:
    """Steps 2-5 of the module doc on rollouts ``roll`` (codes ``[N, K, T]`` on ``device``).

    The frozen teacher runs teacher-forced with CFG (unless ``roll`` carries its logits: an offline
    pool's, computed once), the reward model scores the rollouts (on-policy
    only), ``model`` (the student, or its DDP wrapper) runs teacher-forced with gradients, and
    ``loss = divergence + β · REINFORCE`` takes one optimizer step, unless the loss is non-finite on
    any rank (then the gradients are cleared and ``grad_norm`` is None).
    """
    student, codes = parts.student, roll.codes
    with timer("teacher"):
        cond = parts.encode(roll.prompts)
        inputs, targets, mask = teacher_forcing_batch(codes, student.delays, student.special_token)
        teacher_logits = roll.teacher_logits
        if teacher_logits is None:
            with torch.no_grad(), autocast(device, dc.bf16):
                teacher_logits = guided_forward(parts.teacher, inputs, cond, dc.gamma)
    with timer("reward"):
        rewards, advantages = (
            reward_terms(parts.reward_embed, codes, dc.group_size, dc.advantage_norm)
            if on_policy
            else (None, None)
        )
    with timer("student"):
        with autocast(device, dc.bf16):
            student_logits = model(inputs, cond if roll.dial is None else cond.with_dial(roll.dial))
        kl, _ = token_divergence(
            student_logits,
            teacher_logits,
            mask,
            kind=dc.divergence,
            beta=dc.divergence_beta,
            confident_weight=dc.confident_weight,
            confident_threshold=dc.confident_threshold,
        )
        pg = torch.zeros((), device=device)
        if advantages is not None:
            seq_lp = sequence_logprob(student_logits, targets, mask, temperature=dc.temperature)
            num_tokens = int(mask.sum()) * codes.shape[0]
            advantages = advantages.to(device)
            if roll.dial is not None:  # β(w) = w · β_max per group: w scales the group's term
                advantages = advantages * roll.dial.to(device)
            pg = reinforce_loss(seq_lp, advantages, dc.reinforce_normalize, num_tokens)
        loss = combined_loss(kl, pg, dc.beta)
        grad_norm = None
        if any_rank(not bool(torch.isfinite(loss)), info, device):
            optimizer.zero_grad(set_to_none=True)
        else:
            grad_norm = optimizer_step(loss, student, optimizer, scheduler, dc.grad_clip)
    return StepResult(loss, kl, pg, student_logits, mask, rewards, grad_norm)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def check_distill_config(
    dc: DistillConfig, parts: DistillParts, info: DistInfo, dial_hidden: int = 0
) -> None:
    """Problems that only show once the parts exist; raised before any work starts."""
    if dc.prompts_per_step % info.world_size:
        raise ConfigError(
            f"distill.prompts_per_step={dc.prompts_per_step} must be divisible by the number of "
            f"processes ({info.world_size}) so that each rank keeps whole groups of G rollouts"
        )
    if dc.beta > 0 and parts.reward_embed is None:
        raise ConfigError(
            f"distill.beta={dc.beta} needs a reward embedder (train one with 'musicdistill embed "
            "train', then pass --embedder DIR)"
        )
    if dc.beta > 0 and dc.mode != "on_policy":
        raise ConfigError(
            f"distill.beta={dc.beta} needs distill.mode=on_policy: REINFORCE is only valid on the "
            f"student's own samples (got mode={dc.mode})"
        )
    if dc.mode == "dataset" and parts.dataset_codes is None:
        raise ConfigError("distill.mode=dataset needs the encoded dataset (tokens)")
    conditioned = dial_hidden > 0 or getattr(parts.student, "dial", None) is not None
    if conditioned and not (dc.beta > 0 and dc.mode == "on_policy"):
        raise ConfigError(
            "a conditioned student (--dial-hidden) has the reward weight w * distill.beta on its own samples: "
            f"it needs distill.beta > 0 and distill.mode=on_policy (got beta={dc.beta}, mode={dc.mode})"
        )
    if dial_hidden and not hasattr(parts.student, "attach_dial"):
        raise ConfigError(
            f"--dial-hidden {dial_hidden}: {type(parts.student).__name__} takes no diversity dial; a "
            "conditioned student needs the native generator or the MusicGen backbone"
        )


def distill(
    cfg: Config,
    parts: DistillParts,
    out: str | Path,
    provenance: dict[str, Any],
    device: torch.device,
    info: DistInfo | None = None,
    resume: bool = False,
    dial_hidden: int = 0,
    dial_lr_scale: float = 1.0,
) -> Path:
    """Finetune ``parts.student`` toward the CFG teacher (+ β · diversity); checkpoints go to ``out``.

    ``dial_hidden`` > 0 (or a student that already has a dial) trains a conditioned student
    (docs/method.md 4.1): w ~ U[0, 1] per prompt group, the reward weighted by w · β; its dial trains at
    ``dial_lr_scale`` × ``distill.lr``.
    """
    dc = cfg.distill
    out = Path(out)
    info = info or DistInfo()
    check_distill_config(dc, parts, info, dial_hidden)
    check_dial_lr_scale(dial_lr_scale)
    student, teacher = parts.student, parts.teacher
    teacher.eval().requires_grad_(False)
    if dial_hidden:
        student.attach_dial(dial_hidden)
    conditioned = getattr(student, "dial", None) is not None
    forward_model, sharded = parallelize(student, teacher, parts.num_frames, dc, info, device)
    scales = {"dial": dial_lr_scale} if conditioned else None
    optimizer = make_optimizer(student, dc.lr, dc.weight_decay, lr_scales=scales)
    scheduler = make_scheduler(optimizer, dc.steps, dc.warmup_steps, min_ratio=1.0)  # constant after warm-up
    start, state = resume_training(
        out, student, optimizer, scheduler, resume, trim_history=info.is_main, sharded=sharded
    )
    bad_streak = int(state.get("bad_streak", 0))
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    pool = None
    if dc.mode == "teacher":
        with gathered(teacher):
            sampled = teacher_pool(parts, dc, device)
        pool = with_teacher_logits(parts, sampled, dc, device)
    elif dc.mode == "dataset":
        pool = Rollouts(parts.dataset_codes, list(parts.dataset_prompts or []))
    config_dict = config_to_dict(cfg)
    prov = {
        "kind": "distilled",
        "beta": dc.beta,
        "gamma": dc.gamma,
        "mode": dc.mode,
        "divergence": dc.divergence,
        **provenance,
    }
    if conditioned:
        prov["dial"] = {
            "hidden": student.dial.hidden,
            "w_range": list(W_RANGE),
            "beta_max": dc.beta,
            "lr_scale": dial_lr_scale,
        }

    rows = RowLog(out, cfg.report_to if info.is_main else "none")
    evaluates = info.is_main or sharded  # a sharded student samples on every rank, so all evaluate
    if start == 0 and evaluates:
        metrics = evaluate_student(parts, dc, device)
        if info.is_main:
            rows.append({"step": 0, **{k: _sig(v) for k, v in metrics.items()}})
    student.train()
    progress = Progress(f"distill β={dc.beta:g}", dc.steps, initial=start, enabled=info.is_main)
    timer = StepTimer(device_clock(device))
    for step in range(start, dc.steps):
        with timer("rollout"):
            gen = step_generator(dc.seed, step, ROLLOUT_STREAM, info.rank, device)
            if pool is None:
                prompts = step_prompts(parts.train, dc, step, info)
                dial = step_dial(dc, step, info) if conditioned else None
                with gathered(student):
                    roll = student_rollouts(student, parts.encode, prompts, dc, parts.num_frames, gen, dial)
            else:
                roll = offline_batch(pool, dc, step, info)
            codes = roll.codes.to(device)
        result = train_step(
            parts,
            forward_model,
            Rollouts(codes, roll.prompts, roll.teacher_logits, roll.dial),
            dc,
            optimizer,
            scheduler,
            device,
            info,
            timer,
            pool is None,
        )
        row: dict[str, Any] = {"step": step + 1}
        if result.grad_norm is None:
            bad_streak += 1
            row["skipped"] = "non-finite loss"
            log.warning(
                "step %d: non-finite loss (%s); step skipped (%d in a row)",
                step + 1,
                result.loss.item(),
                bad_streak,
            )
            if bad_streak >= dc.max_nonfinite:
                raise FloatingPointError(
                    f"{bad_streak} consecutive non-finite losses (distill.max_nonfinite={dc.max_nonfinite}); "
                    f"stopping. The last good checkpoint is kept in {out / 'checkpoints'}; lower distill.lr or "
                    "distill.beta, or set distill.bf16=false"
                )
        else:
            bad_streak = 0
            row["grad_norm"] = round(result.grad_norm, 5)
        times = timer.take()
        student_logits, mask, kl, pg, rewards = (
            result.student_logits,
            result.mask,
            result.kl,
            result.pg,
            result.rewards,
        )
        with torch.no_grad():
            entropy = policy_entropy(student_logits.detach(), mask, temperature=dc.temperature)
        row.update(
            {
                "kl": _sig(all_reduce_mean(kl.detach(), info).item()),
                "beta_term": _sig(dc.beta * pg.item()),
                "entropy": _sig(all_reduce_mean(entropy, info).item()),
                "lr": scheduler.get_last_lr()[0],
                "frames_per_s": round(codes.shape[0] * codes.shape[2] / max(times["rollout"], 1e-9), 1),
                **{f"time_{k}": round(v, 4) for k, v in times.items()},
            }
        )
        if rewards is not None:
            row["reward_mean"] = _sig(all_reduce_mean(rewards.mean(), info).item())
            row["reward_std"] = _sig(all_reduce_mean(rewards.std(), info).item())
        done = step + 1
        if evaluates and (done % dc.eval_every == 0 or done == dc.steps):
            metrics = evaluate_student(parts, dc, device)
            row.update({k: _sig(v) for k, v in metrics.items()})
        if info.is_main:
            rows.append(row)
            progress.update(done, kl=row["kl"], reward=row.get("reward_mean", float("nan")))
        if done % dc.ckpt_every == 0 or done == dc.steps:
            counters = {"bad_streak": bad_streak}
            if sharded:
                save_sharded_snapshot(
                    out,
                    done,
                    student,
                    optimizer,
                    scheduler,
                    config_dict,
                    prov,
                    counters,
                    info.is_main,
                    info.world_size,
                )
            elif info.is_main:
                save_training_snapshot(out, done, student, optimizer, scheduler, config_dict, prov, counters)
            barrier(info)
    progress.close()
    rows.close()
    weights = full_state_dict(student)  # gathered on rank 0 when sharded (every rank takes part)
    if info.is_main:
        save_checkpoint(out, weights, config_dict, {**prov, "step": dc.steps})
        log.info("distilled model (β=%g) saved to %s", dc.beta, out)
    barrier(info)
    return out


def _sig(x: float) -> float:
    """A float rounded to 6 significant digits for the log."""
    return float(f"{x:.6g}")


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen, eval-mode deep copy (the teacher)."""
    teacher = copy.deepcopy(model)
    return teacher.eval().requires_grad_(False)
