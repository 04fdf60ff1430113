"""Held-out effect of distillation in a main-job run folder, with bootstrap 95 % intervals over prompts.

1. Reverse KL to the CFG teacher (base at ``distill.gamma``), per held-out prompt, of samples drawn
   without CFG from: the base model (the students' starting point), the quality model (beta = 0)
   and the diversity model (beta > 0). Issue #6 asks the beta = 0 run to at least halve it.
2. Paired differences between systems of ``evaluate/per_prompt.csv`` (same prompts, same seeds):
   diversity model minus quality model (pairwise diversity under both embedders), and the quality
   model against the teacher (attribute adherence).

    python bench/distill_effect.py runs/default [--prompts 48] [--samples 4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from musicdistill.config import load_saved_config
from musicdistill.data.tokens import load_token_set
from musicdistill.evaluation.metrics import bootstrap_ci
from musicdistill.evaluation.setup import held_out_prompts
from musicdistill.generation.guidance import guided_forward
from musicdistill.generation.sampling import sample_tokens
from musicdistill.model.delay import teacher_forcing_batch
from musicdistill.model.loading import load_generator
from musicdistill.training.losses import token_divergence


def per_prompt_kl(
    student, teacher, encoder, prompts: list[str], samples: int, frames: int, gamma: float, seed: int
) -> np.ndarray:
    """Mean per-token reverse KL(student ‖ CFG teacher) on the student's own samples, one value per prompt."""
    out = []
    gen = torch.Generator().manual_seed(seed)
    for prompt in prompts:
        cond = encoder.encode([prompt]).repeat_interleave(samples)
        codes, _ = sample_tokens(student, cond, frames, generator=gen)
        inputs, _, mask = teacher_forcing_batch(codes, student.delays, student.special_token)
        with torch.no_grad():
            kl, _ = token_divergence(
                student(inputs, cond), guided_forward(teacher, inputs, cond, gamma), mask
            )
        out.append(kl.item())
    return np.asarray(out)


def estimate(values) -> dict[str, float]:
    e = bootstrap_ci(values, num_resamples=2000, seed=0)
    return {"mean": round(e.mean, 5), "low": round(e.low, 5), "high": round(e.high, 5), "n": e.n}


def paired(rows: list[dict[str, str]], a: str, b: str, metric: str) -> dict[str, float]:
    """Per-prompt ``a - b`` of ``metric`` (same prompt indices), with its interval."""
    by = {(r["system"], r["prompt_index"]): r[metric] for r in rows if r.get(metric) not in (None, "", "nan")}
    diffs = [float(by[(a, i)]) - float(by[(b, i)]) for (s, i) in by if s == a and (b, i) in by]
    return estimate(diffs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="main-job run folder (runs/<name>)")
    parser.add_argument("--prompts", type=int, default=48, help="held-out prompts for the KL")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt for the KL")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    cfg = load_saved_config(args.run / "config.yaml")  # runs from before a key moved load too
    base = load_generator(args.run / "base", with_codec=False)
    tokens = load_token_set(args.run / "tokens").select(cfg.evaluate.split)
    prompts = held_out_prompts(tokens, cfg.evaluate.split, args.prompts, seed=cfg.evaluate.seed + 1).prompts
    frames = tokens.num_frames
    result: dict[str, object] = {
        "run": str(args.run),
        "prompts": len(prompts),
        "samples": args.samples,
        "gamma": cfg.distill.gamma,
        "kl_to_teacher": {},
    }
    values: dict[str, np.ndarray] = {}
    for name in ("base", "quality", "diversity"):
        folder = args.run / name
        if not (folder / "model.safetensors").is_file():
            continue
        student = (
            base
            if name == "base"
            else load_generator(folder, with_codec=False, text_encoder=base.text_encoder)
        )
        kl = per_prompt_kl(
            student.model,
            base.model,
            base.text_encoder,
            prompts,
            args.samples,
            frames,
            cfg.distill.gamma,
            seed=1,
        )
        result["kl_to_teacher"][name] = estimate(kl)
        values[name] = kl
    if "base" in values and "quality" in values:
        result["kl_ratio_quality_over_base"] = estimate(values["quality"] / values["base"])
    per_prompt = args.run / "evaluate" / "per_prompt.csv"
    if per_prompt.is_file():
        with per_prompt.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        names = {r["system"] for r in rows}
        quality = next((n for n in names if n.startswith("quality")), None)
        diversity = next((n for n in names if n.startswith("diversity")), None)
        teacher = f"base CFG {cfg.distill.gamma:g}"
        if quality and diversity:
            result["diversity_minus_quality"] = {
                m: paired(rows, diversity, quality, m) for m in ("diversity_reward", "diversity_independent")
            }
        if quality and teacher in names:
            result["quality_minus_teacher_adherence"] = paired(rows, quality, teacher, "attribute_adherence")
            result["teacher_minus_base_adherence"] = paired(rows, teacher, "base", "attribute_adherence")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
