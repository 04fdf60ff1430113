"""Memory-mapped safetensors: the same values as safetensors' own reader, without a copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from musicdistill.storage.mapped_weights import map_safetensors


def test_mapped_tensors_equal_the_files_values_for_every_dtype(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 4, generator=gen),
        "f16": torch.randn(5, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, str(tmp_path / "w.safetensors"))
    mapped = map_safetensors(tmp_path / "w.safetensors")
    reference = load_file(str(tmp_path / "w.safetensors"))
    assert set(mapped) == set(reference)
    for name, value in reference.items():
        assert mapped[name].dtype == value.dtype and mapped[name].shape == value.shape, name
        assert torch.equal(mapped[name], value), name
    merged = torch.lerp(mapped["f32"], mapped["f32"] * 2, 0.5)  # usable as a read-only input
    torch.testing.assert_close(merged, reference["f32"] * 1.5)


def test_a_file_that_is_not_safetensors_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ValueError, match="bad.safetensors: not a safetensors header"):
        map_safetensors(tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="too short"):
        map_safetensors(tmp_path / "short.safetensors")
