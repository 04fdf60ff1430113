"""Validate the diversity measures: does each one reward different takes of a prompt, and how noisy is it?

The measures (stable names, per prompt; see ``musicdistill/judges/judging.py``):
``attribute_diversity`` (oracle readings over the attributes a prompt leaves open),
``diversity_second`` (the second embedder: 2-D conv + VICReg, trained on the other half of the train
split), ``diversity_independent`` (the oracle's hand-made features) and ``diversity_reward`` (the
reward embedder). The primary independent measure, fixed before any run: attribute diversity where
an oracle exists, else the second embedder.

Subcommands:

- ``judges``: train the reward embedder, the second embedder (disjoint halves of the train split)
  and the oracle on a manifest's log-mels and the codec's reconstructions, into ``OUT/embedder``,
  ``OUT/second_embedder``, ``OUT/oracle`` (the config's ``embed``, ``second_embed``, ``oracle``);
- ``real``: on REAL clips of the built-in data, rendered fresh (never in a training set) and read
  as generations are (encoded by the codec, judged on the decoded log-mel): per prompt, a group of G
  clips that share every attribute and a group whose unstated attributes vary
  (``musicdistill/judges/reference_groups.py``). Every measure must score ``vary`` above ``same``:
  the paired difference per prompt, with its 95 % bootstrap interval over prompts, must lie above 0.
  Groups of uniformly random codes (noise) are scored too, for reference;
- ``generate``: a pretrained base on held-out prompts of a token set: each measure's response to the
  temperature (no CFG) and to the CFG scale (temperature 1), paired against the base at T = 1 without
  CFG, and its run-to-run noise (the same system with two sampling seeds, paired per prompt).

Usage::

    python bench/validate_measures.py judges --data MANIFEST --codec CODEC --out JUDGES [KEY=VALUE ...]
    python bench/validate_measures.py real --codec CODEC --judges JUDGES [--prompts 96 --group 4]
    python bench/validate_measures.py generate --base BASE --tokens TOKENS --judges JUDGES [--codec CODEC]
        [--prompts 96 --group 4 --seeds 0 1 --temperatures 0.7 0.85 1.0 --cfg-scales 1.5 2 3 4]

Each writes a JSON file (``--out``) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from musicdistill.codec.factory import load_codec  # noqa: E402
from musicdistill.config import load_config  # noqa: E402
from musicdistill.data.tokens import encode_clips, load_token_set  # noqa: E402
from musicdistill.evaluation.metrics import bootstrap_ci  # noqa: E402
from musicdistill.evaluation.setup import held_out_prompts  # noqa: E402
from musicdistill.generation.sampling import generate  # noqa: E402
from musicdistill.judges.embedder import fit_and_save_embedder  # noqa: E402
from musicdistill.judges.judging import (  # noqa: E402
    DIVERSITY_MEASURES,
    CodedClips,
    Judges,
    build_judges,
    diversity_measures,
)
from musicdistill.judges.log_mel import load_labelled_mels  # noqa: E402
from musicdistill.judges.oracle import fit_and_save_oracle  # noqa: E402
from musicdistill.judges.reference_groups import reference_groups  # noqa: E402
from musicdistill.judges.second_embedder import fit_and_save_second_embedder  # noqa: E402
from musicdistill.model.loading import load_generator  # noqa: E402

RESAMPLES = 2000


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "torch": torch.__version__,
    }


def estimate(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean and 95 % bootstrap interval over prompts (NaN prompts left out)."""
    e = bootstrap_ci(values, num_resamples=RESAMPLES, seed=seed)
    return {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``b - a`` per prompt: mean, 95 % interval, the per-prompt SD of the difference and dz = mean / SD."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    out = estimate(diff, seed)
    finite = diff[np.isfinite(diff)]
    sd = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    out.update(sd=sd, dz=out["mean"] / sd if sd > 0 else None)
    return out


def dz_text(diff: dict[str, Any]) -> str:
    return "-" if diff["dz"] is None else f"{diff['dz']:.2f}"


def rounded(values: np.ndarray) -> list[float | None]:
    """Per-prompt values for the JSON file: 5 decimals, NaN as null."""
    return [round(float(v), 5) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def load_judges(folder: Path) -> Judges:
    """The judges in ``folder`` (any of embedder/, second_embedder/, oracle/; a run folder works)."""
    found = {
        n: folder / n if (folder / n).is_dir() else None for n in ("embedder", "second_embedder", "oracle")
    }
    missing = [n for n, p in found.items() if p is None]
    if missing:
        print(f"note: {folder} has no {missing}; those measures are left out", file=sys.stderr)
    return build_judges(
        torch.device("cpu"),
        embedder_dir=found["embedder"],
        oracle_dir=found["oracle"],
        second_dir=found["second_embedder"],
    )


def cell(e: dict[str, float], digits: int = 3) -> str:
    f = f"{{:+.{digits}f}}" if "sd" in e else f"{{:.{digits}f}}"
    return f"{f.format(e['mean'])} [{f.format(e['low'])}, {f.format(e['high'])}]"


# --------------------------------------------------------------------------------------------
# judges
# --------------------------------------------------------------------------------------------


def cmd_judges(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    t0 = time.perf_counter()
    train, held_out = load_labelled_mels(cfg, args.data, load_codec(args.codec))
    report: dict[str, Any] = {"load_seconds": round(time.perf_counter() - t0, 1)}
    for name, fit in (
        ("embedder", fit_and_save_embedder),
        ("second_embedder", fit_and_save_second_embedder),
        ("oracle", fit_and_save_oracle),
    ):
        wall, cpu = time.perf_counter(), time.process_time()
        metrics = fit(cfg, train, held_out, out / name)
        report[name] = {
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(time.process_time() - cpu, 1),
            "metrics": metrics,
        }
        print(f"{name}: {report[name]['wall_s']} s wall, {report[name]['cpu_s']} s CPU")
    return report


# --------------------------------------------------------------------------------------------
# real clips
# --------------------------------------------------------------------------------------------


def judge_codes(
    codec, codes: torch.Tensor, attributes: list, group: int, judges: Judges
) -> dict[str, np.ndarray]:
    return diversity_measures(CodedClips(codec, codes), attributes, group, judges)


def cmd_real(args: argparse.Namespace) -> dict[str, Any]:
    codec = load_codec(args.codec)
    judges = load_judges(Path(args.judges))
    t0 = time.perf_counter()
    groups = reference_groups(args.prompts, args.group, args.seed, codec.sample_rate, args.duration)
    render_s = time.perf_counter() - t0
    values: dict[str, dict[str, np.ndarray]] = {}
    codes_of: dict[str, torch.Tensor] = {}
    for kind, audio in groups.audio.items():
        codes_of[kind] = encode_clips(
            codec, torch.from_numpy(audio.reshape(-1, audio.shape[-1])), codec.sample_rate
        )
        values[kind] = judge_codes(codec, codes_of[kind], groups.attributes, args.group, judges)
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randint(0, codec.cardinality, codes_of["same"].shape, generator=gen)
    values["noise"] = judge_codes(codec, noise, groups.attributes, args.group, judges)
    rows = {}
    for name in DIVERSITY_MEASURES:
        if name not in values["same"]:
            continue
        diff = paired(values["same"][name], values["vary"][name], args.seed)
        rows[name] = {
            "same": estimate(values["same"][name], args.seed),
            "vary": estimate(values["vary"][name], args.seed),
            "noise": estimate(values["noise"][name], args.seed),
            "vary_minus_same": diff,
            "passes": bool(diff["low"] > 0),
        }
    report = {
        "prompts": args.prompts,
        "group": args.group,
        "seed": args.seed,
        "duration": args.duration,
        "render_seconds": round(render_s, 1),
        "judges": args.judges,
        "codec": args.codec,
        "measures": rows,
        "per_prompt": {k: {n: rounded(v) for n, v in d.items()} for k, d in values.items()},
    }
    print(f"\nreal clips: {args.prompts} prompts x {args.group} clips per group\n")
    print(
        "| measure | same attributes | unstated varied | vary - same [95 % CI] | dz | passes | random codes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(
            f"| {name} | {cell(r['same'])} | {cell(r['vary'])} | {cell(r['vary_minus_same'])} | "
            f"{dz_text(r['vary_minus_same'])} | {'yes' if r['passes'] else 'NO'} | {r['noise']['mean']:.3f} |"
        )
    return report


# --------------------------------------------------------------------------------------------
# generations of a base
# --------------------------------------------------------------------------------------------


def run_setting(
    loaded,
    codec,
    prompts,
    group: int,
    duration: float,
    temperature: float,
    cfg_scale: float,
    seed: int,
    judges: Judges,
    batch_size: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = generate(
        loaded.model,
        prompts.prompts,
        group,
        duration,
        temperature,
        0,
        0.0,
        cfg_scale,
        seed,
        None,
        text_encoder=loaded.text_encoder,
        frame_rate=float(codec.frame_rate),
        batch_size=batch_size,
    )
    gen_s = time.perf_counter() - t0
    clips = CodedClips(codec, out.codes)
    values = diversity_measures(clips, list(prompts.attributes), group, judges)
    if judges.adherence is not None:
        rows = [a for a in prompts.attributes for _ in range(group)]
        adherence = np.asarray(judges.adherence(clips, rows), dtype=np.float64).reshape(-1, group)
        with np.errstate(invalid="ignore"):
            values["attribute_adherence"] = np.nanmean(adherence, axis=1)
    return {
        "values": values,
        "generate_seconds": round(gen_s, 1),
        "judge_seconds": round(time.perf_counter() - t0 - gen_s, 1),
    }


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    judges = load_judges(Path(args.judges))
    loaded = load_generator(args.base, device="cpu", with_codec=args.codec is None)
    codec = load_codec(args.codec) if args.codec else loaded.codec
    if codec is None:
        raise FileNotFoundError(f"{args.base} records no codec; pass --codec")
    tokens = load_token_set(args.tokens).select(args.split)
    prompts = held_out_prompts(tokens, args.split, args.prompts, args.seeds[0])
    duration = tokens.num_frames / tokens.frame_rate
    settings = [(t, 1.0) for t in args.temperatures] + [(1.0, g) for g in args.cfg_scales if g != 1.0]
    runs: dict[str, dict[str, Any]] = {}
    first = args.seeds[0]
    for temperature, gamma in settings:
        seeds = args.seeds if (temperature, gamma) in {(1.0, 1.0), (1.0, args.noise_cfg)} else [first]
        for seed in seeds:
            key = f"T={temperature:g} CFG={gamma:g} seed={seed}"
            runs[key] = run_setting(
                loaded,
                codec,
                prompts,
                args.group,
                duration,
                temperature,
                gamma,
                seed,
                judges,
                args.batch_size,
            )
            print(
                f"{key}: generated in {runs[key]['generate_seconds']} s, judged in {runs[key]['judge_seconds']} s",
                flush=True,
            )
    names = [
        n for n in ("attribute_adherence", *DIVERSITY_MEASURES) if n in next(iter(runs.values()))["values"]
    ]
    base_key = f"T=1 CFG=1 seed={first}"
    summary = {
        key: {n: estimate(r["values"][n]) for n in names}
        | {f"{n} - base": paired(runs[base_key]["values"][n], r["values"][n]) for n in names}
        for key, r in runs.items()
    }
    noise = {}
    for gamma in sorted({1.0, args.noise_cfg}):
        keys = [f"T=1 CFG={gamma:g} seed={s}" for s in args.seeds]
        if len(args.seeds) >= 2 and all(k in runs for k in keys):
            noise[f"CFG={gamma:g}"] = {
                n: paired(runs[keys[0]]["values"][n], runs[keys[1]]["values"][n]) for n in names
            }
    report = {
        "base": args.base,
        "tokens": args.tokens,
        "judges": args.judges,
        "prompts": len(prompts.prompts),
        "group": args.group,
        "seeds": args.seeds,
        "summary": summary,
        "noise": noise,
        "timings": {
            k: {"generate_s": r["generate_seconds"], "judge_s": r["judge_seconds"]} for k, r in runs.items()
        },
        "per_prompt": {k: {n: rounded(v) for n, v in r["values"].items()} for k, r in runs.items()},
    }
    print(f"\nbase {args.base}: {len(prompts.prompts)} held-out prompts x {args.group} samples\n")
    print("| system | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 1) + "|")
    for key in summary:
        print(f"| {key} | " + " | ".join(cell(summary[key][n]) for n in names) + " |")
    print("\npaired against the base at T = 1 without CFG (same seed):\n")
    print("| system | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 1) + "|")
    for key in summary:
        if key != base_key and key.endswith(f"seed={first}"):
            print(f"| {key} | " + " | ".join(cell(summary[key][f"{n} - base"]) for n in names) + " |")
    print("\nrun-to-run noise: seed B - seed A, same system and prompts (mean [95 % CI]; per-prompt SD):\n")
    print("| system | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 1) + "|")
    for key, row in noise.items():
        print(f"| {key} | " + " | ".join(f"{cell(row[n])}; {row[n]['sd']:.3f}" for n in names) + " |")
    return report


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core box)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    j = sub.add_parser("judges", help="train the reward embedder, second embedder and oracle")
    j.add_argument("--data", required=True)
    j.add_argument("--codec", required=True)
    j.add_argument("--out", required=True)
    j.add_argument("--config", default=None)
    j.add_argument("--report", default=None, help="JSON file for the timings and held-out metrics")
    j.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    r = sub.add_parser("real", help="same-attribute against varied-attribute groups of real clips")
    r.add_argument("--codec", required=True)
    r.add_argument("--judges", required=True)
    r.add_argument("--prompts", type=int, default=96)
    r.add_argument("--group", type=int, default=4)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--duration", type=float, default=4.0)
    r.add_argument("--out", default="bench/validate_measures_real.json")
    g = sub.add_parser("generate", help="response to temperature and CFG, and seed noise, on a base")
    g.add_argument("--base", required=True)
    g.add_argument("--tokens", required=True)
    g.add_argument("--judges", required=True)
    g.add_argument("--codec", default=None, help="codec folder (default: the one the base records)")
    g.add_argument("--split", default="test")
    g.add_argument("--prompts", type=int, default=96)
    g.add_argument("--group", type=int, default=4)
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    g.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.85, 1.0])
    g.add_argument("--cfg-scales", type=float, nargs="+", default=[1.5, 2.0, 3.0, 4.0])
    g.add_argument("--noise-cfg", type=float, default=3.0, help="a CFG scale also run with every seed")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--out", default="bench/validate_measures_generate.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    report = {"cmd_judges": cmd_judges, "cmd_real": cmd_real, "cmd_generate": cmd_generate}[
        f"cmd_{args.command}"
    ](args)
    report.update(command=" ".join(sys.argv), seconds=round(time.perf_counter() - t0, 1), machine=machine())
    out = (
        Path(args.report if args.command == "judges" else args.out)
        if (args.command != "judges" or args.report)
        else None
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
