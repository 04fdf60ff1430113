"""Every distinct caption of a dataset encoded once by the frozen text encoder, kept on disk.

Pretraining conditions on every training caption and the text-audio scorer trains on their sentence
embeddings; encoding them is a minute of CPU for the built-in data. The main job's ``captions``
stage does it once and both read the result.

On disk (``<dir>/captions.safetensors`` + ``<dir>/captions.json``): the token states of all captions
concatenated, ``states [sum S_u, D]`` (float16: the encoder's outputs are O(1), so the rounding is far
below anything training notices), ``lengths [U]``, and the caption strings in the same order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from musicdistill.model.text import TextCondition, TextEncoder
from musicdistill.progress import track
from musicdistill.storage.atomic import atomic_write_text, atomic_write_with

log = logging.getLogger(__name__)

TENSORS_FILE = "captions.safetensors"
META_FILE = "captions.json"
FORMAT_VERSION = 1
_CHUNK = 256


@dataclass
class CaptionBank:
    """Encoder states of every distinct caption, and each clip's row in them.

    ``cond`` holds ``[U, S, D]`` states (padded to the longest caption, with the mask); ``rows [N]``
    maps clip i to its caption's row.
    """

    cond: TextCondition
    rows: torch.Tensor

    def batch(self, clip_idx: torch.Tensor) -> TextCondition:
        """The conditions ``[B, S, D]`` of clips ``clip_idx [B]``."""
        return self.cond.select(self.rows[clip_idx])


@dataclass
class EncodedCaptions:
    """Distinct captions (sorted) and their encodings ``[U, S, D]``, as stored by :func:`save_captions`."""

    captions: list[str]
    cond: TextCondition
    encoder: str

    def bank(self, captions: Sequence[str], device: torch.device | str = "cpu") -> CaptionBank:
        """A :class:`CaptionBank` for clips with ``captions`` (each must be encoded here)."""
        index = {c: i for i, c in enumerate(self.captions)}
        missing = [c for c in dict.fromkeys(captions) if c not in index]
        if missing:
            raise KeyError(
                f"{len(missing)} caption(s) are not in the caption bank (first: {missing[0]!r}); "
                "rerun the captions stage (musicdistill run CONFIG --force captions)"
            )
        used = sorted({index[c] for c in captions})
        local = {row: i for i, row in enumerate(used)}
        cond = self.cond.select(torch.tensor(used))
        rows = torch.tensor([local[index[c]] for c in captions], device=device)
        return CaptionBank(cond=TextCondition(cond.states.to(device), cond.mask.to(device)), rows=rows)


def encode_captions(encoder: TextEncoder, captions: Sequence[str]) -> EncodedCaptions:
    """Encode each distinct caption once, with a progress bar; float32 states on the CPU. Captions go
    in order of length (then text), so each batch pads to about its own length, not the longest
    caption's; the bank finds a caption by its text, whatever its row."""
    unique = sorted(set(captions), key=lambda c: (len(c), c))
    parts = []
    for start in track(range(0, len(unique), _CHUNK), desc="encoding captions", unit="batch", leave=False):
        with torch.inference_mode():
            cond = encoder.encode(unique[start : start + _CHUNK])
        parts.append(TextCondition(cond.states.detach().float().cpu().clone(), cond.mask.cpu().clone()))
        encoder.clear_cache()
    return EncodedCaptions(unique, _pad_concat(parts), encoder.name)


def _pad_concat(parts: list[TextCondition]) -> TextCondition:
    """Stack conditions of different lengths S_i into one ``[sum B_i, max S_i, D]``."""
    if not parts:
        raise ValueError("no captions to encode")
    length = max(p.states.shape[1] for p in parts)
    rows = sum(len(p) for p in parts)
    states = torch.zeros(rows, length, parts[0].dim)
    mask = torch.zeros(rows, length, dtype=torch.bool)
    at = 0
    for p in parts:
        states[at : at + len(p), : p.states.shape[1]] = p.states
        mask[at : at + len(p), : p.mask.shape[1]] = p.mask
        at += len(p)
    return TextCondition(states, mask)


def save_captions(encoded: EncodedCaptions, directory: str | Path) -> Path:
    """Write ``captions.safetensors`` + ``captions.json`` into ``directory`` (atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lengths = encoded.cond.mask.sum(dim=1)
    flat = encoded.cond.states[encoded.cond.mask].to(torch.float16).contiguous()  # [sum S_u, D], row-major
    tensors = {"states": flat, "lengths": lengths.to(torch.int32)}
    atomic_write_with(directory / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    meta = {"format_version": FORMAT_VERSION, "encoder": encoded.encoder, "captions": encoded.captions}
    atomic_write_text(directory / META_FILE, json.dumps(meta, ensure_ascii=False))
    log.info("%d caption encodings saved to %s", len(encoded.captions), directory)
    return directory


def load_captions(directory: str | Path, encoder: str | None = None) -> EncodedCaptions:
    """Read what :func:`save_captions` wrote; ``encoder`` (a ``text.encoder`` value) must match when given."""
    directory = Path(directory)
    meta_path, tensors_path = directory / META_FILE, directory / TENSORS_FILE
    if not meta_path.is_file() or not tensors_path.is_file():
        raise FileNotFoundError(
            f"{directory} holds no caption bank ({META_FILE} + {TENSORS_FILE}); run the "
            "main job's captions stage first"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    if encoder is not None and meta.get("encoder") != encoder:
        raise ValueError(
            f"{meta_path} was encoded with text.encoder={meta.get('encoder')!r}, not {encoder!r}; "
            "rerun the captions stage"
        )
    tensors = load_file(str(tensors_path))
    lengths = tensors["lengths"].long()
    if len(lengths) != len(meta["captions"]) or int(lengths.sum()) != tensors["states"].shape[0]:
        raise ValueError(f"{tensors_path} does not match {meta_path} (caption count or token count differs)")
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    states = torch.zeros(*mask.shape, tensors["states"].shape[1])
    states[mask] = tensors["states"].float()
    return EncodedCaptions(list(meta["captions"]), TextCondition(states, mask), meta["encoder"])


def sentence_vectors(encoded: EncodedCaptions, captions: Sequence[str]) -> torch.Tensor:
    """Mean-pooled, L2-normalised states of ``captions`` -> ``[N, D]`` (what the scorer's text tower reads)."""
    bank = encoded.bank(captions)
    cond = bank.cond
    weights = cond.mask.float().unsqueeze(-1)
    pooled = (cond.states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)[bank.rows]
