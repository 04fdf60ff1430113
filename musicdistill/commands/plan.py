"""``musicdistill plan``: per-GPU memory of a distillation with DDP and with FSDP, and which fits."""

from __future__ import annotations

import argparse

from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args
from musicdistill.training.plan_report import plan_table, recommend, size_for

READS = ConfigReads(
    "musicdistill plan",
    (
        "distill.prompts_per_step",
        "distill.group_size",
        "distill.bf16",
        "distill.activation_checkpointing",
        "model",
        "codec",
        "text",
        "data.duration",
        "data.sample_rate",
    ),
)

#: models the plan knows without a folder (kept in sync with memory_plan.MUSICGEN_SIZES)
PRESETS = ("musicgen-small", "musicgen-medium", "musicgen-large")

DESCRIPTION = """\
Per-GPU memory of `musicdistill distill` under torchrun, phase by phase, for DDP (a whole student,
its gradients and AdamW state and the teacher on every GPU) and for FSDP (sharded over the GPUs,
the teacher sharded or replicated in bf16), with and without activation checkpointing; then the
setting to use. The model is the config's (a native generator, or model.backbone=musicgen with a
local model.pretrained folder) or a public MusicGen size (--model). Batch and precision come from
the distill section: distill.prompts_per_step, distill.group_size, distill.bf16."""

EPILOG = """\
examples:
  musicdistill plan --config configs/default.yaml --gpus 8 --gpu-memory 80 --model musicgen-large --seconds 10
  musicdistill plan --config configs/default.yaml --gpus 2 --gpu-memory 24 distill.prompts_per_step=8"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="per-GPU memory of a distillation with DDP and FSDP, phase by phase, and which setting fits",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p, READS)
    p.add_argument("--gpus", type=int, default=1, metavar="N", help="processes (GPUs) in all (default: 1)")
    p.add_argument(
        "--gpu-memory", type=float, default=80.0, metavar="GIB", help="memory of one GPU in GiB (default: 80)"
    )
    p.add_argument(
        "--model",
        choices=(*PRESETS, "config"),
        default="config",
        help="the model to plan for: a public MusicGen size, or the config's (default)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="length of a rollout in seconds (default: data.duration)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.gpus < 1:
        raise ValueError(f"--gpus {args.gpus} must be >= 1")
    if not args.gpu_memory > 0:
        raise ValueError(f"--gpu-memory {args.gpu_memory} must be a positive number of GiB, e.g. 80")
    if args.seconds < 0:
        raise ValueError(f"--seconds {args.seconds} must be >= 0 (0 = data.duration)")
    cfg = config_from_args(args)
    size, frame_rate = size_for(cfg, args.model)
    seconds = args.seconds or cfg.data.duration
    frames = max(1, round(seconds * frame_rate))
    settings, text = plan_table(size, cfg.distill, frames, args.gpus, args.gpu_memory)
    print(
        f"{size.name}: {size.params / 1e6:,.1f}M trainable parameters, {size.layers} layers of width "
        f"{size.dim}; {cfg.distill.prompts_per_step} prompts x {cfg.distill.group_size} rollouts per step, "
        f"{seconds:g} s = {frames} frames; {args.gpus} GPU(s) of {args.gpu_memory:g} GiB; "
        f"{'bf16' if cfg.distill.bf16 else 'fp32'} compute"
    )
    print(text)
    print(recommend(settings, args.gpus, args.gpu_memory))
    return 0
