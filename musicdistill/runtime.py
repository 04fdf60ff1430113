"""Where and how tensors run: device resolution, mixed-precision autocast, global seeding."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX-512 BF16 or AMX); read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_enabled(device: torch.device, requested: bool) -> bool:
    """Whether bf16 autocast should run: on CUDA as requested; on a CPU only with native bf16 matmul.

    Without it (e.g. AVX2-only CPUs) oneDNN falls back to a reference kernel that is 10-20x slower
    than fp32, so the request is ignored there, with one warning.
    """
    if not requested:
        return False
    if device.type != "cpu" or cpu_has_fast_bf16():
        return True
    _warn_slow_bf16()
    return False


@functools.lru_cache(maxsize=1)
def _warn_slow_bf16() -> None:
    log.warning(
        "bf16 was requested, but this CPU has no native bf16 matrix multiply (avx512_bf16/amx); "
        "running in float32, which is much faster here"
    )


@contextlib.contextmanager
def autocast(device: torch.device, bf16: bool) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``bf16`` and the device runs it fast (see :func:`bf16_enabled`)."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16_enabled(device, bf16)):
        yield


def device_clock(device: torch.device):
    """A ``time.perf_counter`` that first waits for the device's queued work (CUDA runs asynchronously),
    so phase timings measure the work of the phase rather than its kernel launches."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
