"""Judge systems from several evaluations of the same prompts and seeds together (trials, cheaply).

    python bench/combine_evaluations.py RUN/evaluate TRIAL/evaluate [...] --out combined.json

Every evaluation must hold the same held-out prompts, samples per prompt and seed (the main job's
evaluate stage and ``musicdistill evaluate`` with the same ``evaluate`` section do): the base's
fronts are then evaluated once, and a trial evaluates only its new systems. The per-prompt values
(``per_prompt.csv``) and the systems (``metrics.json``) are merged, and the claims, fronts and
gains at matched quality are recomputed with the library's paired statistics (one joint bootstrap
over prompts). Later folders win when a system name repeats. Prints the claims and the gains.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from musicdistill.evaluation.evaluate import paired_evidence
from musicdistill.evaluation.paired import PromptTable, paired_difference, resample_indices

SAME = ("num_prompts", "samples_per_prompt", "seed", "duration")


def read_evaluation(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """(metrics.json, {system: {measure: per-prompt values in prompt order}}) of one evaluation folder."""
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    per: dict[str, dict[str, list[float]]] = {}
    with open(folder / "per_prompt.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            columns = per.setdefault(row["system"], {})
            for key, value in row.items():
                if key not in ("system", "prompt_index", "prompt"):
                    columns.setdefault(key, []).append(float(value) if value not in ("", None) else math.nan)
    return metrics, per


def against(
    table: PromptTable, systems: dict[str, Any], reference: str | None, measure: str, indices: Any
) -> dict[str, dict[str, float]]:
    """Every other system's paired difference in ``measure`` against ``reference``: {system: mean, low,
    high, n} (empty without the reference)."""
    if reference is None or not table.has(reference, measure):
        return {}
    rows = {}
    for name in systems:
        if name != reference and table.has(name, measure):
            e = paired_difference(table.column(name, measure), table.column(reference, measure), indices)
            rows[name] = {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}
    return rows


def combine(folders: list[Path], resamples: int, seed: int, teacher_gamma: float) -> dict[str, Any]:
    """The paired part of a metrics.json for the union of the folders' systems, plus every system's
    quality difference against the teacher (``minus_teacher``) and its primary and reward-embedder
    diversity differences against the beta = 0 student and the teacher (``c3_differences``, the
    comparisons of claim C3, keyed ``"<measure> - beta0"`` and ``"<measure> - teacher"``)."""
    first, _ = read_evaluation(folders[0])
    systems: dict[str, Any] = {}
    per_prompt: dict[str, dict[str, list[float]]] = {}
    for folder in folders:
        metrics, per = read_evaluation(folder)
        differ = [k for k in SAME if metrics.get(k) != first.get(k)]
        if differ:
            raise ValueError(
                f"{folder}: {differ} differ from {folders[0]}; only evaluations of the same prompts pair"
            )
        systems.update(metrics["systems"])
        per_prompt.update(per)
    table = PromptTable.from_lists(per_prompt)
    indices = resample_indices(table.num_prompts, resamples, seed)
    evidence = paired_evidence(table, systems, indices, teacher_gamma)
    quality = evidence["measures"]["quality"]
    teacher = evidence["roles"].get("teacher")
    student = evidence["roles"].get("quality")
    c3 = {
        f"{measure} - {role}": against(table, systems, reference, measure, indices)
        for measure in (evidence["measures"]["primary_diversity"], "diversity_reward")
        for role, reference in (("beta0", student), ("teacher", teacher))
    }
    return {
        "systems": systems,
        **evidence,
        "minus_teacher": against(table, systems, teacher, quality, indices),
        "c3_differences": c3,
    }


def _interval(label: str, e: dict[str, float] | None) -> str:
    return f"  {label} {e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]" if e else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders", nargs="+", type=Path, help="evaluation folders (metrics.json + per_prompt.csv)"
    )
    parser.add_argument("--out", type=Path, help="write the combined evidence as JSON here")
    parser.add_argument("--gamma", type=float, default=3.0, help="the teacher's CFG scale (default 3)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = combine(args.folders, args.resamples, args.seed, args.gamma)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    quality, primary = report["measures"]["quality"], report["measures"]["primary_diversity"]
    print(f"quality: {quality}; primary diversity: {primary}")
    for name, system in report["systems"].items():
        m = system.get("metrics", {})
        paired = _interval("q - teacher", report["minus_teacher"].get(name)) + _interval(
            "d - beta0", report["c3_differences"][f"{primary} - beta0"].get(name)
        )
        print(
            f"  {name:28s} q {m.get(quality, {}).get('mean', math.nan):.3f}  d {m.get(primary, {}).get('mean', math.nan):.3f}{paired}"
        )
    for claim in report["claims"]:
        print(f"{claim['id']}: {claim['verdict']}")
        for c in claim["comparisons"]:
            if c.get("decides", True):
                print(
                    f"    {c['label']}: {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] {c['verdict']}"
                )
    for gain in report["gains"]:
        if gain["diversity"] == primary and gain["defined_fraction"] >= 0.5:
            print(
                f"gain {gain['system']} over the {gain['front']} front: {gain['mean']:+.3f} "
                f"[{gain['low']:+.3f}, {gain['high']:+.3f}] defined {gain['defined_fraction']:.0%} {gain['verdict']}"
            )


if __name__ == "__main__":
    main()
