"""Why the hand-made-features diversity view disagrees: ``diversity_independent`` split by feature group.

    python bench/view_breakdown.py RUN --system cfg2.5=RUN/base@2.5 --system cfg3=RUN/base@3 \
        --system merge=RUN/merges/quality-diversity/lam_0.50 --system beta30=RUN/diversity \
        [--reference cfg2.5] [--prompts 128] [--samples 8] [--seed 0] [--json OUT.json]

``diversity_independent`` is the mean pairwise ``1 - cos`` over the G samples of a prompt of the
oracle's standardised hand-made features (:func:`musicdistill.judges.judging.oracle_judges`). The
feature vector (:func:`musicdistill.judges.oracle.clip_features`, D mel bands, L = ``num_lags``) is

    [band mean (D) | band std (D) | band mean abs change (D) | band 10/30/50 % quantiles (3 D)
     | flux autocorrelation of 4 bands (4 L) | pseudo-chroma (12)]

Every system samples the run's held-out prompts with the evaluation's seed and batch size (so its
samples, and its whole-vector diversity, are the evaluation's), and each feature group gets, per prompt:

- **contribution**: the group's exact share of the whole-vector view. With ``u = x / |x|`` the whole
  unit vector, ``1 - cos(x, y) = 1/2 |u - v|^2 = sum over groups of 1/2 |u_g - v_g|^2``; the
  contributions (mean over pairs) add up to ``diversity_independent``, and so do their paired differences;
- **cosine**: the mean pairwise ``1 - cos`` of the group's standardised features alone;
- **spread**: the mean pairwise squared Euclidean distance of the group's standardised features
  divided by its dimension (a variance per feature: ``2 x`` the mean unbiased variance over the samples);

and per system the **share** of each group in the total pairwise squared distance. Every measure is
averaged over prompts and compared with the ``--reference`` system (paired over prompts, bootstrap
95 % interval: :func:`musicdistill.evaluation.paired.paired_difference` on the evaluation's draws).
``NAME=CHECKPOINT[@GAMMA]`` samples with CFG scale GAMMA (default 1, no CFG) at temperature 1; a bare
``NAME`` is a system of ``RUN/evaluate/metrics.json``, with its checkpoint and sampling settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicdistill.config.loading import load_saved_config
from musicdistill.data.tokens import load_token_set
from musicdistill.evaluation.metrics import Estimate
from musicdistill.evaluation.paired import paired_difference, resample_indices
from musicdistill.evaluation.setup import ModelPool, held_out_prompts
from musicdistill.generation.sampling import generate
from musicdistill.judges.diversity import grouped_unit, pairwise_diversity
from musicdistill.judges.judging import CodedClips, oracle_features, oracle_judges
from musicdistill.judges.oracle import FLUX_BANDS, QUANTILES, load_oracle, num_lags
from musicdistill.runtime import resolve_device

log = logging.getLogger("view_breakdown")

#: the whole-vector view, as the evaluation names it
WHOLE = "diversity_independent"
#: names of the flux bands (:data:`musicdistill.judges.oracle.FLUX_BANDS`)
FLUX_NAMES = ("kick", "body", "hats", "all")


@dataclass(frozen=True)
class System:
    """A system to sample: a checkpoint and its sampling settings."""

    name: str
    checkpoint: str
    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0


# --------------------------------------------------------------------------------------------
# Feature groups and per-group distances (no model needed)
# --------------------------------------------------------------------------------------------


def feature_groups(n_mels: int, lags: int, fine: bool = False) -> dict[str, slice]:
    """Columns of each feature group in :func:`musicdistill.judges.oracle.clip_features`' vector of
    ``F = 6 D + 4 L + 12`` (D = ``n_mels``, L = ``lags``), in vector order.

    ``fine`` splits the quantiles by quantile (``q10``, ...) and the flux autocorrelation by band.
    """
    d, widths = n_mels, []
    widths += [("band mean (envelope, register)", d), ("band std", d), ("band mean abs change", d)]
    if fine:
        widths += [(f"band quantile q{round(100 * q)}", d) for q in QUANTILES]
        widths += [(f"flux autocorr {b} (rhythm)", lags) for b in FLUX_NAMES[: len(FLUX_BANDS)]]
    else:
        widths += [
            ("band quantiles", len(QUANTILES) * d),
            ("flux autocorr (rhythm, tempo)", len(FLUX_BANDS) * lags),
        ]
    widths.append(("chroma (pitch class, key)", 12))
    groups, start = {}, 0
    for name, width in widths:
        groups[name] = slice(start, start + width)
        start += width
    return groups


def check_groups(groups: dict[str, slice], width: int) -> None:
    """Raise unless ``groups`` tile ``[0, width)`` exactly (the oracle's feature width)."""
    stops = [s.stop for s in groups.values()]
    if not stops or stops[-1] != width:
        raise ValueError(f"feature groups cover {stops[-1] if stops else 0} columns, the oracle has {width}")


def pair_mean_sq_distance(x: np.ndarray) -> np.ndarray:
    """Mean over the ``G (G - 1) / 2`` pairs of a prompt's samples of ``|x_i - x_j|^2``: ``[B, G, d] -> [B]``.

    Uses ``sum_{i<j} |x_i - x_j|^2 = G sum_i |x_i - mean|^2``.
    """
    x = np.asarray(x, dtype=np.float64)
    g = x.shape[1]
    if g < 2:
        raise ValueError(f"need G >= 2 samples per prompt, got {g}")
    centred = x - x.mean(axis=1, keepdims=True)
    return 2.0 * np.square(centred).sum(axis=(1, 2)) / (g - 1)


def group_measures(features: np.ndarray, unit: np.ndarray, columns: slice) -> dict[str, np.ndarray]:
    """One group's per-prompt measures ``{measure: [B]}`` from standardised features ``[B, G, F]`` and
    their whole-vector unit rows ``[B, G, F]``: contribution, cosine, spread and the summed squared
    distance ``sq`` (for the shares)."""
    part = features[..., columns]
    sq = pair_mean_sq_distance(part)
    return {
        "contribution": 0.5 * pair_mean_sq_distance(unit[..., columns]),
        "cosine": pairwise_diversity(part),
        "spread": sq / part.shape[-1],
        "sq": sq,
    }


def breakdown(features: np.ndarray, groups: dict[str, slice]) -> dict[str, dict[str, np.ndarray]]:
    """Standardised features ``[B, G, F]`` -> ``{group: {measure: [B]}}`` (:func:`group_measures`)."""
    unit = grouped_unit(torch.as_tensor(features)).numpy()
    return {name: group_measures(features, unit, columns) for name, columns in groups.items()}


def shares(per_group: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Each group's share of the total pairwise squared distance, summed over prompts (adds up to 1)."""
    totals = {name: float(m["sq"].sum()) for name, m in per_group.items()}
    whole = sum(totals.values())
    return {name: t / whole if whole > 0 else math.nan for name, t in totals.items()}


# --------------------------------------------------------------------------------------------
# Systems and sampling
# --------------------------------------------------------------------------------------------


def parse_system(text: str, evaluated: dict[str, Any]) -> System:
    """A system name of the run's metrics.json, or ``NAME=CHECKPOINT[@GAMMA]`` -> :class:`System`."""
    if text in evaluated:
        s = evaluated[text]["settings"]
        return System(
            text, evaluated[text]["checkpoint"], s["cfg_scale"], s["temperature"], s["top_k"], s["top_p"]
        )
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(
            f"--system {text!r}: write NAME=CHECKPOINT[@GAMMA] or one of the evaluated systems "
            f"{sorted(evaluated)}"
        )
    checkpoint, _, gamma = rest.partition("@")
    return System(name, checkpoint, float(gamma) if gamma else 1.0)


def evaluated_mean(system: System, evaluated: dict[str, Any]) -> float:
    """The evaluation's ``diversity_independent`` mean of the same checkpoint and settings (NaN if none)."""
    for entry in evaluated.values():
        s = entry["settings"]
        same = Path(entry["checkpoint"]).resolve() == Path(system.checkpoint).resolve() and (
            s["cfg_scale"],
            s["temperature"],
            s["top_k"],
            s["top_p"],
        ) == (system.cfg_scale, system.temperature, system.top_k, system.top_p)
        if same and WHOLE in entry.get("metrics", {}):
            return float(entry["metrics"][WHOLE]["mean"])
    return math.nan


@dataclass
class Sampling:
    """What every system samples: prompts, G, clip length, seed and decode batch size."""

    prompts: Any
    group: int
    duration: float
    seed: int
    batch_size: int


def sample_features(
    system: System, pool: ModelPool, oracle, sampling: Sampling
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``system`` as the evaluation does -> (standardised features ``[B, G, F]``, the
    evaluation's whole-vector ``diversity_independent`` ``[B]``, computed by its judge)."""
    loaded = pool(system.checkpoint)
    out = generate(
        loaded.model,
        sampling.prompts.prompts,
        sampling.group,
        sampling.duration,
        system.temperature,
        system.top_k,
        system.top_p,
        system.cfg_scale,
        sampling.seed,
        None,
        text_encoder=loaded.text_encoder,
        frame_rate=float(loaded.codec.frame_rate),
        batch_size=sampling.batch_size,
    )
    clips = CodedClips(loaded.codec, out.codes)
    independent, _ = oracle_judges(oracle)
    embedding = independent(clips).float()  # [B·G, F], as musicdistill.evaluation.evaluate.score_system
    whole = pairwise_diversity(embedding.reshape(-1, sampling.group, embedding.shape[-1]))
    features = oracle_features(oracle, clips).double().numpy()  # the same memoised features
    return features.reshape(-1, sampling.group, features.shape[-1]), whole


# --------------------------------------------------------------------------------------------
# Summary and table
# --------------------------------------------------------------------------------------------


def summarise(
    values: dict[str, dict[str, dict[str, np.ndarray]]], reference: str, indices: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{system: {group: {measure: [B]}}}`` -> ``{system: {group: {measure: mean, "<measure>_vs_ref":
    Estimate}}}``, each difference paired over prompts against ``reference`` on the draws ``[R, B]``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system, groups in values.items():
        out[system] = {}
        for group, measures in groups.items():
            row: dict[str, Any] = {}
            for measure, column in measures.items():
                row[measure] = float(np.mean(column))
                if system != reference:
                    row[f"{measure}_vs_ref"] = paired_difference(
                        column, values[reference][group][measure], indices
                    )
            out[system][group] = row
    return out


def cell(row: dict[str, Any], measure: str, digits: int = 3) -> str:
    """``mean`` or ``mean (+diff [low, high])`` of one measure for one table cell."""
    text = f"{row[measure]:.{digits}f}"
    diff: Estimate | None = row.get(f"{measure}_vs_ref")
    if diff is not None:
        text += f" ({diff.mean:+.{digits}f} [{diff.low:+.{digits}f}, {diff.high:+.{digits}f}])"
    return text


def table(
    summary: dict[str, dict[str, dict[str, Any]]],
    groups: dict[str, slice],
    measure: str,
    digits: int,
    share: dict[str, dict[str, float]] | None = None,
) -> list[str]:
    """Markdown rows: feature groups (and the whole vector for contributions) x systems of one measure."""
    systems = list(summary)
    dims = {g: s.stop - s.start for g, s in groups.items()}
    rows = list(groups)
    if measure == "contribution":
        rows.append(WHOLE)
        dims[WHOLE] = sum(dims.values())
    lines = [
        "| feature group | dim | " + " | ".join(systems) + " |",
        "| --- | --- |" + " --- |" * len(systems),
    ]
    for group in rows:
        cells = []
        for s in systems:
            text = cell(summary[s][group], "whole" if group == WHOLE else measure, digits)
            if share is not None:
                text += f" · {100 * share[s][group]:.0f} %"
            cells.append(text)
        lines.append(f"| {group} | {dims[group]} | " + " | ".join(cells) + " |")
    return lines


def report(
    summary: dict[str, dict[str, dict[str, Any]]],
    groups: dict[str, slice],
    share: dict[str, dict[str, float]],
    evaluated: dict[str, float],
    reference: str,
    digits: int = 3,
) -> str:
    """The three markdown tables, the first with the evaluation's whole-vector means (metrics.json)."""
    note = f"cells: mean over prompts (system - {reference}, paired over prompts, 95 % bootstrap interval)"
    checked = " | ".join(
        f"{evaluated[s]:.{digits}f}" if math.isfinite(evaluated[s]) else "n/a" for s in summary
    )
    return "\n".join(
        [
            f"Contribution to {WHOLE} (the groups add up to it); {note}",
            "",
            *table(summary, groups, "contribution", digits),
            f"| {WHOLE} in metrics.json | | {checked} |",
            "",
            f"Within-group mean pairwise 1 - cos; {note}",
            "",
            *table(summary, groups, "cosine", digits),
            "",
            f"Spread: mean pairwise squared distance / dim · share of the total squared distance; {note}",
            "",
            *table(summary, groups, "spread", digits, share),
        ]
    )


def to_json(value: Any) -> Any:
    """Estimates and NaN made JSON-safe."""
    if isinstance(value, Estimate):
        return to_json(value.as_dict())
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="run folder with config.yaml, tokens/ and oracle/")
    parser.add_argument("--system", action="append", required=True, help="NAME=CHECKPOINT[@GAMMA] or NAME")
    parser.add_argument("--reference", help="system the others are compared with (default: the first)")
    parser.add_argument(
        "--prompts", type=int, help="held-out prompts (default: the run's evaluate.num_prompts)"
    )
    parser.add_argument(
        "--samples", type=int, help="samples per prompt (default: evaluate.samples_per_prompt)"
    )
    parser.add_argument("--seed", type=int, help="sampling and bootstrap seed (default: evaluate.seed)")
    parser.add_argument("--batch-size", type=int, help="decode batch size (default: evaluate.batch_size)")
    parser.add_argument("--bootstrap", type=int, help="resamples (default: evaluate.bootstrap)")
    parser.add_argument("--split", help="held-out split (default: evaluate.split)")
    parser.add_argument("--fine", action="store_true", help="split quantiles by quantile and flux by band")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the tables")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    ec = load_saved_config(args.run / "config.yaml").evaluate
    metrics_path = args.run / "evaluate" / "metrics.json"
    evaluated = json.loads(metrics_path.read_text())["systems"] if metrics_path.is_file() else {}
    systems = [parse_system(text, evaluated) for text in args.system]
    names = [s.name for s in systems]
    reference = args.reference or names[0]
    if reference not in names or len(set(names)) != len(names):
        raise SystemExit(f"--reference {reference!r} must name one of the distinct systems {names}")
    split = args.split or ec.split
    seed = ec.seed if args.seed is None else args.seed
    count = args.prompts or ec.num_prompts
    tokens = load_token_set(args.run / "tokens").select(split)
    sampling = Sampling(
        held_out_prompts(tokens, split, count, seed),
        args.samples or ec.samples_per_prompt,
        tokens.num_frames / tokens.frame_rate,
        seed,
        args.batch_size or ec.batch_size,
    )
    oracle = load_oracle(args.run / "oracle")
    groups = feature_groups(oracle.settings["n_mels"], num_lags(oracle.settings), args.fine)
    check_groups(groups, int(oracle.mean.numel()))
    same_as_evaluation = (
        count,
        sampling.group,
        seed,
        sampling.batch_size,
        split,
    ) == (ec.num_prompts, ec.samples_per_prompt, ec.seed, ec.batch_size, ec.split)
    pool = ModelPool(resolve_device(args.device))
    values, share, check = {}, {}, {}
    for system in systems:
        features, whole = sample_features(system, pool, oracle, sampling)
        values[system.name] = breakdown(features, groups)
        values[system.name][WHOLE] = {"whole": whole}
        share[system.name] = shares({g: values[system.name][g] for g in groups})
        check[system.name] = evaluated_mean(system, evaluated) if same_as_evaluation else math.nan
        log.info(
            "%s: %s %.6f (metrics.json %.6f), groups add up to %.6f",
            system.name,
            WHOLE,
            whole.mean(),
            check[system.name],
            sum(values[system.name][g]["contribution"].mean() for g in groups),
        )
    indices = resample_indices(len(sampling.prompts.prompts), args.bootstrap or ec.bootstrap, seed)
    summary = summarise(values, reference, indices)
    print(report(summary, groups, share, check, reference, args.digits))
    if args.json:
        payload = {
            "run": str(args.run),
            "reference": reference,
            "prompts": len(sampling.prompts.prompts),
            "samples": sampling.group,
            "seed": seed,
            "batch_size": sampling.batch_size,
            "groups": {g: s.stop - s.start for g, s in groups.items()},
            "systems": {s.name: vars(s) for s in systems},
            "metrics_json": check,
            "share": share,
            "summary": summary,
        }
        args.json.write_text(json.dumps(to_json(payload), indent=1) + "\n")
        log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
