"""Generation speed: our KV-cached sampler against transformers' MusicGen ``generate``, same shape.

Both models have random weights in one shape: the built-in ModelConfig (4 layers, width 256, 4 heads,
FF 1024) or the model section of ``--config`` (configs/default.yaml: width 128), with 4 codebooks of
256 entries + 1 special token and delays [0, 1, 2, 3]; they sample ``--frames`` audio
frames with top-k 250 at temperature 1, with and without CFG (scale 3), at each batch size.

- ours: ``musicdistill.generation.sampling.generate`` with the packaged MiniLM text encoder (its prompt cache
  is warm, so text encoding is not timed);
- baseline: ``MusicgenForCausalLM.generate`` fed the same MiniLM states through a fixed 384 -> D
  projection (what MusicGen's ``enc_to_dec_proj`` does), doubled with zero states for CFG as
  ``MusicgenForConditionalGeneration`` does; text encoding and audio decoding are not timed.

Frames per second = batch × frames / wall seconds, best of ``--repeats`` runs after one warm-up; the
process CPU time is recorded too (on a shared machine, with one thread, it is the steadier figure).
Usage: python bench/generate.py [--config configs/default.yaml] [--frames 100] [--batches 1,8,32] [--threads N]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from musicdistill.config import ModelConfig, load_config  # noqa: E402
from musicdistill.generation.sampling import generate  # noqa: E402
from musicdistill.model.generator import build_generator  # noqa: E402
from musicdistill.model.text import load_text_encoder  # noqa: E402

K, V, FRAME_RATE, TOP_K, CFG = 4, 256, 25.0, 250, 3.0
PROMPT = "a calm flute melody in D minor with soft drums"


def build_baseline(cfg: ModelConfig):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    dec = MusicgenDecoderConfig(
        vocab_size=V,
        hidden_size=cfg.dim,
        num_hidden_layers=cfg.layers,
        ffn_dim=cfg.ff_mult * cfg.dim,
        num_attention_heads=cfg.heads,
        num_codebooks=K,
        pad_token_id=V,
        bos_token_id=V,
        max_position_embeddings=cfg.max_frames,
    )
    dec.decoder_start_token_id = V
    return MusicgenForCausalLM(dec).eval()


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn``, each the best of ``repeats`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def time_ours(model, encoder, batch: int, frames: int, cfg_scale: float, repeats: int) -> tuple[float, float]:
    def run():
        out = generate(
            model,
            [PROMPT] * batch,
            num_samples=1,
            duration=frames / FRAME_RATE,
            top_k=TOP_K,
            cfg_scale=cfg_scale,
            seed=0,
            text_encoder=encoder,
            frame_rate=FRAME_RATE,
        )
        if out.codes.shape != (batch, K, frames):
            raise RuntimeError(f"ours returned codes of shape {tuple(out.codes.shape)}")

    return best_time(run, repeats)


def time_baseline(
    model, states: torch.Tensor, batch: int, frames: int, cfg_scale: float, repeats: int
) -> tuple[float, float]:
    states = states.expand(batch, -1, -1)
    if cfg_scale > 1:
        states = torch.cat([states, torch.zeros_like(states)])
    ids = torch.full((batch * K, 1), V)
    steps = frames + K - 1
    kw = dict(
        encoder_hidden_states=states,
        do_sample=True,
        top_k=TOP_K,
        guidance_scale=cfg_scale,
        num_return_sequences=1,
        max_new_tokens=steps,
        min_new_tokens=steps,
    )

    def run():
        with torch.inference_mode():
            out = model.generate(ids, **kw)
        if out.shape != (batch, K, frames):
            raise RuntimeError(f"MusicGen returned codes of shape {tuple(out.shape)}")

    return best_time(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100, help="audio frames per sample (100 = 4 s at 25 Hz)")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--skip-baseline", action="store_true", help="time only our sampler")
    ap.add_argument(
        "--config",
        default="",
        help="take the model shape from this config's model section "
        "(e.g. configs/default.yaml); default: the built-in ModelConfig (width 256)",
    )
    ap.add_argument("--out", default="bench/generate.json", help="where the JSON results go")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    torch.manual_seed(0)
    cfg = load_config(args.config).model if args.config else ModelConfig()
    encoder = load_text_encoder("minilm")
    ours = build_generator(cfg, K, V, encoder.dim).eval()
    baseline = None if args.skip_baseline else build_baseline(cfg)
    projection = torch.randn(encoder.dim, cfg.dim) / encoder.dim**0.5
    states = encoder.encode([PROMPT]).states @ projection  # [1, S, D]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        for cfg_scale in (1.0, CFG):
            row = {"batch": batch, "cfg_scale": cfg_scale, "frames": args.frames}
            row["ours_s"], row["ours_cpu_s"] = time_ours(
                ours, encoder, batch, args.frames, cfg_scale, args.repeats
            )
            row["ours_fps"] = batch * args.frames / row["ours_s"]
            if baseline is not None:
                row["baseline_s"], row["baseline_cpu_s"] = time_baseline(
                    baseline, states, batch, args.frames, cfg_scale, args.repeats
                )
                row["baseline_fps"] = batch * args.frames / row["baseline_s"]
                row["speedup"] = row["ours_fps"] / row["baseline_fps"]
                row["cpu_speedup"] = row["baseline_cpu_s"] / row["ours_cpu_s"]
            rows.append(row)
            print(
                json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shape": {"dim": cfg.dim, "layers": cfg.layers, "heads": cfg.heads, "ff_mult": cfg.ff_mult},
        "ours_params": ours.num_parameters(),
        "baseline_params": None if baseline is None else sum(p.numel() for p in baseline.parameters()),
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(
        f"\n{'batch':>5} {'cfg':>4} {'ours f/s':>9} {'MusicGen f/s':>13} {'speedup':>8} {'CPU-time speedup':>17}"
    )
    for r in rows:
        base = (
            f"{r['baseline_fps']:13.1f} {r['speedup']:7.2f}x {r['cpu_speedup']:16.2f}x"
            if "baseline_fps" in r
            else f"{'-':>13} {'-':>8} {'-':>17}"
        )
        print(f"{r['batch']:5d} {r['cfg_scale']:4g} {r['ours_fps']:9.1f} {base}")
    print(f"threads={meta['threads']} load average={meta['load_average']} -> {args.out}")


if __name__ == "__main__":
    main()
