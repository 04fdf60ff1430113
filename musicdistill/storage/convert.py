"""Copy a checkpoint with its floating-point weights in another dtype (shipping in fp16, training in fp32).

The shipped base in ``assets/`` is stored in float16 to stay small; the main job's base stage copies
it back to float32 (``pretrain.from_dir``), so every later stage reads an ordinary float32
checkpoint. Only floating-point tensors change dtype; integer and complex tensors are copied as
they are. The config is copied unchanged; the provenance records where the copy came from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from musicdistill.storage.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def cast_floating(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``state_dict`` with every real floating-point tensor cast to ``dtype`` (others untouched)."""
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state_dict.items()}


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    dtype: str,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``out``: the checkpoint ``src`` with its floating weights in ``dtype`` ("float16", "float32", ...).

    ``provenance`` entries replace or extend the source's (e.g. ``codec_dir`` relative to ``out``'s
    parent); ``converted_from`` records the source folder and its weights' sha256.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)}")
    src, out = Path(src), Path(out)
    ckpt = load_checkpoint(src)
    prov = {
        **ckpt.provenance,
        **(provenance or {}),
        "converted_from": {"path": str(src), "model_sha256": ckpt.provenance.get("model_sha256")},
        "dtype": dtype,
    }
    prov.pop("model_sha256", None)
    save_checkpoint(out, cast_floating(ckpt.state_dict, DTYPES[dtype]), ckpt.config, prov)
    log.info("checkpoint %s copied to %s in %s", src, out, dtype)
    return out
