"""What wrote a file: package versions, torch and CUDA, and the git commit of the source, for provenance."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions a provenance records (those not installed are left out)
PACKAGES = ("musicdistill", "torch", "transformers", "safetensors", "numpy", "gradio")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def source_commit() -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the checkout the package runs from; empty outside one."""
    here = Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], here)
    if not commit:
        return {}
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return {"git_commit": commit, "git_dirty": bool(status)}


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Python, the versions of :data:`PACKAGES`, torch's CUDA build and the source commit."""
    import torch

    record: dict[str, Any] = {"python": platform.python_version()}
    record.update({name: v for name in PACKAGES if (v := _version(name))})
    record["cuda"] = torch.version.cuda
    record.update(source_commit())
    return record
