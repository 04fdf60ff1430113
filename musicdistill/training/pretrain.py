"""Base-model pretraining: teacher-forced cross-entropy with condition dropout, in one explicit loop.

The loop reads top to bottom: encode the captions once (the text encoder is frozen), then for
each step take a batch of token clips, replace each caption by the null condition with probability
``pretrain.cond_dropout`` (what CFG's unconditional branch will see at sampling time), compute the
per-codebook cross-entropy over valid delay-pattern positions, and take an AdamW step (no weight decay
on norms, biases and embeddings) with warm-up + cosine learning rate and gradient clipping. Batches
and dropout draws are a pure function of (seed, step), so a resumed run continues exactly where the
interrupted one stopped. Optimizer, schedule, step, seeding, snapshots and progress come from the
kit in :mod:`musicdistill.loop_kit`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from musicdistill.config import Config, ConfigError, PretrainConfig, config_to_dict
from musicdistill.data.caption_bank import CaptionBank, EncodedCaptions, encode_captions
from musicdistill.data.tokens import TokenSet
from musicdistill.loop_kit import (
    deadline,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    past,
    resume_training,
    save_training_snapshot,
    step_generator,
)
from musicdistill.model.generator import build_generator, teacher_forced
from musicdistill.model.text import build_text_encoder, drop_condition, null_condition
from musicdistill.progress import Progress
from musicdistill.runtime import autocast, resolve_device, seed_everything
from musicdistill.storage.checkpoint import save_checkpoint
from musicdistill.storage.row_sinks import RowLog

log = logging.getLogger(__name__)

#: :func:`~musicdistill.loop_kit.step_generator` streams: epoch permutations, condition dropout
BATCH_STREAM, DROPOUT_STREAM = 1, 2


def codebook_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over codebooks of each codebook's mean CE on valid positions (audiocraft's MusicGen loss).

    Args: logits ``[B, K, S, V]``, targets ``[B, K, S]`` (special token at padding), mask ``[K, S]``.
    Returns: (scalar loss, per-codebook CE ``[K]``).
    """
    b, k, s, v = logits.shape
    weights = mask.unsqueeze(0).expand(b, k, s).float()
    safe_targets = targets.clamp(max=v - 1)  # padding positions carry the special token; they are masked
    ce = F.cross_entropy(logits.reshape(-1, v), safe_targets.reshape(-1), reduction="none").view(b, k, s)
    per_codebook = (ce * weights).sum(dim=(0, 2)) / weights.sum(dim=(0, 2)).clamp_min(1.0)
    return per_codebook.mean(), per_codebook


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices ``[batch_size]`` of step ``step``: epochs are seeded permutations, walked in order."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, num_items)
        perm = torch.randperm(num_items, generator=step_generator(seed, epoch, BATCH_STREAM))
        take = perm[offset : offset + batch_size - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return torch.tensor(out)


@torch.no_grad()
def validation_loss(
    model, tokens: TokenSet, bank: CaptionBank, cfg: PretrainConfig, device: torch.device
) -> dict[str, float]:
    """Mean CE (5 decimals) on the first ``val_batches`` batches of the valid split, with the caption and with ∅."""
    model.eval()
    n = min(len(tokens), cfg.val_batches * cfg.batch_size)
    sums = {"val_loss": 0.0, "val_loss_null": 0.0}
    batches = 0
    for start in range(0, n, cfg.batch_size):
        idx = torch.arange(start, min(n, start + cfg.batch_size))
        codes = tokens.codes[idx].to(device)
        cond = bank.batch(idx.to(device))
        with autocast(device, cfg.bf16):
            for key, c in (("val_loss", cond), ("val_loss_null", null_condition(cond))):
                out = teacher_forced(model, codes, c)
                sums[key] += codebook_cross_entropy(out.logits, out.targets, out.mask)[0].item()
        batches += 1
    model.train()
    return {k: round(v / max(1, batches), 5) for k, v in sums.items()}


def check_clip_length(cfg: Config, tokens: TokenSet) -> None:
    """Clips plus the delay steps must fit in the model's context."""
    needed = tokens.num_frames + max(cfg.model.delays)
    if needed > cfg.model.max_frames:
        raise ConfigError(
            f"clips have {tokens.num_frames} frames (+{max(cfg.model.delays)} delay steps) but model.max_frames="
            f"{cfg.model.max_frames}; raise model.max_frames to at least {needed} or shorten data.duration"
        )


def caption_encodings(
    cfg: Config, train: TokenSet, valid: TokenSet, device: torch.device, captions: EncodedCaptions | None
) -> EncodedCaptions:
    """``captions`` checked against ``text.encoder``, or every caption encoded here when None."""
    if captions is None:
        return encode_captions(build_text_encoder(cfg.text, device), train.captions + valid.captions)
    if captions.encoder != cfg.text.encoder:
        raise ConfigError(
            f"the caption encodings were made with text.encoder={captions.encoder!r} but the config says "
            f"{cfg.text.encoder!r}; rerun the captions stage"
        )
    return captions


def pretrain(
    cfg: Config,
    train: TokenSet,
    valid: TokenSet,
    out: str | Path,
    resume: bool = False,
    provenance: dict[str, Any] | None = None,
    captions: EncodedCaptions | None = None,
) -> Path:
    """Train the base generator on ``train``; checkpoints and history go to ``out``. Returns ``out``.

    The final model is saved as a checkpoint in ``out`` itself; resumable snapshots in
    ``out/checkpoints``. ``provenance`` (e.g. the codec directory) is recorded in every checkpoint.
    ``captions`` are the encodings of every caption (the main job's captions stage); without them
    the captions are encoded here first.
    """
    pc = cfg.pretrain
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    check_clip_length(cfg, train)
    seed_everything(pc.seed)
    captions = caption_encodings(cfg, train, valid, device, captions)
    train_bank, valid_bank = captions.bank(train.captions, device), captions.bank(valid.captions, device)
    model = build_generator(cfg.model, train.num_codebooks, train.cardinality, captions.cond.dim).to(device)
    optimizer = make_optimizer(model, pc.lr, pc.weight_decay)
    scheduler = make_scheduler(optimizer, pc.steps, pc.warmup_steps, pc.min_lr_ratio)
    start, _ = resume_training(out, model, optimizer, scheduler, resume)
    log.info(
        "generator: %.2fM parameters, %d train / %d valid clips, %d frames, device %s",
        model.num_parameters() / 1e6,
        len(train),
        len(valid),
        train.num_frames,
        device,
    )
    config_dict = config_to_dict(cfg)
    prov = {"kind": "base", **(provenance or {})}
    tokens_per_step = pc.batch_size * train.num_codebooks * train.num_frames
    stop_at = deadline(pc.max_minutes)
    rows = RowLog(out, cfg.report_to)
    if start == 0:  # the starting point of the validation curve
        rows.append({"step": 0, **validation_loss(model, valid, valid_bank, pc, device)})

    model.train()
    progress = Progress("pretrain", pc.steps, initial=start)
    done = start
    for step in range(start, pc.steps):
        t0 = time.perf_counter()
        idx = batch_indices(len(train), pc.batch_size, step, pc.seed)
        codes = train.codes[idx].to(device)
        dropout_draws = step_generator(pc.seed, step, DROPOUT_STREAM, device=device)
        cond = drop_condition(train_bank.batch(idx.to(device)), pc.cond_dropout, dropout_draws)
        with autocast(device, pc.bf16):
            outp = teacher_forced(model, codes, cond)
            loss, _ = codebook_cross_entropy(outp.logits, outp.targets, outp.mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}; lower pretrain.lr")
        grad_norm = optimizer_step(loss, model, optimizer, scheduler, pc.grad_clip)
        done = step + 1
        row: dict[str, Any] = {
            "step": done,
            "loss": round(loss.item(), 5),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": round(grad_norm, 4),
            "tokens_per_s": round(tokens_per_step / (time.perf_counter() - t0)),
        }
        last = done == pc.steps or past(stop_at)
        if done % pc.val_every == 0 or last:
            row.update(validation_loss(model, valid, valid_bank, pc, device))
            log.info(
                "step %d: loss %.4f, val %.4f (null %.4f)",
                done,
                row["loss"],
                row["val_loss"],
                row["val_loss_null"],
            )
        rows.append(row)
        progress.update(done, loss=row["loss"], tok_s=row["tokens_per_s"])
        if done % pc.ckpt_every == 0 and not last:
            save_training_snapshot(out, done, model, optimizer, scheduler, config_dict, prov)
        if last:
            if done < pc.steps:
                log.warning(
                    "stopping at step %d of %d: pretrain.max_minutes=%.1f reached",
                    done,
                    pc.steps,
                    pc.max_minutes,
                )
            break
    progress.close()
    rows.close()
    save_training_snapshot(out, done, model, optimizer, scheduler, config_dict, prov)
    save_checkpoint(out, model.state_dict(), config_dict, {**prov, "step": done})
    log.info("base model saved to %s", out)
    return out
