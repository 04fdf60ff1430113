"""Measure a few distillation steps' peak tensor memory and the plan's figure for the same run.

``python memory_fixture.py OUT [--parallel ddp|fsdp] [--musicgen]`` (under torchrun for several
processes) distils a small model (native: width 128, 4 layers, 4 codebooks of 256; MusicGen: a
random one of the same shape) for 3 steps inside :class:`TensorMemoryProbe` and writes
``OUT/memory_rank<r>.json``: ``{"measured": bytes, "planned": bytes}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill_fixture import fake_encode_dim  # noqa: E402

from musicdistill.config import load_config  # noqa: E402
from musicdistill.model.generator import build_generator  # noqa: E402
from musicdistill.training.distill import DistillParts, PromptSet, distill, frozen_copy  # noqa: E402
from musicdistill.training.memory_plan import distill_memory, model_size_of  # noqa: E402
from musicdistill.training.memory_probe import TensorMemoryProbe  # noqa: E402

K, V, FRAMES, TEXT_DIM, PROMPTS = 4, 256, 32, 32, 8


def small_musicgen() -> torch.nn.Module:
    """A random transformers MusicGen decoder of width 128, 4 layers, 4 codebooks of 256 (no dropout)."""
    from musicgen_fixture import decoder_config
    from transformers import MusicgenForCausalLM

    from musicdistill.model.musicgen import MusicgenBackbone

    config = decoder_config(128, 4, 512, vocab=V, dropout=0.0)
    torch.manual_seed(0)
    decoder = MusicgenForCausalLM(config)
    return MusicgenBackbone(decoder, torch.nn.Linear(TEXT_DIM, 128), TEXT_DIM, None)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    ap.add_argument("--musicgen", action="store_true")
    a = ap.parse_args(argv)
    from musicdistill.training.distributed import init_distributed, shutdown_distributed

    out = Path(a.out)
    cfg = load_config(
        None,
        [
            f"runs_dir={out.parent}",
            "name=m",
            "model.dim=128",
            "model.layers=4",
            "model.heads=4",
            "model.delays=[0,1,2,3]",
            "model.max_frames=64",
            f"codec.num_codebooks={K}",
            "distill.steps=3",
            f"distill.prompts_per_step={PROMPTS}",
            "distill.group_size=2",
            "distill.beta=0.5",
            "distill.eval_prompts=1",
            "distill.bf16=false",
            "distill.warmup_steps=0",
            f"distill.parallel={a.parallel}",
        ],
    )
    info, device = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    if a.musicgen:
        base = small_musicgen()
        student = small_musicgen()
    else:
        base = build_generator(cfg.model, K, V, TEXT_DIM)
        student = build_generator(cfg.model, K, V, TEXT_DIM)
    student.load_state_dict(base.state_dict())
    prompts = PromptSet([f"p{i}" for i in range(PROMPTS)], [None] * PROMPTS)

    def reward(codes: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.one_hot(codes[:, 0], V).float().sum(1), dim=-1)

    parts = DistillParts(
        student=student.train(),
        teacher=frozen_copy(base),
        encode=fake_encode_dim(TEXT_DIM),
        train=prompts,
        held_out=prompts,
        num_frames=FRAMES,
        reward_embed=reward,
    )
    plan = distill_memory(
        model_size_of(student, text_tokens=3), cfg.distill, FRAMES, info.world_size, a.parallel
    )
    probe = TensorMemoryProbe(trace=True)
    probe.hold(parts.student, parts.teacher)
    with probe:
        distill(cfg, parts, out, {}, device, info)
    out.mkdir(parents=True, exist_ok=True)
    record = {"measured": probe.peak, "planned": plan.peak, "peak_at": probe.peak_at}
    (out / f"memory_rank{info.rank}.json").write_text(json.dumps(record))
    shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
