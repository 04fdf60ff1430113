"""Read-only tensors memory-mapped from a safetensors file: weights that stay on disk until read.

The demo's dial keeps its two endpoints this way: the pages live in the operating system's file
cache, shared and reclaimable, not in the process's own (anonymous) memory, and nothing is copied
until a slider move reads them. The file is parsed from its documented layout (an 8-byte
little-endian header length, a JSON header of ``{name: {dtype, shape, data_offsets}}``, then the
data); nothing is unpickled.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

#: safetensors dtype -> (numpy dtype to map, torch dtype to view it as)
DTYPES = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.uint16, torch.bfloat16),
    "I64": (np.int64, torch.int64),
    "I32": (np.int32, torch.int32),
    "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8),
    "U8": (np.uint8, torch.uint8),
    "BOOL": (np.bool_, torch.bool),
}


def map_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` as a read-only CPU tensor backed by the file (do not write to them).

    Raises ValueError naming the file when its header is not a safetensors header or names a dtype
    this reader does not map.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a safetensors header ({exc})") from None
    start = 8 + length
    out: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}, which cannot be mapped")
        np_dtype, torch_dtype = DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * np.dtype(np_dtype).itemsize:
            raise ValueError(f"{path}: tensor {name}'s offsets do not match its shape {shape}")
        if count == 0:
            out[name] = torch.empty(shape, dtype=torch_dtype)
            continue
        array = np.memmap(path, dtype=np_dtype, mode="r", offset=start + begin, shape=(count,))
        with warnings.catch_warnings():  # a read-only array: torch warns that it cannot be written
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(array)
        out[name] = (
            tensor.view(torch_dtype).reshape(shape) if np_dtype is np.uint16 else tensor.reshape(shape)
        )
    return out
