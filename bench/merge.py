"""Benchmark: LERP and SLERP merges of MusicGen-small-sized decoder state dicts on this machine.

Builds three random state dicts (base, A, B) with the tensor shapes of the transformers MusicGen-small
decoder (24 layers, width 1024, FFN 4096, self- and cross-attention, 4 codebooks × 2048 entries,
~420M parameters) and times ``merge_state_dicts`` at λ = 0.5. Target: under 5 s per merge.

    .venv/bin/python bench/merge.py                      # float32 and float16
    .venv/bin/python bench/merge.py --dtypes bfloat16 --repeats 3
    .venv/bin/python bench/merge.py --threads 1          # robust to other jobs on the cores

On a shared machine, the CPU seconds of a single-threaded run are the figure to trust: they bound
the wall time of the same merge on one idle core.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from musicdistill.merging import merge_state_dicts

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def musicgen_small_shapes(
    layers: int = 24, width: int = 1024, ffn: int = 4096, codebooks: int = 4, cardinality: int = 2048
) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the MusicGen-small token decoder (transformers ``MusicgenForCausalLM``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(codebooks):
        shapes[f"decoder.embed_tokens.{k}.weight"] = (cardinality + 1, width)  # + the pad/delay token
        shapes[f"lm_heads.{k}.weight"] = (cardinality, width)
    for i in range(layers):
        p = f"decoder.layers.{i}"
        for attn in ("self_attn", "encoder_attn"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{p}.{attn}.{proj}.weight"] = (width, width)
        for norm in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
            shapes[f"{p}.{norm}.weight"] = (width,)
            shapes[f"{p}.{norm}.bias"] = (width,)
        shapes[f"{p}.fc1.weight"] = (ffn, width)
        shapes[f"{p}.fc2.weight"] = (width, ffn)
    shapes["decoder.layer_norm.weight"] = (width,)
    shapes["decoder.layer_norm.bias"] = (width,)
    return shapes


def random_state(
    shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.empty(s, dtype=torch.float32).normal_(generator=g).mul_(0.02).to(dtype)
        for k, s in shapes.items()
    }


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "float16"])
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed merges per method and dtype (best is kept)"
    )
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = musicgen_small_shapes(layers=args.layers)
    params = sum(torch.Size(s).numel() for s in shapes.values())
    print(f"{len(shapes)} tensors, {params / 1e6:.1f}M parameters, torch threads {torch.get_num_threads()}")
    print("| dtype | method | best wall s | CPU s of that run | all runs wall s | peak RSS GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.dtypes:
        dtype = DTYPES[name]
        base, a, b = (random_state(shapes, dtype, seed) for seed in (0, 1, 2))
        for method in ("lerp", "slerp"):
            runs = []  # (wall, cpu) seconds; CPU time shows the work when other jobs share the cores
            for _ in range(args.repeats):
                start, cpu = time.perf_counter(), time.process_time()
                merged = merge_state_dicts(a, b, 0.5, method, base=base)
                runs.append((time.perf_counter() - start, time.process_time() - cpu))
                del merged
            best = min(runs)
            print(
                f"| {name} | {method} | {best[0]:.2f} | {best[1]:.2f} | {', '.join(f'{w:.2f}' for w, _ in runs)} "
                f"| {peak_rss_gib():.1f} |",
                flush=True,
            )
        del base, a, b


if __name__ == "__main__":
    main()
