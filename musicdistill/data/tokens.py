"""Token datasets: a manifest's clips (every window of every file) encoded once by a codec, with
captions, splits and attributes.

Pretraining, distillation prompts and evaluation all read the same encoded set, saved as
``tokens.safetensors`` (codes ``[N, K, T]`` int32) plus ``tokens.json`` (captions, splits,
attributes and the codec/frame settings).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from musicdistill.codec.interface import Codec
from musicdistill.config import DataConfig
from musicdistill.data.loading import load_dataset
from musicdistill.data.manifest import Entry
from musicdistill.data.windows import DEFAULT_WINDOWING, Windowing, windowing_of
from musicdistill.progress import track
from musicdistill.storage.atomic import atomic_write_text, atomic_write_with

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.safetensors"
META_FILE = "tokens.json"


@dataclass
class TokenSet:
    """Encoded clips: ``codes [N, K, T]`` (int64) and per-clip captions, splits, attributes."""

    codes: torch.Tensor
    captions: list[str]
    splits: list[str]
    attributes: list[dict[str, Any] | None]
    frame_rate: float
    cardinality: int

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[1]

    @property
    def num_frames(self) -> int:
        return self.codes.shape[2]

    def select(self, split: str) -> TokenSet:
        """The clips of one split (``train``, ``valid`` or ``test``)."""
        idx = [i for i, s in enumerate(self.splits) if s == split]
        if not idx:
            raise ValueError(
                f"the token set has no clips in split '{split}' (splits: {sorted(set(self.splits))})"
            )
        return TokenSet(
            codes=self.codes[idx],
            captions=[self.captions[i] for i in idx],
            splits=[split] * len(idx),
            attributes=[self.attributes[i] for i in idx],
            frame_rate=self.frame_rate,
            cardinality=self.cardinality,
        )


def encode_clips(codec: Codec, audio: torch.Tensor, sample_rate: int, batch_size: int = 64) -> torch.Tensor:
    """Encode mono clips ``[N, samples]`` to codes ``[N, K, T]`` (on the CPU) in batches, with a progress bar.

    The codec runs on its own device; the clips are moved there batch by batch.
    """
    chunks = []
    with torch.inference_mode():
        for start in track(
            range(0, audio.shape[0], batch_size), desc="encoding clips", unit="batch", leave=False
        ):
            wav = audio[start : start + batch_size].unsqueeze(1)
            chunks.append(codec.encode(wav, sample_rate).to("cpu", torch.int64))
    return torch.cat(chunks)


def build_token_set(entries: list[Entry], audio: torch.Tensor, codec: Codec, sample_rate: int) -> TokenSet:
    """Encode loaded clips (``audio [N, samples]``, one per entry) into a :class:`TokenSet`."""
    if len(entries) != audio.shape[0]:
        raise ValueError(f"{len(entries)} entries but {audio.shape[0]} clips")
    codes = encode_clips(codec, torch.as_tensor(audio), sample_rate)
    return TokenSet(
        codes=codes,
        captions=[e.caption for e in entries],
        splits=[e.split for e in entries],
        attributes=[e.attributes for e in entries],
        frame_rate=float(codec.frame_rate),
        cardinality=int(codec.cardinality),
    )


def save_token_set(tokens: TokenSet, directory: str | Path) -> Path:
    directory = Path(directory)
    codes = tokens.codes.to(torch.int32).contiguous()
    atomic_write_with(directory / TOKENS_FILE, lambda tmp: save_file({"codes": codes}, str(tmp)))
    meta = {
        "captions": tokens.captions,
        "splits": tokens.splits,
        "attributes": tokens.attributes,
        "frame_rate": tokens.frame_rate,
        "cardinality": tokens.cardinality,
    }
    atomic_write_text(directory / META_FILE, json.dumps(meta))
    return directory


def load_token_set(directory: str | Path) -> TokenSet:
    directory = Path(directory)
    for name in (TOKENS_FILE, META_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} is missing; encode the data first (musicdistill pretrain does it, "
                "or the 'tokens' stage of musicdistill run)"
            )
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    codes = load_file(str(directory / TOKENS_FILE))["codes"].to(torch.int64)
    if codes.shape[0] != len(meta["captions"]):
        raise ValueError(
            f"{directory}: {codes.shape[0]} code rows but {len(meta['captions'])} captions; re-encode"
        )
    return TokenSet(
        codes, meta["captions"], meta["splits"], meta["attributes"], meta["frame_rate"], meta["cardinality"]
    )


def encode_manifest(
    manifest: str | Path,
    codec: Codec,
    sample_rate: int,
    duration: float,
    workers: int = 2,
    strict: bool = False,
    min_duration: float = 0.5,
    windowing: Windowing | None = DEFAULT_WINDOWING,
) -> TokenSet:
    """Load every usable clip of a manifest (all splits; files longer than ``duration`` cut into windows,
    see :func:`musicdistill.data.loading.load_dataset`) and encode it."""
    entries, audio = load_dataset(
        manifest,
        sample_rate,
        duration,
        strict=strict,
        workers=workers,
        min_duration=min_duration,
        windowing=windowing,
    )
    return build_token_set(entries, torch.from_numpy(audio), codec, sample_rate)


def encode_manifest_as_configured(manifest: str | Path, codec: Codec, data: DataConfig) -> TokenSet:
    """:func:`encode_manifest` with the ``data`` section's rate, clip length, readers, strictness,
    shortest clip and windowing."""
    return encode_manifest(
        manifest,
        codec,
        data.sample_rate,
        data.duration,
        data.workers,
        data.strict,
        data.min_duration,
        windowing_of(data),
    )
