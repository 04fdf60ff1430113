"""Checkpoint folders: round trip, hash verification, clear errors, training state without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musicdistill.storage.checkpoint import (
    CheckpointError,
    latest_snapshot,
    load_checkpoint,
    load_training_state,
    publish_latest,
    save_checkpoint,
    save_training_state,
    snapshot_dir,
)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.zeros(4, dtype=torch.bfloat16)}


def test_round_trip(tmp_path: Path) -> None:
    sd = _state()
    save_checkpoint(tmp_path / "ck", sd, {"model": {"dim": 4}}, {"kind": "base", "step": 3})
    ck = load_checkpoint(tmp_path / "ck")
    assert set(ck.state_dict) == {"w", "b"}
    assert torch.equal(ck.state_dict["w"], sd["w"])
    assert ck.state_dict["b"].dtype == torch.bfloat16
    assert ck.config == {"model": {"dim": 4}}
    assert ck.provenance["kind"] == "base" and len(ck.model_hash) == 64


def test_tampered_weights_detected(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ck", _state(), {}, {"kind": "base"})
    save_checkpoint(tmp_path / "other", {"w": torch.ones(1)}, {}, {"kind": "base"})
    (tmp_path / "ck" / "model.safetensors").write_bytes(
        (tmp_path / "other" / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(tmp_path / "ck")


def test_missing_files_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path / "ck", _state(), {}, {"kind": "base"})
    (tmp_path / "ck" / "provenance.json").unlink()
    with pytest.raises(CheckpointError, match="provenance.json is missing"):
        load_checkpoint(tmp_path / "ck")


def test_training_state_round_trip_restores_optimizer_and_nested_values(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    nested = {
        "pair": (1, "a", torch.arange(3)),
        "array": np.arange(4, dtype=np.int16),
        "gen": gen.get_state(),
    }
    state = {"optimizer": opt.state_dict(), "step": 7, "bad_streak": np.int64(2), "nested": nested}
    save_training_state(tmp_path, state)
    assert "pickle" not in (tmp_path / "trainer.json").read_text()

    loaded = load_training_state(tmp_path)
    pair = loaded["nested"]["pair"]
    assert isinstance(pair, tuple) and pair[:2] == (1, "a") and torch.equal(pair[2], torch.arange(3))
    assert loaded["nested"]["array"].dtype == np.int16 and loaded["nested"]["array"].tolist() == [0, 1, 2, 3]
    assert loaded["bad_streak"] == 2 and isinstance(loaded["bad_streak"], int)
    assert torch.equal(loaded["nested"]["gen"], gen.get_state())

    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    opt2.load_state_dict(loaded["optimizer"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(opt2.state_dict()["state"][0][k], v)
    assert loaded["step"] == 7


def test_latest_pointer_and_pruning(tmp_path: Path) -> None:
    assert latest_snapshot(tmp_path) is None
    for step in (1, 2, 3):
        snap = snapshot_dir(tmp_path, step)
        save_checkpoint(snap, _state(), {}, {"kind": "base", "step": step})
        publish_latest(tmp_path, snap, keep_last=2)
    assert latest_snapshot(tmp_path) == snapshot_dir(tmp_path, 3)
    assert not snapshot_dir(tmp_path, 1).exists() and snapshot_dir(tmp_path, 2).exists()


def test_atomic_writes_publish_readable_files(tmp_path: Path) -> None:
    import stat

    from musicdistill.storage.atomic import atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "x")
    assert path.read_text() == "x" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
