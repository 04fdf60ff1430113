"""Tiny in-memory distillation parts, and a script entry for subprocess tests (resume, torchrun).

``python tests/distill_fixture.py OUT STEPS [--resume] [--beta B]`` runs the real loop on a tiny
generator with a deterministic stand-in text encoder and reward embedder.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from musicdistill.config import load_config
from musicdistill.model.generator import build_generator
from musicdistill.model.text import TextCondition
from musicdistill.training.distill import DistillParts, PromptSet, distill, frozen_copy

K, V, T, TEXT_DIM = 2, 16, 6, 8


def tiny_config(tmp: Path, steps: int, beta: float = 0.5, gamma: float = 3.0, extra: list[str] | None = None):
    return load_config(
        None,
        [
            f"runs_dir={tmp}",
            "name=t",
            "model.dim=16",
            "model.layers=1",
            "model.heads=2",
            "model.delays=[0,1]",
            "model.max_frames=16",
            "codec.num_codebooks=2",
            f"distill.steps={steps}",
            "distill.prompts_per_step=4",
            "distill.group_size=2",
            f"distill.beta={beta}",
            f"distill.gamma={gamma}",
            "distill.eval_every=2",
            "distill.eval_prompts=8",
            "distill.ckpt_every=2",
            "distill.bf16=false",
            "distill.lr=0.01",
            "distill.warmup_steps=0",
            *(extra or []),
        ],
    )


def fake_encode(prompts: list[str]) -> TextCondition:
    """A deterministic stand-in for the text encoder: seeded states per prompt, 3 tokens each."""
    states = []
    for p in prompts:
        seed = int(hashlib.sha256(p.encode()).hexdigest()[:8], 16)
        states.append(torch.randn(3, TEXT_DIM, generator=torch.Generator().manual_seed(seed)))
    return TextCondition(torch.stack(states), torch.ones(len(prompts), 3, dtype=torch.bool))


def fake_reward_embed(codes: torch.Tensor) -> torch.Tensor:
    """Token histograms of codebook 0, L2-normalised: ``[N, K, T] -> [N, V]``."""
    hist = F.one_hot(codes[:, 0], V).float().sum(1)
    return F.normalize(hist, dim=-1)


def tiny_parts(cfg, seed: int = 0) -> DistillParts:
    torch.manual_seed(seed)
    base = build_generator(cfg.model, K, V, TEXT_DIM)
    with torch.no_grad():  # make the text matter, so CFG changes the distribution
        base.text_proj.weight.mul_(100.0)
        base.head.mul_(20.0)
    student = build_generator(cfg.model, K, V, TEXT_DIM)
    student.load_state_dict(base.state_dict())
    prompts = PromptSet([f"prompt {i}" for i in range(8)], [None] * 8)
    held = prompts  # the loop's optimisation is what these tests check, not generalisation to new prompts
    return DistillParts(
        student=student,
        teacher=frozen_copy(base),
        encode=fake_encode,
        train=prompts,
        held_out=held,
        num_frames=T,
        reward_embed=fake_reward_embed,
    )


def fake_encode_dim(dim: int):
    """:func:`fake_encode` with text states of width ``dim`` (a MusicGen's T5 width)."""

    def encode(prompts: list[str]) -> TextCondition:
        states = []
        for p in prompts:
            seed = int(hashlib.sha256(p.encode()).hexdigest()[:8], 16)
            states.append(torch.randn(3, dim, generator=torch.Generator().manual_seed(seed)))
        return TextCondition(torch.stack(states), torch.ones(len(prompts), 3, dtype=torch.bool))

    return encode


def tiny_musicgen_parts(cfg) -> DistillParts:
    """The tiny random MusicGen of ``musicgen_fixture`` (the same on every process, without dropout) as
    student and teacher, with stand-in text states of its T5 width and a histogram reward on its vocabulary."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from musicgen_fixture import build_tiny_musicgen

    from musicdistill.model.musicgen import MusicgenBackbone

    model, _ = build_tiny_musicgen(seed=0, dropout=0.0)  # dropout draws differ with the process count
    backbone = MusicgenBackbone.from_musicgen(model).train()
    vocab = backbone.cardinality

    def reward(codes: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.one_hot(codes[:, 0], vocab).float().sum(1), dim=-1)

    prompts = PromptSet([f"prompt {i}" for i in range(8)], [None] * 8)
    return DistillParts(
        student=backbone,
        teacher=frozen_copy(backbone),
        encode=fake_encode_dim(backbone.text_dim),
        train=prompts,
        held_out=prompts,
        num_frames=T,
        reward_embed=reward,
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--step-sleep", type=float, default=0.0, help="sleep after each snapshot (kill tests)")
    ap.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    ap.add_argument("--mode", choices=("on_policy", "teacher"), default="on_policy")
    ap.add_argument(
        "--musicgen", action="store_true", help="the tiny random MusicGen instead of the native model"
    )
    ap.add_argument(
        "--teacher", choices=("auto", "shard", "replicate"), default="auto", help="distill.fsdp_teacher"
    )
    ap.add_argument("--checkpointing", action="store_true", help="distill.activation_checkpointing=true")
    a = ap.parse_args(argv)
    import logging

    from musicdistill.training.distributed import init_distributed, shutdown_distributed

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # the tests read what it logs

    out = Path(a.out)
    extra = [
        f"distill.parallel={a.parallel}",
        f"distill.mode={a.mode}",
        "distill.offline_pool=16",
        f"distill.fsdp_teacher={a.teacher}",
        f"distill.activation_checkpointing={str(a.checkpointing).lower()}",
    ]
    beta = 0.0 if a.mode == "teacher" else a.beta
    cfg = tiny_config(out.parent, a.steps, beta=beta, extra=extra)
    info, device = init_distributed(torch.device("cpu"))
    parts = tiny_musicgen_parts(cfg) if a.musicgen else tiny_parts(cfg)
    if a.step_sleep:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))
        from kill_resume import slow_snapshots

        slow_snapshots(a.step_sleep)
    distill(cfg, parts, out, {"base_hash": "test"}, device, info, resume=a.resume)
    if a.parallel == "ddp":  # each rank's own copy (an FSDP run's whole weights are out/model.safetensors)
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in parts.student.state_dict().items()},
            str(out / f"rank{info.rank}.safetensors"),
        )
    del parts  # the sharded weights hold the process group: release them before leaving it
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
