"""The training-loop kit: optimizer groups, LR schedule, gradient step, step seeding, resume, progress."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from musicdistill.config import ModelConfig
from musicdistill.judges.embedder import ConvEncoder
from musicdistill.loop_kit import (
    deadline,
    decays,
    lr_factor,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    past,
    resume_training,
    save_training_snapshot,
    step_generator,
    step_seed,
)
from musicdistill.model.generator import build_generator
from musicdistill.progress import Progress, format_seconds, track
from musicdistill.storage.checkpoint import CheckpointError
from musicdistill.storage.history import append_row, read_rows


def _decayed_names(model: nn.Module, weight_decay: float = 0.1) -> tuple[set[str], set[str]]:
    """(names of decayed parameters, names of the others) as :func:`make_optimizer` groups them."""
    groups = make_optimizer(model, 1e-3, weight_decay).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    others = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, others


def test_weight_decay_skips_norms_biases_and_embeddings_of_the_generator() -> None:
    cfg = ModelConfig(dim=16, layers=1, heads=2, delays=[0, 1], max_frames=16, positions="learned")
    model = build_generator(cfg, 2, 8, 4)
    decayed, others = _decayed_names(model)
    assert decayed.isdisjoint(others) and decayed | others == {n for n, _ in model.named_parameters()}
    assert {"embed", "pos_embed.weight", "norm.weight", "norm.bias"} <= others
    assert "head" in decayed and "blocks.0.self_attn.qkv.weight" in decayed
    assert all(p.dim() >= 2 for n, p in model.named_parameters() if n in decayed)


def test_weight_decay_skips_batch_norms_and_biases_of_the_judges() -> None:
    encoder = ConvEncoder(n_mels=8, channels=4, dim=3)
    decayed, others = _decayed_names(encoder)
    assert decayed == {
        "conv.0.0.weight",
        "conv.1.0.weight",
        "conv.2.0.weight",
        "conv.3.0.weight",
        "head.0.weight",
        "head.2.weight",
    }
    assert "conv.0.1.weight" in others and "conv.0.0.bias" in others  # BatchNorm gain, conv bias


def test_frozen_parameters_are_left_out_and_an_all_frozen_model_is_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Embedding(4, 3))
    model[1].weight.requires_grad_(False)
    params = [p for g in make_optimizer(model, 1e-3, 0.1).param_groups for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)
    with pytest.raises(ValueError, match="no trainable parameter"):
        make_optimizer(model.requires_grad_(False), 1e-3, 0.1)
    assert not decays("tok_embed", nn.Parameter(torch.zeros(2, 2)), model)


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor() -> None:
    steps, warmup, floor = 100, 10, 0.1
    assert [lr_factor(s, steps, warmup, floor) for s in range(3)] == [0.1, 0.2, pytest.approx(0.3)]
    assert lr_factor(warmup - 1, steps, warmup, floor) == 1.0
    assert lr_factor(warmup, steps, warmup, floor) == 1.0
    middle = warmup + (steps - warmup) // 2
    assert lr_factor(middle, steps, warmup, floor) == pytest.approx(floor + (1 - floor) / 2)
    assert lr_factor(steps, steps, warmup, floor) == pytest.approx(floor)
    assert lr_factor(10 * steps, steps, warmup, floor) == pytest.approx(floor)
    factors = [lr_factor(s, steps, warmup, floor) for s in range(warmup, steps)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_min_ratio_one_holds_the_peak_after_warm_up_and_no_warm_up_starts_at_the_peak() -> None:
    assert [lr_factor(s, 50, 4, 1.0) for s in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert lr_factor(0, 50, 0, 0.1) == 1.0


def test_lr_scales_put_a_submodule_in_groups_of_its_own_at_a_multiple_of_the_lr() -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Linear(3, 3))
    model.add_module("dial", nn.Linear(1, 3))
    groups = make_optimizer(model, 0.1, 0.01, lr_scales={"dial": 10.0}).param_groups
    by_lr = [(round(g["lr"], 6), g["weight_decay"], [id(p) for p in g["params"]]) for g in groups]
    assert by_lr == [
        (0.1, 0.01, [id(model.body.weight)]),
        (0.1, 0.0, [id(model.body.bias)]),
        (1.0, 0.01, [id(model.dial.weight)]),
        (1.0, 0.0, [id(model.dial.bias)]),
    ]
    scheduler = make_scheduler(make_optimizer(model, 0.1, 0.0, lr_scales={"dial": 10.0}), 10, 2, 1.0)
    assert [round(lr, 6) for lr in scheduler.get_last_lr()] == [0.05, 0.05, 0.5, 0.5]


def test_optimizer_step_clips_the_gradient_norm_and_steps_the_schedule() -> None:
    model = nn.Linear(4, 1, bias=False)
    optimizer = make_optimizer(model, 0.1, 0.0)
    scheduler = make_scheduler(optimizer, steps=10, warmup_steps=2, min_ratio=0.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    loss = 100.0 * model(torch.ones(1, 4)).sum()
    norm = optimizer_step(loss, model, optimizer, scheduler, max_norm=1.0)
    assert norm == pytest.approx(200.0)  # |100 * ones(4)| before clipping
    assert model.weight.grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    unclipped = optimizer_step(
        100.0 * model(torch.ones(1, 4)).sum(), model, optimizer, scheduler, max_norm=0.0
    )
    assert model.weight.grad.norm().item() == pytest.approx(unclipped) == pytest.approx(200.0)


def test_step_generators_depend_on_seed_step_stream_and_rank_only() -> None:
    def draw(*args, **kwargs) -> torch.Tensor:
        return torch.rand(4, generator=step_generator(*args, **kwargs))

    assert torch.equal(draw(3, 7), draw(3, 7))
    variants = [draw(4, 7), draw(3, 8), draw(3, 7, stream=1), draw(3, 7, rank=1)]
    assert all(not torch.equal(draw(3, 7), v) for v in variants)
    seeds = {
        step_seed(0, step, stream, rank) for step in range(50) for stream in range(6) for rank in range(4)
    }
    assert len(seeds) == 50 * 6 * 4


def _trained_state(tmp_path: Path, steps: int) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """A small model after ``steps`` kit steps, with one history row per step in ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    optimizer = make_optimizer(model, 0.1, 0.01)
    scheduler = make_scheduler(optimizer, 10, 2, 0.1)
    for step in range(steps):
        optimizer_step(model(torch.ones(2, 3)).square().sum(), model, optimizer, scheduler, 1.0)
        append_row(tmp_path, {"step": step + 1})
    return model, optimizer, scheduler


