"""EnCodec behind the :class:`musicdistill.codec.interface.Codec` interface, two ways.

* :class:`HFEncodecCodec` wraps ``transformers.EncodecModel`` (e.g. ``facebook/encodec_32khz``, the
  MusicGen tokenizer: 4 codebooks x 2048 at 50 Hz), loaded from a local directory, or a hub id when online.
* :class:`EncodecPackageCodec` wraps the ``encodec`` package's 24 kHz / 48 kHz models. That package
  imports torchaudio, so it lives in the optional ``audio`` extra and is imported only when used.

The number of codebooks K picks the bandwidth: the adapter uses the target bandwidth whose
quantizer count equals K. Both adapters run the model on the whole clip at once (no chunking), so
for the normalising 48 kHz model the decoded loudness is the model's normalised level: the per-clip
scale is not a token. Stereo models receive the mono input on both channels; their output is mixed
back to mono.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from musicdistill.codec.interface import (
    CODEC_JSON,
    prepare_wav,
    read_codec_json,
    validate_codes,
    write_codec_json,
)
from musicdistill.storage.atomic import atomic_write_with
from musicdistill.storage.checkpoint import file_sha256

log = logging.getLogger(__name__)

HF_KIND = "encodec_hf"
HF_MODEL_DIR = "encodec"
PACKAGE_KIND = "encodec"
PACKAGE_WEIGHTS = "model.safetensors"
#: the encodec package's model factories, by the names codec.pretrained accepts
PACKAGE_MODELS = {"encodec_24khz": "encodec_model_24khz", "encodec_48khz": "encodec_model_48khz"}
AUDIO_EXTRA_HINT = (
    "install the optional extra with: pip install 'musicdistill[audio]', in an environment whose torch has a "
    "matching torchaudio build (e.g. torch 2.11 with torchaudio 2.11; a mismatched torchaudio fails to import "
    "and also breaks transformers' audio models). Or use codec.kind=encodec_hf, which needs no torchaudio."
)


def quantizers_for_bandwidth(bandwidth: float, frame_rate: float, cardinality: int) -> int:
    """Codebooks EnCodec uses at ``bandwidth`` kbps: floor(1000 * bw / (frame_rate * log2(V))), at least 1."""
    return max(1, int(math.floor(bandwidth * 1000 / (frame_rate * math.log2(cardinality)))))


def bandwidth_for(
    num_codebooks: int | None, bandwidths: list[float], frame_rate: float, cardinality: int
) -> float:
    """The target bandwidth that gives ``num_codebooks`` codebooks (None: the smallest bandwidth)."""
    if num_codebooks is None:
        return float(min(bandwidths))
    table = {float(bw): quantizers_for_bandwidth(bw, frame_rate, cardinality) for bw in bandwidths}
    for bw, k in sorted(table.items()):
        if k == num_codebooks:
            return bw
    options = ", ".join(f"{k} (at {bw:g} kbps)" for bw, k in sorted(table.items()))
    raise ValueError(
        f"num_codebooks={num_codebooks} is not available from this EnCodec model; it offers {options}"
    )


def _mono_output(audio: torch.Tensor) -> torch.Tensor:
    """[B, C, N] model output -> [B, 1, N]."""
    return audio.mean(dim=1, keepdim=True) if audio.shape[1] > 1 else audio


# --------------------------------------------------------------------------------------------
# transformers EncodecModel
# --------------------------------------------------------------------------------------------


class HFEncodecCodec(nn.Module):
    """``transformers.EncodecModel`` as a :class:`~musicdistill.codec.interface.Codec`.

    Codes [B, K, T] at ``config.frame_rate``; decode gives [B, 1, T * hop_length].
    """

    def __init__(self, model: nn.Module, num_codebooks: int | None = None) -> None:
        super().__init__()
        cfg = model.config
        if cfg.chunk_length_s is not None:
            log.info("running EnCodec on whole clips: chunk_length_s=%s disabled", cfg.chunk_length_s)
            cfg.chunk_length_s = None
        self.model = model.eval()
        self.bandwidth = bandwidth_for(
            num_codebooks, list(cfg.target_bandwidths), cfg.frame_rate, cfg.codebook_size
        )
        self._num_codebooks = quantizers_for_bandwidth(self.bandwidth, cfg.frame_rate, cfg.codebook_size)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.config.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def cardinality(self) -> int:
        return int(self.model.config.codebook_size)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wav [B, 1, N] -> codes [B, K, T] int64."""
        weight = next(self.model.parameters())
        wav = prepare_wav(wav, sample_rate, self.sample_rate).to(weight.device, weight.dtype)
        wav = wav.expand(-1, self.model.config.audio_channels, -1)
        out = self.model.encode(wav, bandwidth=self.bandwidth, return_dict=True)
        return out.audio_codes[0].long()  # [1 chunk, B, K, T] -> [B, K, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> wav [B, 1, T * hop_length]."""
        codes = validate_codes(codes, self.num_codebooks, self.cardinality).to(self._device)
        audio = self.model.decode(codes[None], [None], return_dict=True).audio_values
        return _mono_output(audio.float())

    def save(self, directory: str | Path) -> Path:
        """Write the model (``encodec/``, safetensors) and ``codec.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / HF_MODEL_DIR)
        write_codec_json(
            directory,
            {
                "kind": HF_KIND,
                "model_dir": HF_MODEL_DIR,
                "bandwidth": self.bandwidth,
                "num_codebooks": self.num_codebooks,
                "cardinality": self.cardinality,
                "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> HFEncodecCodec:
        directory = Path(directory)
        meta = read_codec_json(directory, expected_kind=HF_KIND)
        model_dir = directory / str(meta.get("model_dir", HF_MODEL_DIR))
        codec = cls(_load_hf_model(str(model_dir), local_only=True), num_codebooks=meta.get("num_codebooks"))
        _check_meta(directory / CODEC_JSON, meta, codec)
        return codec

    @classmethod
    def from_pretrained(cls, source: str, num_codebooks: int | None = None) -> HFEncodecCodec:
        """From a local ``save_pretrained`` directory, or a hub id such as ``facebook/encodec_32khz`` when online."""
        return cls(_load_hf_model(source, local_only=False), num_codebooks=num_codebooks)


def _load_hf_model(source: str, local_only: bool) -> nn.Module:
    from transformers import EncodecModel

    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path / 'config.json'} is missing: {path} is not a transformers EnCodec "
                "directory (write one with EncodecModel.save_pretrained)"
            )
    elif local_only or path.is_absolute() or source.startswith("."):
        raise FileNotFoundError(f"EnCodec model directory {path} does not exist")
    try:
        return EncodecModel.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot load EnCodec from '{source}': {exc}. Offline, pass a local directory: download it where the "
            f"hub is reachable (huggingface-cli download {source} --local-dir DIR) and set codec.pretrained=DIR"
        ) from None


def _check_meta(json_path: Path, meta: dict[str, Any], codec: Any) -> None:
    """The loaded model must agree with what codec.json recorded."""
    for key in ("num_codebooks", "cardinality", "sample_rate"):
        if key in meta and meta[key] != getattr(codec, key):
            raise ValueError(
                f"{json_path} says {key}={meta[key]} but the model files give "
                f"{getattr(codec, key)}; the directory mixes files from different codecs"
            )


# --------------------------------------------------------------------------------------------
# the encodec package (optional 'audio' extra)
# --------------------------------------------------------------------------------------------


def import_encodec_package() -> Any:
    """Import the ``encodec`` package, or raise ImportError saying what is missing and how to fix it."""
    try:
        import encodec
    except (ImportError, OSError) as exc:
        raise ImportError(
            f"codec.kind=encodec needs the 'encodec' package and a working torchaudio, which are "
            f"not usable here ({type(exc).__name__}: {exc}); {AUDIO_EXTRA_HINT}"
        ) from exc
    return encodec


class EncodecPackageCodec(nn.Module):
    """The ``encodec`` package's EnCodec (``encodec_24khz`` or ``encodec_48khz``) as a Codec.

    Weights are read from a codec directory's ``model.safetensors`` (written by :meth:`save`), or
    downloaded by the package itself when ``from_pretrained`` is given a model name and the network is up.
    """

    def __init__(self, model: nn.Module, name: str, num_codebooks: int | None = None) -> None:
        super().__init__()
        if name not in PACKAGE_MODELS:
            raise ValueError(f"unknown encodec package model {name!r}; choose one of {list(PACKAGE_MODELS)}")
        self.name = name
        self.model = model.eval()
        self.model.segment = None  # whole clips, no overlap-add
        bins = int(model.quantizer.bins)
        self.bandwidth = bandwidth_for(num_codebooks, list(model.target_bandwidths), model.frame_rate, bins)
        self.model.set_target_bandwidth(self.bandwidth)
        self._num_codebooks = quantizers_for_bandwidth(self.bandwidth, model.frame_rate, bins)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return self._num_codebooks

    @property
    def cardinality(self) -> int:
        return int(self.model.quantizer.bins)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """wav [B, 1, N] -> codes [B, K, T] int64."""
        weight = next(self.model.parameters())
        wav = prepare_wav(wav, sample_rate, self.sample_rate).to(weight.device, weight.dtype)
        frames = self.model.encode(wav.expand(-1, self.model.channels, -1))
        return frames[0][0].long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> wav [B, 1, N']."""
        codes = validate_codes(codes, self.num_codebooks, self.cardinality).to(self._device)
        return _mono_output(self.model.decode([(codes, None)]).float())

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (the state dict) and ``codec.json`` into ``directory``."""
        from safetensors.torch import save_model

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = atomic_write_with(directory / PACKAGE_WEIGHTS, lambda tmp: save_model(self.model, str(tmp)))
        write_codec_json(
            directory,
            {
                "kind": PACKAGE_KIND,
                "model": self.name,
                "bandwidth": self.bandwidth,
                "num_codebooks": self.num_codebooks,
                "cardinality": self.cardinality,
                "sample_rate": self.sample_rate,
                "weights": {"file": PACKAGE_WEIGHTS, "sha256": file_sha256(path)},
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EncodecPackageCodec:
        from safetensors.torch import load_model

        directory = Path(directory)
        meta = read_codec_json(directory, expected_kind=PACKAGE_KIND)
        name = meta.get("model")
        if name not in PACKAGE_MODELS:
            raise ValueError(
                f"{directory / CODEC_JSON}: 'model' must be one of {list(PACKAGE_MODELS)}, got {name!r}"
            )
        weights = directory / PACKAGE_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"codec file {weights} is missing; copy it together with {CODEC_JSON}")
        expected = (meta.get("weights") or {}).get("sha256")
        if expected and file_sha256(weights) != expected:
            raise ValueError(
                f"{weights} does not match {directory / CODEC_JSON} (sha256 differs); copy both files "
                "from the same codec directory"
            )
        encodec = import_encodec_package()
        model = getattr(encodec.EncodecModel, PACKAGE_MODELS[name])(pretrained=False)
        load_model(model, str(weights))
        codec = cls(model, name, num_codebooks=meta.get("num_codebooks"))
        _check_meta(directory / CODEC_JSON, meta, codec)
        return codec

    @classmethod
    def from_pretrained(cls, source: str, num_codebooks: int | None = None) -> EncodecPackageCodec:
        """``source``: a codec directory written by :meth:`save`, or ``encodec_24khz`` / ``encodec_48khz``
        (pretrained weights downloaded by the package; needs the network once)."""
        if Path(source).is_dir():
            codec = cls.load(source)
            if num_codebooks is not None and num_codebooks != codec.num_codebooks:
                codec = cls(codec.model, codec.name, num_codebooks)
            return codec
        if source not in PACKAGE_MODELS:
            raise FileNotFoundError(
                f"codec.pretrained={source!r} is neither a codec directory nor one of {list(PACKAGE_MODELS)}"
            )
        encodec = import_encodec_package()
        try:
            model = getattr(encodec.EncodecModel, PACKAGE_MODELS[source])(pretrained=True)
        except OSError as exc:  # URLError is an OSError
            raise FileNotFoundError(
                f"the encodec package could not download '{source}' ({exc}); run once where "
                "the network is reachable, save the codec with 'musicdistill codec fit', and "
                "point codec.pretrained at that directory"
            ) from None
        return cls(model, source, num_codebooks)
