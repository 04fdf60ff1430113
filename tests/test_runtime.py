"""Device and precision choices."""

from __future__ import annotations

import torch

from musicdistill import runtime


def test_bf16_is_skipped_on_cpus_without_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.bf16_enabled(torch.device("cpu"), True) is False
    with runtime.autocast(torch.device("cpu"), True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.bf16_enabled(torch.device("cpu"), True) is True
    with runtime.autocast(torch.device("cpu"), True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert runtime.bf16_enabled(torch.device("cpu"), False) is False


def test_resolve_device() -> None:
    assert runtime.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        import pytest

        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.resolve_device("cuda")
