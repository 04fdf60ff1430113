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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--step-sleep", type=float, default=0.0, help="sleep after each snapshot (kill tests)")
    a = ap.parse_args(argv)
    from musicdistill.training.distributed import init_distributed, shutdown_distributed

    out = Path(a.out)
    cfg = tiny_config(out.parent, a.steps, beta=a.beta)
    info, device = init_distributed(torch.device("cpu"))
    parts = tiny_parts(cfg)
    if a.step_sleep:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))
        from kill_resume import slow_snapshots

        slow_snapshots(a.step_sleep)
    distill(cfg, parts, out, {"base_hash": "test"}, device, info, resume=a.resume)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in parts.student.state_dict().items()},
        str(out / f"rank{info.rank}.safetensors"),
    )
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
