"""Base-model pretraining: teacher-forced cross-entropy with condition dropout, in one explicit loop.

The loop reads top to bottom: encode the captions once (the text encoder is frozen), then for
each step take a batch of token clips, replace each caption by the null condition with probability
``pretrain.cond_dropout`` (what CFG's unconditional branch will see at sampling time), compute the
per-codebook cross-entropy over valid delay-pattern positions, and take an AdamW step with
warm-up + cosine learning rate and gradient clipping. Batches and dropout draws are a pure function
of (seed, step), so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from musicdistill.config import Config, ConfigError, PretrainConfig, config_to_dict
from musicdistill.data.caption_bank import CaptionBank, EncodedCaptions, encode_captions
from musicdistill.data.tokens import TokenSet
from musicdistill.model.generator import build_generator, teacher_forced
from musicdistill.model.text import build_text_encoder, drop_condition, null_condition
from musicdistill.runtime import autocast, resolve_device, seed_everything
from musicdistill.storage.checkpoint import (
    latest_snapshot,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_snapshot,
)
from musicdistill.storage.history import append_row, trim_rows

log = logging.getLogger(__name__)


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


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices ``[batch_size]`` of step ``step``: epochs are seeded permutations, walked in order."""
    out = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, num_items)
        perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = perm[offset : offset + batch_size - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return torch.tensor(out)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator for the random draws of one step (condition dropout), seeded by (seed, step)."""
    return torch.Generator(device=device).manual_seed(seed * 7_919 + step + 1)


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def validation_loss(
    model, tokens: TokenSet, bank: CaptionBank, cfg: PretrainConfig, device: torch.device
) -> dict[str, float]:
    """Mean CE on the first ``val_batches`` batches of the valid split, with the caption and with ∅."""
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
    return {k: v / max(1, batches) for k, v in sums.items()}


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
    steps_needed = train.num_frames + max(cfg.model.delays)
    if steps_needed > cfg.model.max_frames:
        raise ConfigError(
            f"clips have {train.num_frames} frames (+{max(cfg.model.delays)} delay steps) but model.max_frames="
            f"{cfg.model.max_frames}; raise model.max_frames to at least {steps_needed} or shorten data.duration"
        )
    seed_everything(pc.seed)
    if captions is None:
        captions = encode_captions(build_text_encoder(cfg.text, device), train.captions + valid.captions)
    elif captions.encoder != cfg.text.encoder:
        raise ConfigError(
            f"the caption encodings were made with text.encoder={captions.encoder!r} but the config says "
            f"{cfg.text.encoder!r}; rerun the captions stage"
        )
    train_bank, valid_bank = captions.bank(train.captions, device), captions.bank(valid.captions, device)
    model = build_generator(cfg.model, train.num_codebooks, train.cardinality, captions.cond.dim).to(device)
    optimizer = make_optimizer(model, pc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, pc))
    base_prov = {"kind": "base", **(provenance or {})}
    start = 0
    snap = latest_snapshot(out) if resume else None
    if snap is not None:
        ck = load_checkpoint(snap)
        model.load_state_dict(ck.state_dict)
        state = load_training_state(snap)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
        log.info("resumed from %s at step %d", snap, start)
    elif resume:
        log.info("no snapshot in %s; starting from scratch", out)
    trim_rows(out, start)
    log.info(
        "generator: %.2fM parameters, %d train / %d valid clips, %d frames, device %s",
        model.num_parameters() / 1e6,
        len(train),
        len(valid),
        train.num_frames,
        device,
    )

    config_dict = config_to_dict(cfg)
    tokens_per_step = pc.batch_size * train.num_codebooks * train.num_frames
    deadline = time.monotonic() + pc.max_minutes * 60 if pc.max_minutes > 0 else math.inf
    if start == 0:  # the starting point of the validation curve
        append_row(
            out,
            {
                "step": 0,
                **{k: round(v, 5) for k, v in validation_loss(model, valid, valid_bank, pc, device).items()},
            },
        )
    model.train()
    bar = tqdm(range(start, pc.steps), initial=start, total=pc.steps, desc="pretrain", unit="step")
    step = start
    for step in bar:
        t0 = time.perf_counter()
        idx = batch_indices(len(train), pc.batch_size, step, pc.seed)
        codes = train.codes[idx].to(device)
        cond = drop_condition(
            train_bank.batch(idx.to(device)), pc.cond_dropout, step_generator(pc.seed, step, device)
        )
        with autocast(device, pc.bf16):
            outp = teacher_forced(model, codes, cond)
            loss, per_codebook = codebook_cross_entropy(outp.logits, outp.targets, outp.mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}; lower pretrain.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), pc.grad_clip if pc.grad_clip > 0 else math.inf
        )
        optimizer.step()
        scheduler.step()
        dt = time.perf_counter() - t0
        row: dict[str, Any] = {
            "step": step + 1,
            "loss": round(loss.item(), 5),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": round(float(grad_norm), 4),
            "tokens_per_s": round(tokens_per_step / dt),
        }
        done = step + 1
        last = done == pc.steps or time.monotonic() > deadline
        if done % pc.val_every == 0 or last:
            row.update(
                {k: round(v, 5) for k, v in validation_loss(model, valid, valid_bank, pc, device).items()}
            )
            log.info(
                "step %d: loss %.4f, val %.4f (null %.4f)",
                done,
                row["loss"],
                row["val_loss"],
                row["val_loss_null"],
            )
        append_row(out, row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=row["tokens_per_s"])
        if done % pc.ckpt_every == 0 and not last:
            save_snapshot(
                out, done, model.state_dict(), config_dict, base_prov, _training_state(optimizer, scheduler)
            )
        if last:
            if done < pc.steps:
                log.warning(
                    "stopping at step %d of %d: pretrain.max_minutes=%.1f reached",
                    done,
                    pc.steps,
                    pc.max_minutes,
                )
            break
    bar.close()
    final_step = step + 1 if pc.steps > start else start
    save_snapshot(
        out, final_step, model.state_dict(), config_dict, base_prov, _training_state(optimizer, scheduler)
    )
    save_checkpoint(out, model.state_dict(), config_dict, {**base_prov, "step": final_step})
    log.info("base model saved to %s", out)
    return out


def _training_state(optimizer, scheduler) -> dict[str, Any]:
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
