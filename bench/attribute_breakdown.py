"""Per attribute: how often systems obey it when the caption states it, and how varied it is when not.

    python bench/attribute_breakdown.py RUN --system teacher=RUN/base@3 --system beta0=RUN/quality \
        [--prompts 128] [--samples 8] [--seed 0]

Attribute diversity (the primary independent measure) averages, over the attributes a caption leaves
open, the rate at which two samples of the prompt read differently. This script splits it by
attribute, beside each attribute's adherence where captions state it, so one sees which open
attributes CFG narrows and which a student widens again. Every system samples the same held-out
prompts with the same seed as the evaluation (``evaluate.seed``), from the run's tokens, and is read
by the run's oracle. ``NAME=CHECKPOINT@GAMMA`` samples with CFG scale GAMMA (default 1, no CFG).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from musicdistill.data.tokens import load_token_set
from musicdistill.evaluation.setup import ModelPool, held_out_prompts
from musicdistill.generation.sampling import generate
from musicdistill.judges.attribute_diversity import pairwise_disagreement, stated_attributes
from musicdistill.judges.judging import CodedClips, oracle_readings
from musicdistill.judges.oracle import load_oracle
from musicdistill.runtime import resolve_device


def parse_system(text: str) -> tuple[str, str, float]:
    """``NAME=CHECKPOINT[@GAMMA]`` -> (name, checkpoint, gamma)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--system {text!r}: write NAME=CHECKPOINT or NAME=CHECKPOINT@GAMMA")
    checkpoint, _, gamma = rest.partition("@")
    return name, checkpoint, float(gamma) if gamma else 1.0


def breakdown(
    readings: list[dict[str, str]], attributes: list[dict | None], group: int, names: list[str]
) -> dict[str, tuple[float, int, float, int]]:
    """{attribute: (adherence where stated, prompts, diversity where open, prompts)} of one system."""
    out = {}
    for a in names:
        obey, spread = [], []
        for b, attrs in enumerate(attributes):
            if not attrs or attrs.get(a) is None:
                continue
            takes = [r[a] for r in readings[b * group : (b + 1) * group]]
            if a in stated_attributes(attrs):
                obey.append(np.mean([str(t) == str(attrs[a]) for t in takes]))
            else:
                spread.append(pairwise_disagreement(takes))
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        out[a] = (mean(obey), len(obey), mean(spread), len(spread))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="run folder with tokens/ and oracle/")
    parser.add_argument("--system", action="append", required=True, help="NAME=CHECKPOINT[@GAMMA]")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="sequences decoded together; the samples depend on it, so keep evaluate.batch_size (64)",
    )
    args = parser.parse_args()

    device = resolve_device("auto")
    tokens = load_token_set(args.run / "tokens").select(args.split)
    prompts = held_out_prompts(tokens, args.split, args.prompts, args.seed)
    oracle = load_oracle(args.run / "oracle")
    names = [a for a in oracle.attributes]
    pool = ModelPool(device)
    duration = tokens.num_frames / tokens.frame_rate
    rows = {}
    for text in args.system:
        name, checkpoint, gamma = parse_system(text)
        loaded = pool(checkpoint)
        out = generate(
            loaded.model,
            prompts.prompts,
            args.samples,
            duration,
            1.0,
            0,
            0.0,
            gamma,
            args.seed,
            None,
            text_encoder=loaded.text_encoder,
            frame_rate=float(loaded.codec.frame_rate),
            batch_size=args.batch_size,
        )
        readings = oracle_readings(oracle, CodedClips(loaded.codec, out.codes))
        rows[name] = breakdown(readings, list(prompts.attributes), args.samples, names)
        print(f"{name}: done", flush=True)
    print("\n| attribute | " + " | ".join(rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for a in names:
        obey = " | ".join(f"{rows[s][a][0]:.3f}" for s in rows)
        spread = " | ".join(f"{rows[s][a][2]:.3f}" for s in rows)
        first = next(iter(rows.values()))[a]
        print(f"| {a}: adherence, stated ({first[1]} prompts) | {obey} |")
        print(f"| {a}: diversity, open ({first[3]} prompts) | {spread} |")


if __name__ == "__main__":
    main()
