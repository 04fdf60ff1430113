"""A tiny in-memory pretraining set-up, and a script entry for the resume-after-SIGKILL test.

``python tests/training/pretrain_fixture.py OUT STEPS [--resume] [--step-sleep S]`` runs the real
:func:`musicdistill.training.pretrain.pretrain` on random tokens with deterministic stand-in caption
encodings (no text encoder is loaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from kill_resume import slow_snapshots

from musicdistill.config import Config, load_config
from musicdistill.data.caption_bank import EncodedCaptions
from musicdistill.data.tokens import TokenSet
from musicdistill.model.text import TextCondition
from musicdistill.training.pretrain import pretrain

K, V, T, TEXT_DIM, TEXT_TOKENS = 2, 16, 8, 8, 3
CAPTIONS = [f"caption {i}" for i in range(6)]


def tiny_config(tmp: Path, steps: int, extra: list[str] | None = None) -> Config:
    return load_config(
        None,
        [
            f"runs_dir={tmp}",
            "name=p",
            "model.dim=16",
            "model.layers=1",
            "model.heads=2",
            "model.delays=[0,1]",
            "model.max_frames=16",
            "codec.num_codebooks=2",
            f"pretrain.steps={steps}",
            "pretrain.batch_size=4",
            "pretrain.warmup_steps=2",
            "pretrain.val_every=3",
            "pretrain.val_batches=1",
            "pretrain.ckpt_every=2",
            "pretrain.cond_dropout=0.3",
            "pretrain.bf16=false",
            "pretrain.lr=0.01",
            *(extra or []),
        ],
    )


def token_sets(seed: int = 0) -> tuple[TokenSet, TokenSet]:
    """(train: 12 clips, valid: 4 clips) of codes ``[N, K, T]``: a random pattern per caption, so there
    is something to learn that the valid split shares."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randint(0, V, (len(CAPTIONS), K, T), generator=g)
    codes = patterns[torch.arange(16) % len(CAPTIONS)]
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(16)]
    splits = ["train"] * 12 + ["valid"] * 4
    tokens = TokenSet(codes, captions, splits, [None] * 16, frame_rate=4.0, cardinality=V)
    return tokens.select("train"), tokens.select("valid")


def encoded_captions(cfg: Config, seed: int = 0) -> EncodedCaptions:
    """Seeded stand-in encodings ``[U, S, D]`` of every caption, under the config's encoder name."""
    g = torch.Generator().manual_seed(seed + 1)
    states = torch.randn(len(CAPTIONS), TEXT_TOKENS, TEXT_DIM, generator=g)
    mask = torch.ones(len(CAPTIONS), TEXT_TOKENS, dtype=torch.bool)
    return EncodedCaptions(sorted(CAPTIONS), TextCondition(states, mask), cfg.text.encoder)


def run(out: Path, steps: int, resume: bool = False, extra: list[str] | None = None) -> Path:
    cfg = tiny_config(out.parent, steps, extra)
    train, valid = token_sets()
    return pretrain(cfg, train, valid, out, resume=resume, captions=encoded_captions(cfg))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--step-sleep", type=float, default=0.0, help="sleep after each snapshot (kill tests)")
    a = ap.parse_args(argv)
    if a.step_sleep:
        slow_snapshots(a.step_sleep)
    torch.set_num_threads(1)
    run(Path(a.out), a.steps, a.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
