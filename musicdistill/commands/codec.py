"""``musicdistill codec``: fit the audio tokenizer on the training split, and round-trip a file through it."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from musicdistill.codec.factory import fit_codec, load_codec
from musicdistill.commands.common import ConfigReads, add_config_args, config_from_args
from musicdistill.config import save_config
from musicdistill.data.loading import load_data
from musicdistill.storage.atomic import atomic_write_with

log = logging.getLogger(__name__)

RESOLVED_CONFIG = "config.yaml"

#: model.delays: validated against codec.num_codebooks (one delay per codebook)
FIT_READS = ConfigReads("musicdistill codec fit", ("data", "codec", "model.delays"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "codec",
        help="fit the audio tokenizer, or round-trip a file through it",
        description="Audio tokenizers: the offline mel RVQ codec (fitted here) or EnCodec.",
    )
    g = p.add_subparsers(dest="codec_command", metavar="ACTION", required=True)

    fit = g.add_parser(
        "fit",
        help="fit the codec on a manifest's train split and write a codec directory",
        description=(
            "Fit the codec described by the config's codec section on the train split of MANIFEST "
            "(clips loaded at data.sample_rate, cropped/padded to data.duration) and write OUT: "
            "codec.json + tensors (safetensors) + the resolved config.yaml. EnCodec kinds fit nothing: "
            "they copy codec.pretrained into OUT."
        ),
    )
    fit.add_argument(
        "--data",
        metavar="MANIFEST",
        required=True,
        help="manifest (JSONL/CSV) or audio folder; only its train split is read",
    )
    fit.add_argument("--out", metavar="DIR", required=True, help="codec directory to write")
    add_config_args(fit, FIT_READS)
    fit.set_defaults(func=_fit)

    rt = g.add_parser(
        "roundtrip",
        help="encode and decode one audio file; print frames, tokens/s and speed",
        description="Encode an audio file (any rate, mono or stereo: mixed down) and decode it back to a mono WAV "
        "at the codec's sample rate.",
    )
    rt.add_argument(
        "--codec", metavar="DIR", required=True, help="codec directory (from 'musicdistill codec fit')"
    )
    rt.add_argument("--in", dest="input", metavar="AUDIO", required=True, help="input audio file")
    rt.add_argument("--out", metavar="WAV", required=True, help="output WAV file")
    rt.set_defaults(func=_roundtrip)


def _fit(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    audio = None
    if cfg.codec.kind == "melrvq":
        entries, clips = load_data(cfg.data, args.data, split="train")
        audio = torch.from_numpy(clips)
        log.info("fitting on %d train clips from %s", len(entries), args.data)
    start = time.perf_counter()
    codec = fit_codec(cfg.codec, audio, cfg.data.sample_rate)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    codec.save(out)
    save_config(cfg, out / RESOLVED_CONFIG)
    print(
        f"codec {cfg.codec.kind}: K={codec.num_codebooks} codebooks x V={codec.cardinality}, "
        f"{codec.frame_rate:g} frames/s at {codec.sample_rate} Hz; fitted in {seconds:.1f} s; wrote {out}"
    )
    return 0


def _roundtrip(args: argparse.Namespace) -> int:
    codec = load_codec(args.codec)
    path = Path(args.input)
    if not path.is_file():
        raise FileNotFoundError(f"input audio {path} does not exist")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from None
    if samples.shape[0] == 0:
        raise ValueError(f"{path} holds no samples")
    wav = torch.from_numpy(samples.mean(axis=1))[None, None]  # [1, 1, N]
    seconds = samples.shape[0] / rate
    start = time.perf_counter()
    codes = codec.encode(wav, rate)
    encoded = time.perf_counter()
    out = codec.decode(codes)
    done = time.perf_counter()
    audio = out[0, 0].clamp(-1, 1).cpu().numpy().astype(np.float32)
    atomic_write_with(
        Path(args.out),
        lambda tmp: sf.write(str(tmp), audio, codec.sample_rate, format="WAV", subtype="PCM_16"),
    )
    frames = codes.shape[-1]
    elapsed = done - start
    print(
        f"{path}: {seconds:.2f} s at {rate} Hz, {samples.shape[1]} channel(s) -> {frames} frames x "
        f"{codec.num_codebooks} codebooks ({codec.frame_rate * codec.num_codebooks:g} tokens/s)"
    )
    print(
        f"encode {encoded - start:.3f} s, decode {done - encoded:.3f} s: real-time factor {elapsed / seconds:.3f} "
        f"({seconds / max(elapsed, 1e-9):.1f}x faster than real time)"
    )
    print(f"wrote {args.out}: {audio.shape[0] / codec.sample_rate:.2f} s at {codec.sample_rate} Hz, mono")
    return 0
