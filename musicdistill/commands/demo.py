"""``musicdistill demo``: the quality ↔ diversity slider demo in the browser (Gradio)."""

from __future__ import annotations

import argparse
import os

from musicdistill.demo.app import launch_demo
from musicdistill.demo.loading import load_engine
from musicdistill.demo.run_folders import DemoPaths, find_run_checkpoints
from musicdistill.runtime import resolve_device

DESCRIPTION = """\
Serve a web page that generates music with a merge of two CFG-distilled students:
λ = 0 is the quality model (distilled with beta=0), λ = 1 the diversity model. When the slider
moves, the merged weights are written in place into one student model, from the two endpoints held
once on the CPU (in --dtype): no merged copies are kept. Each request makes 1-8 variations of a prompt with audio players, log-mel
spectrograms, the batch's diversity (mean pairwise 1 - cos of audio embeddings) and the sampling
time; with --teacher the page can also sample the base model with CFG (2 model rows per sample)
to show what CFG costs. Requests are queued (--max-concurrency run at once).

A conditioned student (the main job's run.conditioned, or --conditioned DIR) serves the whole range
with one model: its slider sets the diversity weight w (0 = quality end, 1 = diversity end), no
weights change and nothing is merged. With --run, the run's conditioned student is served when it
has one (--dial merge serves the merge instead).

Take the checkpoints from a pipeline run with --run DIR (the students by the role in their
provenance.json, DIR/base, DIR/embedder), or name them with --quality/--diversity/--conditioned/
--teacher/--embedder (these override --run). Without an embedder, diversity is measured on hand-made
log-mel features."""

EPILOG = """\
examples:
  musicdistill demo --run runs/default
  musicdistill demo --run runs/default --dial merge
  musicdistill demo --quality runs/default/distill_beta0 --diversity runs/default/distill_beta15 \\
      --teacher runs/default/base --port 7861"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="web demo: a quality <-> diversity slider over merged students, with a CFG-teacher comparison",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", metavar="DIR", help="pipeline run folder to take every checkpoint from")
    p.add_argument("--quality", metavar="DIR", help="checkpoint at λ = 0 (the quality model, beta = 0)")
    p.add_argument("--diversity", metavar="DIR", help="checkpoint at λ = 1 (the diversity model)")
    p.add_argument(
        "--teacher", metavar="DIR", help="base checkpoint sampled with CFG for comparison (optional)"
    )
    p.add_argument("--embedder", metavar="DIR", help="reward embedder for the diversity read-out (optional)")
    p.add_argument(
        "--conditioned",
        metavar="DIR",
        help="a conditioned student (run.conditioned): its slider sets the diversity weight w on one model",
    )
    p.add_argument(
        "--dial",
        choices=("auto", "merge", "conditioned"),
        default="auto",
        help="with --run: what the slider sets (auto: the run's conditioned student when it has one, else "
        "the merge of its quality and diversity students)",
    )
    p.add_argument(
        "--method",
        choices=("lerp", "slerp"),
        default="lerp",
        help="weight interpolation (default: lerp; slerp needs --teacher, the shared base)",
    )
    p.add_argument(
        "--lam-step",
        type=float,
        default=0.1,
        metavar="STEP",
        help="slider step in (0, 1] (default: 0.1); each step is merged once",
    )
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="weights of the student, the teacher and the dial's endpoints (default: fp32; bf16/fp16 "
        "halve them; on a CPU without native bf16, bf16 is slow)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest a request may sample before it is stopped with a message (default: 120)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="serve even if the provenance shows the two finetunes come from different base models",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)",
    )
    p.add_argument("--port", type=int, default=7860, help="port to bind (default: 7860)")
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=1,
        metavar="N",
        help="requests processed at once (default: 1); the rest wait in the queue",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=16,
        metavar="N",
        help="requests allowed to wait (default: 16); more are refused with a message",
    )
    p.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda, cuda:N"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch CPU threads (default: 0 = torch's choice; 1 avoids oversubscription on a busy small machine)",
    )
    p.set_defaults(func=_run)


def _paths(args: argparse.Namespace):
    from pathlib import Path

    pick = lambda given, default: Path(given) if given else default  # noqa: E731
    if args.conditioned:
        found = find_run_checkpoints(args.run, "conditioned") if args.run else None
        return DemoPaths(
            quality=None,
            diversity=None,
            teacher=pick(args.teacher, found.teacher if found else None),
            embedder=pick(args.embedder, found.embedder if found else None),
            conditioned=Path(args.conditioned),
        )
    if args.run:
        dial = "merge" if (args.quality or args.diversity) else args.dial
        found = find_run_checkpoints(args.run, dial)
        return DemoPaths(
            quality=pick(args.quality, found.quality),
            diversity=pick(args.diversity, found.diversity),
            teacher=pick(args.teacher, found.teacher),
            embedder=pick(args.embedder, found.embedder),
            conditioned=found.conditioned,
        )
    missing = [
        flag for flag, value in (("--quality", args.quality), ("--diversity", args.diversity)) if not value
    ]
    if missing:
        raise ValueError(
            f"missing {' and '.join(missing)}: pass both checkpoints, or --run DIR to take them from "
            "a pipeline run"
        )
    return DemoPaths(
        quality=Path(args.quality),
        diversity=Path(args.diversity),
        teacher=Path(args.teacher) if args.teacher else None,
        embedder=Path(args.embedder) if args.embedder else None,
    )


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the demo needs gradio: pip install 'musicdistill[demo]'") from None

    if not 0 < args.time_limit <= 86400:
        raise ValueError(f"--time-limit {args.time_limit} must lie in (0, 86400] seconds")
    if not 0 <= args.threads <= 1024:
        raise ValueError(f"--threads {args.threads} must lie in [0, 1024] (0 = torch's default)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = load_engine(
        _paths(args),
        resolve_device(args.device),
        method=args.method,
        force=args.force,
        dtype=args.dtype,
        time_limit=args.time_limit,
    )
    print(f"serving the demo on http://{args.host}:{args.port} (Ctrl+C to stop)", flush=True)
    launch_demo(
        engine,
        host=args.host,
        port=args.port,
        max_concurrency=args.max_concurrency,
        queue_size=args.queue_size,
        lam_step=args.lam_step,
    )
    return 0