def test_resume_restores_model_optimizer_schedule_counters_and_trims_the_history(tmp_path: Path) -> None:
    model, optimizer, scheduler = _trained_state(tmp_path, 3)
    save_training_snapshot(tmp_path, 3, model, optimizer, scheduler, {}, {"kind": "test"}, {"bad_streak": 2})
    for step in range(3, 5):  # the killed run went on past its snapshot
        optimizer_step(model(torch.ones(2, 3)).sum(), model, optimizer, scheduler, 1.0)
        append_row(tmp_path, {"step": step + 1})
    fresh, fresh_optimizer, fresh_scheduler = _trained_state(tmp_path / "other", 0)
    start, state = resume_training(tmp_path, fresh, fresh_optimizer, fresh_scheduler, resume=True)
    assert start == 3 and state["bad_streak"] == 2
    assert [r["step"] for r in read_rows(tmp_path)] == [1, 2, 3]
    reference, ref_optimizer, ref_scheduler = _trained_state(tmp_path / "ref", 3)
    for a, b in zip(fresh.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    assert fresh_scheduler.get_last_lr() == ref_scheduler.get_last_lr()
    assert torch.equal(
        fresh_optimizer.state_dict()["state"][0]["exp_avg"], ref_optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_starting_afresh_clears_the_history_and_a_foreign_optimizer_state_is_named(tmp_path: Path) -> None:
    model, optimizer, scheduler = _trained_state(tmp_path, 2)
    assert resume_training(tmp_path, model, optimizer, scheduler, resume=True) == (0, {})
    assert read_rows(tmp_path) == []
    save_training_snapshot(tmp_path, 2, model, optimizer, scheduler, {}, {})
    other = torch.optim.AdamW(model.parameters(), lr=0.1)  # one group instead of two
    with pytest.raises(CheckpointError, match="without resuming"):
        resume_training(tmp_path, model, other, torch.optim.lr_scheduler.LambdaLR(other, lambda s: 1.0), True)


def test_deadline() -> None:
    assert deadline(0) == math.inf and not past(deadline(0))
    soon = deadline(1e-6)  # 60 microseconds
    time.sleep(0.01)
    assert past(soon) and not past(deadline(1.0))


def test_progress_without_a_terminal_logs_plain_lines_with_rate_and_eta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = Progress("pretrain", total=40, initial=10, terminal=False, min_interval=0.0)
    with caplog.at_level(logging.INFO, logger="musicdistill.progress"):
        for done in range(11, 41):
            progress.update(done, loss=1.23456)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 15  # every 2 steps (5 % of 40), from 12 to 40
    assert lines[0].startswith("pretrain: 12/40 steps (30%), ") and "steps/s, ETA " in lines[0]
    assert lines[0].endswith("; loss=1.235") and lines[-1].startswith("pretrain: 40/40 steps (100%)")
    assert not any("\r" in line for line in lines)


def test_progress_lines_are_spaced_in_time_but_the_last_always_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    progress = Progress("scorer", total=10, terminal=False)
    with caplog.at_level(logging.INFO, logger="musicdistill.progress"):
        for done in range(1, 11):
            progress.update(done)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["scorer: 10/10 steps"]


def test_a_disabled_progress_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("distill", total=4, enabled=False, terminal=True)
    assert progress.bar is None
    with caplog.at_level(logging.INFO):
        progress.update(4)
    assert caplog.records == []


def test_track_yields_every_item_and_reports_the_end(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="musicdistill.progress"):
        assert list(track(range(0, 10, 3), "batches", unit="batch")) == [0, 3, 6, 9]
    assert caplog.records[-1].getMessage().startswith("batches: 4/4 batches (100%)")


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (8.2, 75.4, 3725, math.nan, -1)] == ["8s", "1m15s", "1h02m", "?", "?"]


def test_slow_loops_report_seconds_per_unit() -> None:
    progress = Progress("evaluating systems", 6, unit="system", terminal=False)
    progress.started -= 120.0  # two systems took two minutes
    assert "60 s/system" in progress.line(2, {})
    progress.close()
