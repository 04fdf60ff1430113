"""The distillation loop on tiny in-memory parts: smoke run, KL identities, resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from musicdistill.config import ConfigError
from musicdistill.model.musicgen import load_backbone
from musicdistill.storage.checkpoint import load_checkpoint
from musicdistill.training.distill import DistillParts, PromptSet, distill, frozen_copy, reward_terms
from musicdistill.training.distill_setup import cached_encoder
from musicdistill.training.losses import (
    group_normalized,
    leave_one_out_advantages,
    pairwise_distances,
    pairwise_diversity_reward,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_fixture import fake_reward_embed, tiny_config, tiny_parts  # noqa: E402
from kill_resume import ROOT, assert_same_tensors, reference_and_resumed  # noqa: E402
from musicgen_fixture import build_tiny_musicgen  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "distill_fixture.py"


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_smoke_run_changes_parameters_and_writes_checkpoints(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=3)
    parts = tiny_parts(cfg)
    before = {k: v.clone() for k, v in parts.student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in parts.teacher.state_dict().items()}
    out = distill(cfg, parts, tmp_path / "d", {"base_hash": "abc"}, torch.device("cpu"))
    after = parts.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(teacher_before[k], v) for k, v in parts.teacher.state_dict().items())
    ck = load_checkpoint(out)
    assert ck.provenance["kind"] == "distilled" and ck.provenance["beta"] == 0.5
    assert ck.provenance["base_hash"] == "abc" and ck.provenance["step"] == 3
    rows = _rows(out)
    assert rows[0]["step"] == 0 and "eval_teacher_kl" in rows[0]
    for key in (
        "kl",
        "reward_mean",
        "reward_std",
        "beta_term",
        "entropy",
        "grad_norm",
        "frames_per_s",
        "time_rollout",
        "time_teacher",
        "time_student",
        "time_reward",
    ):
        assert key in rows[1], key


def test_kl_is_zero_when_student_equals_teacher_at_gamma_one(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=1, beta=0.0, gamma=1.0)
    parts = tiny_parts(cfg)
    distill(cfg, parts, tmp_path / "d", {}, torch.device("cpu"))
    rows = _rows(tmp_path / "d")
    assert rows[0]["eval_teacher_kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_quality_run_lowers_kl_to_teacher(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=20, beta=0.0, extra=["distill.eval_every=20", "distill.lr=0.003"])
    parts = tiny_parts(cfg)
    distill(cfg, parts, tmp_path / "d", {}, torch.device("cpu"))
    rows = _rows(tmp_path / "d")
    assert rows[-1]["eval_teacher_kl"] < 0.5 * rows[0]["eval_teacher_kl"]


def test_the_loop_rewards_rollouts_with_the_pairwise_diversity_reward() -> None:
    codes = torch.randint(0, 16, (6, 2, 6), generator=torch.Generator().manual_seed(0))
    rewards, advantages = reward_terms(fake_reward_embed, codes, group_size=3)
    embeddings = fake_reward_embed(codes)
    assert torch.equal(rewards, pairwise_diversity_reward(embeddings, 3))
    assert torch.equal(advantages, leave_one_out_advantages(pairwise_distances(embeddings, 3)))
    assert reward_terms(None, codes, 3) == (None, None)
    _, normalized = reward_terms(fake_reward_embed, codes, group_size=3, advantage_norm="group")
    assert torch.allclose(normalized, group_normalized(advantages, 3))
    assert torch.allclose(normalized.view(2, 3).std(-1, unbiased=False), torch.ones(2), atol=1e-4)


def test_beta_needs_reward_and_on_policy(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=1, beta=1.0)
    parts = tiny_parts(cfg)
    parts.reward_embed = None
    with pytest.raises(ConfigError, match="needs a reward embedder"):
        distill(cfg, parts, tmp_path / "d", {}, torch.device("cpu"))
    cfg = tiny_config(tmp_path, steps=1, beta=1.0, extra=["distill.mode=teacher"])
    with pytest.raises(ConfigError, match="mode=on_policy"):
        distill(cfg, tiny_parts(cfg), tmp_path / "d", {}, torch.device("cpu"))


def test_offline_teacher_mode_runs(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=2, beta=0.0, extra=["distill.mode=teacher", "distill.offline_pool=8"])
    distill(cfg, tiny_parts(cfg), tmp_path / "d", {}, torch.device("cpu"))
    assert "reward_mean" not in _rows(tmp_path / "d")[1]


def test_the_offline_pools_teacher_logits_computed_once_give_the_same_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import musicdistill.training.offline_pool as pools

    extra = ["distill.mode=teacher", "distill.offline_pool=16", "distill.prompts_per_step=2"]
    cfg = tiny_config(tmp_path, steps=4, beta=0.0, extra=extra)
    cached = distill(cfg, tiny_parts(cfg), tmp_path / "cached", {}, torch.device("cpu"))
    monkeypatch.setattr(pools, "MAX_POOL_LOGITS_BYTES", 0)  # too large: the teacher runs at every step
    per_step = distill(cfg, tiny_parts(cfg), tmp_path / "per_step", {}, torch.device("cpu"))
    assert_same_tensors(cached / "model.safetensors", per_step / "model.safetensors")
    teacher_seconds = [sum(r["time_teacher"] for r in _rows(out)[1:]) for out in (cached, per_step)]
    assert teacher_seconds[0] < teacher_seconds[1]


def test_a_conditioned_student_draws_w_per_group_and_records_its_dial(tmp_path: Path) -> None:
    from musicdistill.model.loading import generator_from_state_dict
    from musicdistill.training.distill import DistInfo, step_dial

    cfg = tiny_config(tmp_path, steps=3, beta=1.0)
    out = distill(cfg, tiny_parts(cfg), tmp_path / "c", {}, torch.device("cpu"), dial_hidden=8)
    ck = load_checkpoint(out)
    assert ck.provenance["dial"] == {"hidden": 8, "w_range": [0.0, 1.0], "beta_max": 1.0, "lr_scale": 1.0}
    student = generator_from_state_dict(cfg.model, ck.state_dict)  # the weights say it has a dial
    assert student.dial is not None and student.dial.out.weight.abs().sum() > 0  # the dial learned
    # w is drawn per prompt (one per group of G), the same on every rank, then split
    w = step_dial(cfg.distill, 0, DistInfo())
    assert w.shape == (cfg.distill.prompts_per_step,) and bool(((w >= 0) & (w <= 1)).all())
    halves = [step_dial(cfg.distill, 0, DistInfo(rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), w)


def test_the_dials_learning_rate_scale_moves_the_dial_alone(tmp_path: Path) -> None:
    """One step from the same start: the dial's output starts at zero, so every other parameter sees
    the same gradient and moves alike; Adam's first step is lr × sign, so the dial moves 10× as far."""
    from musicdistill.model.loading import generator_from_state_dict

    cfg = tiny_config(tmp_path, steps=1, beta=1.0)
    states = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        out = distill(
            cfg,
            tiny_parts(cfg),
            tmp_path / f"x{scale:g}",
            {},
            torch.device("cpu"),
            dial_hidden=8,
            dial_lr_scale=scale,
        )
        states[scale] = load_checkpoint(out).state_dict
        assert load_checkpoint(out).provenance["dial"]["lr_scale"] == scale
    one, ten = states[1.0], states[10.0]
    for name in one:
        if not name.startswith("dial."):
            assert torch.equal(one[name], ten[name]), name
    moved = {
        s: generator_from_state_dict(cfg.model, states[s]).dial.out.weight.detach().abs().max()
        for s in states
    }
    assert float(moved[10.0] / moved[1.0]) == pytest.approx(10.0, rel=1e-3)
    with pytest.raises(ValueError, match="learning-rate scale 0 must lie in"):
        distill(
            cfg, tiny_parts(cfg), tmp_path / "bad", {}, torch.device("cpu"), dial_hidden=8, dial_lr_scale=0.0
        )


