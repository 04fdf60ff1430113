"""Pretraining on a tiny in-memory set: smoke run, batching, and resume after SIGKILL bit for bit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from musicdistill.config import ConfigError
from musicdistill.storage.checkpoint import load_checkpoint
from musicdistill.training.pretrain import batch_indices, pretrain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kill_resume import assert_same_tensors, reference_and_resumed  # noqa: E402
from pretrain_fixture import encoded_captions, run, tiny_config, token_sets  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "pretrain_fixture.py"
#: history columns that measure time, not the computation
TIMED = ("tokens_per_s",)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_smoke_run_lowers_the_loss_and_writes_checkpoints(tmp_path: Path) -> None:
    out = run(tmp_path / "p", steps=12, extra=["pretrain.val_every=12", "pretrain.ckpt_every=4"])
    rows = _rows(out)
    assert [r["step"] for r in rows] == list(range(13))
    assert "val_loss" in rows[0] and "val_loss" in rows[-1] and "val_loss" not in rows[5]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert rows[1]["lr"] == pytest.approx(0.01) and rows[-1]["lr"] == pytest.approx(0.001)
    ck = load_checkpoint(out)
    assert ck.provenance["kind"] == "base" and ck.provenance["step"] == 12
    snapshots = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert snapshots == ["step_0000008", "step_0000012"]  # the two newest are kept


def test_a_too_short_context_and_foreign_caption_encodings_are_refused(tmp_path: Path) -> None:
    train, valid = token_sets()
    cfg = tiny_config(tmp_path, 2, ["model.max_frames=8"])
    with pytest.raises(ConfigError, match="raise model.max_frames to at least 9"):
        pretrain(cfg, train, valid, tmp_path / "a", captions=encoded_captions(cfg))
    cfg = tiny_config(tmp_path, 2)
    captions = encoded_captions(cfg)
    captions.encoder = "another-encoder"
    with pytest.raises(ConfigError, match="rerun the captions stage"):
        pretrain(cfg, train, valid, tmp_path / "b", captions=captions)


def test_batches_walk_seeded_epoch_permutations() -> None:
    first_epoch = torch.cat([batch_indices(10, 4, step, seed=3) for step in range(3)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))  # every clip once per epoch
    assert torch.equal(batch_indices(10, 4, 7, seed=3), batch_indices(10, 4, 7, seed=3))
    assert not torch.equal(batch_indices(10, 4, 0, seed=3), batch_indices(10, 4, 0, seed=4))


def test_resume_after_sigkill_matches_uninterrupted(tmp_path: Path) -> None:
    reference_and_resumed(FIXTURE, tmp_path / "ref" / "p", tmp_path / "k" / "p", steps=8, kill_after=4)
    assert_same_tensors(
        tmp_path / "ref" / "p" / "model.safetensors", tmp_path / "k" / "p" / "model.safetensors"
    )

    def untimed(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMED} for r in _rows(tmp_path / run / "p")]

    assert untimed("k") == untimed("ref")  # each step once, with the reference's values
