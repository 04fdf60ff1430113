"""Starting a student from another finetune of the same base (``musicdistill distill --init``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from musicdistill.config import ConfigError
from musicdistill.storage.checkpoint import file_sha256, save_checkpoint
from musicdistill.training.distill_setup import finetune_of


def _checkpoint(folder: Path, value: float, provenance: dict) -> Path:
    return save_checkpoint(folder, {"w": torch.full((2, 2), value)}, {"model": {}}, provenance)


def test_a_finetune_of_the_base_is_accepted(tmp_path: Path) -> None:
    base = _checkpoint(tmp_path / "base", 0.0, {"kind": "base"})
    init = _checkpoint(tmp_path / "quality", 1.0, {"base_hash": file_sha256(base / "model.safetensors")})
    assert torch.equal(finetune_of(init, base).state_dict["w"], torch.ones(2, 2))


def test_a_finetune_of_another_base_is_refused_naming_both(tmp_path: Path) -> None:
    base = _checkpoint(tmp_path / "base", 0.0, {"kind": "base"})
    init = _checkpoint(tmp_path / "other", 1.0, {"base_hash": "0" * 64})
    with pytest.raises(ConfigError, match="was not distilled from the base"):
        finetune_of(init, base)