def test_a_conditioned_student_needs_a_reward_on_its_own_samples(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=1, beta=0.0)
    with pytest.raises(ConfigError, match="needs distill.beta > 0 and distill.mode=on_policy"):
        distill(cfg, tiny_parts(cfg), tmp_path / "d", {}, torch.device("cpu"), dial_hidden=8)


def test_nonfinite_steps_are_skipped_then_stop(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=10, beta=0.0, extra=["distill.max_nonfinite=2"])
    parts = tiny_parts(cfg)
    with torch.no_grad():
        parts.teacher.head.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="2 consecutive non-finite"):
        distill(cfg, parts, tmp_path / "d", {}, torch.device("cpu"))
    rows = _rows(tmp_path / "d")
    assert rows[1]["skipped"] == "non-finite loss"


def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path) -> None:
    steps = 8
    reference_and_resumed(FIXTURE, tmp_path / "ref" / "d", tmp_path / "k" / "d", steps, kill_after=4)
    assert_same_tensors(
        tmp_path / "ref" / "d" / "rank0.safetensors", tmp_path / "k" / "d" / "rank0.safetensors"
    )
    rows = _rows(tmp_path / "k" / "d")
    assert [r["step"] for r in rows] == list(range(0, steps + 1))


def test_two_process_ddp_keeps_ranks_equal(tmp_path: Path) -> None:
    out = tmp_path / "ddp" / "d"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            str(FIXTURE),
            str(out),
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_file(str(out / "rank0.safetensors"))
    b = load_file(str(out / "rank1.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    initial = tiny_parts(tiny_config(tmp_path, 3)).student.state_dict()
    assert any(not torch.equal(initial[k], a[k]) for k in a)


def test_loop_runs_on_the_musicgen_backbone(tmp_path: Path) -> None:
    model, tokenizer = build_tiny_musicgen()
    model.save_pretrained(tmp_path / "mg")
    tokenizer.save_pretrained(tmp_path / "mg")
    backbone, text_encoder, _ = load_backbone(tmp_path / "mg")
    prompts = PromptSet(["a calm piano melody", "fast drums", "a slow organ", "bright bells"], [None] * 4)

    def reward(codes: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.one_hot(codes[:, 0], backbone.cardinality).float().sum(1), dim=-1)

    parts = DistillParts(
        student=backbone.train(),
        teacher=frozen_copy(backbone),
        encode=cached_encoder(text_encoder, torch.device("cpu")),
        train=prompts,
        held_out=prompts,
        num_frames=6,
        reward_embed=reward,
    )
    cfg = tiny_config(tmp_path, steps=2, beta=0.5)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    distill(cfg, parts, tmp_path / "d", {"base_hash": "mg"}, torch.device("cpu"))
    after = backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = _rows(tmp_path / "d")
    assert rows[-1]["step"] == 2 and rows[-1]["reward_mean"] >= 0
    assert load_checkpoint(tmp_path / "d").provenance["kind"] == "distilled"
