"""The :class:`Codec` protocol every audio tokenizer implements, its shared checks, and ``codec.json``.

Implementations: :class:`musicdistill.codec.melrvq.MelRVQCodec` (the offline default, fitted on the
training audio), and the EnCodec adapters in :mod:`musicdistill.codec.encodec_adapters` (transformers'
``EncodecModel``, and the ``encodec`` package of the optional ``audio`` extra).

Every codec directory holds ``codec.json``, whose ``kind`` picks the class that reads the rest;
:func:`musicdistill.codec.factory.load_codec` dispatches on it. Codes are int64 [B, K, T] with values in [0, V).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from musicdistill.dsp.features import resample
from musicdistill.storage.model_files import read_tagged_json, write_tagged_json

CODEC_JSON = "codec.json"
FORMAT = "musicdistill-codec"
FORMAT_VERSION = 1
KINDS = ("melrvq", "encodec_hf", "encodec")


@runtime_checkable
class Codec(Protocol):
    """A tokenizer between mono waveforms and K parallel streams of discrete codes.

    ``encode(wav [B, 1, N], sample_rate) -> codes [B, K, T]`` (int64, values in [0, V)); input at
    another sample rate is resampled to :attr:`sample_rate`. ``decode(codes [B, K, T]) -> wav [B, 1, N']``
    at :attr:`sample_rate`, with ``N'`` about ``T / frame_rate`` seconds.
    """

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_rate(self) -> float: ...

    @property
    def num_codebooks(self) -> int: ...

    @property
    def cardinality(self) -> int: ...

    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Codec: ...


# --------------------------------------------------------------------------------------------
# Shared checks and codec.json
# --------------------------------------------------------------------------------------------


def prepare_wav(wav: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Check a mono batch [B, 1, N] and resample it to ``target_rate`` -> float32 [B, 1, N']."""
    if not isinstance(wav, torch.Tensor):
        raise ValueError(f"wav must be a torch.Tensor [B, 1, N], got {type(wav).__name__}")
    if wav.dim() != 3 or wav.shape[1] != 1 or wav.shape[0] < 1 or wav.shape[2] < 1:
        raise ValueError(
            f"wav must have shape [B, 1, N] (mono, B >= 1, N >= 1), got {tuple(wav.shape)}; "
            "mix stereo down first with wav.mean(dim=1, keepdim=True)"
        )
    if not wav.is_floating_point():
        raise ValueError(f"wav must be floating point audio in [-1, 1], got dtype {wav.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return resample(wav.float(), sample_rate, target_rate)


def validate_codes(codes: torch.Tensor, num_codebooks: int, cardinality: int) -> torch.Tensor:
    """Check codes [B, K, T] (integer dtype, K = ``num_codebooks``, values in [0, V)) -> int64 codes."""
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"codes must be a torch.Tensor [B, K, T], got {type(codes).__name__}")
    if codes.dtype in (torch.bool,) or codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"codes must have an integer dtype (int64), got {codes.dtype}")
    if codes.dim() != 3 or codes.shape[1] != num_codebooks or codes.shape[0] < 1 or codes.shape[2] < 1:
        raise ValueError(
            f"codes must have shape [B, K={num_codebooks}, T] with B, T >= 1, got {tuple(codes.shape)}"
        )
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= cardinality:
        bad = codes.lt(0) | codes.ge(cardinality)
        b, k, t = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"codes must lie in [0, {cardinality - 1}] (cardinality {cardinality}), got "
            f"{int(codes[b, k, t])} at [batch {b}, codebook {k}, frame {t}] (range {low}..{high})"
        )
    return codes.long()


def write_codec_json(directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``codec.json`` (adding the format tag and version) atomically."""
    return write_tagged_json(Path(directory) / CODEC_JSON, FORMAT, FORMAT_VERSION, meta)


def read_codec_json(directory: str | Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Read and check ``codec.json``; raises FileNotFoundError / ValueError naming the file and the fix."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"codec directory {directory} does not exist; create one with "
            "'musicdistill codec fit --data MANIFEST --out DIR'"
        )
    path = directory / CODEC_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a codec directory "
            "(create one with 'musicdistill codec fit')"
        )
    meta = read_tagged_json(
        path, FORMAT, FORMAT_VERSION, "codec", "re-create the codec with 'musicdistill codec fit'"
    )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown codec kind {kind!r}; expected one of {list(KINDS)}")
    if expected_kind is not None and kind != expected_kind:
        raise ValueError(
            f"{path} describes a '{kind}' codec, not '{expected_kind}'; open it with "
            "musicdistill.codec.factory.load_codec"
        )
    return meta
