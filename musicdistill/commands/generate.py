"""``musicdistill generate``: sample audio from a generator checkpoint, one WAV + JSON sidecar per sample."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from musicdistill.codec.factory import load_codec
from musicdistill.generation.sampling import generate
from musicdistill.model.loading import load_generator
from musicdistill.runtime import resolve_device
from musicdistill.storage.atomic import atomic_write_text, atomic_write_with
from musicdistill.storage.checkpoint import MODEL_FILE, file_sha256

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate audio for text prompts from a checkpoint (with or without CFG)",
        description=(
            "Sample NUM_SAMPLES token sequences per prompt from a generator checkpoint (KV-cached, optional "
            "classifier-free guidance), decode them with the checkpoint's codec and write OUT/PPP_SS.wav with a "
            "JSON sidecar each (prompt, seed, settings, checkpoint path and hash), plus OUT/codes.safetensors "
            "with every sample's tokens and log-probabilities. Unset options take the checkpoint's "
            "config 'generate' section."
        ),
        epilog='example: musicdistill generate --ckpt runs/default/base --prompt "a calm flute melody" '
        "--num-samples 4 --cfg 3 --out samples/",
    )
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="checkpoint folder (model.safetensors, config.yaml)"
    )
    p.add_argument(
        "--prompt",
        action="append",
        required=True,
        metavar="TEXT",
        help="a text prompt; repeat the option for several prompts",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the WAV files and sidecars")
    p.add_argument("--num-samples", type=int, metavar="G", help="samples per prompt (>= 1)")
    p.add_argument(
        "--cfg",
        type=float,
        metavar="SCALE",
        help="guidance scale in [0, 50]; 1 = no CFG (one row per sample)",
    )
    p.add_argument("--seed", type=int, help="sampling seed (>= 0)")
    p.add_argument("--temperature", type=float, help="softmax temperature in [0, 10]; 0 = greedy")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 = all")
    p.add_argument(
        "--top-p", type=float, help="nucleus mass in [0, 1]; 0 = off (takes precedence over --top-k)"
    )
    p.add_argument("--duration", type=float, metavar="SECONDS", help="seconds of audio per sample")
    p.add_argument(
        "--w",
        type=float,
        metavar="W",
        help="a conditioned student's diversity weight in [0, 1] (0 = quality end, the default; 1 = diversity end)",
    )
    p.add_argument("--batch-size", type=int, help="sequences decoded together")
    p.add_argument("--codec", metavar="DIR", help="codec folder (default: the one the checkpoint records)")
    p.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda, cuda:N"
    )
    p.set_defaults(func=_run)


def _pick(value, default):
    return default if value is None else value


def _run(args: argparse.Namespace) -> int:
    import soundfile as sf
    from safetensors.torch import save_file

    ckpt = Path(args.ckpt)
    model, encoder, codec, cfg = load_generator(
        ckpt, resolve_device(args.device), with_codec=args.codec is None
    )
    if args.codec is not None:
        codec = load_codec(args.codec)
    if codec is None:
        raise ValueError(
            f"checkpoint {ckpt} records no codec_dir; pass --codec DIR to decode the tokens to audio"
        )
    if args.w is not None and getattr(model, "dial", None) is None:
        raise ValueError(
            f"--w {args.w}: {ckpt} is not a conditioned student (its model has no diversity dial); leave --w out"
        )
    g = cfg.generate
    result = generate(
        model,
        args.prompt,
        num_samples=_pick(args.num_samples, g.num_samples),
        duration=_pick(args.duration, g.duration),
        temperature=_pick(args.temperature, g.temperature),
        top_k=_pick(args.top_k, g.top_k),
        top_p=_pick(args.top_p, g.top_p),
        cfg_scale=_pick(args.cfg, g.cfg_scale),
        seed=_pick(args.seed, g.seed),
        codec=codec,
        text_encoder=encoder,
        batch_size=_pick(args.batch_size, g.batch_size),
        progress=True,
        w=args.w,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_info = {"path": str(ckpt.resolve()), "model_sha256": file_sha256(ckpt / MODEL_FILE)}
    num_samples = result.settings["num_samples"]
    audio = result.audio.clamp(-1.0, 1.0).numpy()
    for row in range(result.codes.shape[0]):
        i, j = divmod(row, num_samples)
        stem = out / f"{i:03d}_{j:02d}"
        atomic_write_with(
            stem.with_suffix(".wav"),
            lambda tmp, a=audio[row, 0]: sf.write(tmp, a, codec.sample_rate, format="WAV", subtype="PCM_16"),
        )
        sidecar = {
            "prompt": result.prompts[i],
            "prompt_index": i,
            "sample_index": j,
            "seed": result.settings["seed"],
            "settings": result.settings,
            "checkpoint": ckpt_info,
            "sample_rate": codec.sample_rate,
            "mean_token_logprob": float(result.logprobs[row].mean()),
        }
        atomic_write_text(stem.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True))
    tensors = {"codes": result.codes.cpu().contiguous(), "logprobs": result.logprobs.cpu().contiguous()}
    atomic_write_with(out / "codes.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    print(f"wrote {result.codes.shape[0]} samples ({len(result.prompts)} prompts x {num_samples}) to {out}")
    return 0
