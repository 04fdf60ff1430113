"""Claims pooled over seeds: a hierarchical bootstrap on the concatenated per-prompt tables of several runs.

Each run (one seed of the main job: fresh data, judges, students, prompts) wrote its per-prompt
values to ``<run>/evaluate/per_prompt.csv`` and its systems to ``<run>/evaluate/metrics.json``
(:mod:`musicdistill.evaluation.evaluate`). :func:`read_run` reads one back as a
:class:`~musicdistill.evaluation.paired.PromptTable`; :func:`concatenate_tables` stacks the runs'
prompts into one table of ``N = S x B`` prompts (S runs of B prompts each, run-major).

**Hierarchical bootstrap** (:func:`hierarchical_indices`, docs/method.md section 7): one resample
draws S seeds with replacement and, for each drawn seed, B of that seed's prompts with replacement;
every statistic (means, paired differences, fronts, gains, claims) is recomputed on those draws, for
every system and measure together, exactly as the one-run joint bootstrap does with its ``[R, B]``
draws. The claims code is the same (:func:`musicdistill.evaluation.claims.all_claims`); only the
draws differ. The variance this gives a mean is ``between / S + within / (S B)`` (``between``: the
spread of the seeds' means, ``within``: the prompts' spread inside a seed), where the prompt-only
bootstrap of the concatenated table gives ``(between + within) / (S B)``: seed-to-seed variation
widens the pooled interval, and seeds that agree leave it as it was.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicdistill.evaluation.claims import all_claims
from musicdistill.evaluation.comparisons import Evidence, build_evidence, is_diversity
from musicdistill.evaluation.fronts import gain_table
from musicdistill.evaluation.paired import LEVEL, PromptTable, mean_estimate, resample_indices

log = logging.getLogger(__name__)

PER_PROMPT_FILE = Path("evaluate") / "per_prompt.csv"
METRICS_FILE = Path("evaluate") / "metrics.json"
ID_COLUMNS = ("system", "prompt_index", "prompt")
RESAMPLING = (
    "hierarchical: each resample draws the seeds with replacement, then, for each drawn seed, its "
    "prompts with replacement (one draw per resample for every system and measure: paired)"
)


@dataclass(frozen=True)
class RunTable:
    """One run's per-prompt table, its ``metrics.json`` systems, the teacher's γ and the evaluation seed."""

    run: Path
    table: PromptTable
    systems: dict[str, dict[str, Any]]
    gamma: float
    seed: int

    @property
    def name(self) -> str:
        return self.run.name


# --------------------------------------------------------------------------------------------
# Reading one run
# --------------------------------------------------------------------------------------------


def _cell(text: str) -> float | None:
    """A per-prompt cell: None when empty (the system lacks the measure), else its float (``nan`` too)."""
    return None if text.strip() == "" else float(text)


def read_per_prompt_csv(path: Path) -> PromptTable:
    """The table ``evaluate/per_prompt.csv`` holds (columns system, prompt_index, prompt, one per measure).

    A measure whose cells are all empty for a system is one the system was not measured on and is
    left out of its entry, as in the evaluation's own table; ``nan`` cells stay NaN.
    """
    text = path.read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(header[:3]) != ID_COLUMNS:
        raise ValueError(
            f"{path}: not a per-prompt table (the first columns must be {', '.join(ID_COLUMNS)}); "
            "it is written by the evaluate stage"
        )
    measures = header[3:]
    cells: dict[str, dict[int, list[float | None]]] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
        try:
            index = int(row[1])
            values = [_cell(c) for c in row[3:]]
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: {exc}") from None
        cells.setdefault(row[0], {})[index] = values
    if not cells:
        raise ValueError(f"{path}: no rows; rerun the evaluate stage")
    count = {len(rows) for rows in cells.values()}
    expected = set(range(max(len(rows) for rows in cells.values())))
    uneven = {s: sorted(rows) for s, rows in cells.items() if set(rows) != expected}
    if len(count) > 1 or uneven:
        raise ValueError(
            f"{path}: every system must have the same prompts 0..B-1; these differ: {', '.join(uneven)}"
        )
    per_system: dict[str, dict[str, list[float]]] = {}
    for system, rows in cells.items():
        ordered = [rows[i] for i in sorted(rows)]  # [B][M]
        per_system[system] = {}
        for j, measure in enumerate(measures):
            column = [r[j] for r in ordered]
            if all(v is None for v in column):
                continue
            per_system[system][measure] = [math.nan if v is None else v for v in column]
    return PromptTable.from_lists(per_system)


def read_run(run: str | Path) -> RunTable:
    """One run's per-prompt table and ``metrics.json`` (systems, ``measures.teacher_gamma``, ``seed``)."""
    run = Path(run)
    table_path, metrics_path = run / PER_PROMPT_FILE, run / METRICS_FILE
    for path in (table_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {run} has no finished evaluation (run the main job into it, or "
                f"`musicdistill run <config> name={run.name} --force evaluate`)"
            )
    table = read_per_prompt_csv(table_path)
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    systems = metrics.get("systems")
    gamma = (metrics.get("measures") or {}).get("teacher_gamma")
    if not isinstance(systems, dict) or not isinstance(gamma, (int, float)):
        raise ValueError(
            f"{metrics_path} has no systems or no measures.teacher_gamma (written before the paired "
            "statistics); rerun its evaluate stage: musicdistill run <config> --force evaluate"
        )
    unknown = [s for s in table.systems if s not in systems]
    if unknown:
        raise ValueError(f"{table_path}: systems {unknown} are not in {metrics_path}")
    return RunTable(run, table, systems, float(gamma), int(metrics.get("seed", 0)))


# --------------------------------------------------------------------------------------------
# Stacking runs and drawing the hierarchical resamples
# --------------------------------------------------------------------------------------------


def concatenate_tables(tables: Sequence[PromptTable], names: Sequence[str] | None = None) -> PromptTable:
    """One table of the runs' prompts one after another (``[S x B]`` per column, run-major).

    Keeps the systems every run has (another is dropped with a warning naming it) and the measures
    every run has; a kept system without a kept measure in some run gets NaN on that run's prompts
    (and is left without it when no run has it).
    """
    if not tables:
        raise ValueError("concatenate_tables needs at least one table")
    names = list(names) if names is not None else [f"run {i}" for i in range(len(tables))]
    systems = [s for s in tables[0].systems if all(s in t.values for t in tables)]
    for s in dict.fromkeys(s for t in tables for s in t.systems):
        if s not in systems:
            missing = [n for t, n in zip(tables, names) if s not in t.values]
            log.warning(
                "system %r is dropped from the pooled table: %s did not evaluate it", s, ", ".join(missing)
            )
    measures = [m for m in tables[0].measures() if all(m in t.measures() for t in tables)]
    dropped = sorted({m for t in tables for m in t.measures()} - set(measures))
    if dropped:
        log.warning("measures %s are dropped: not every run measured them", ", ".join(dropped))
    values: dict[str, dict[str, np.ndarray]] = {}
    for s in systems:
        values[s] = {}
        for m in measures:
            if not any(m in t.values[s] for t in tables):
                continue
            values[s][m] = np.concatenate(
                [t.values[s].get(m, np.full(t.num_prompts, np.nan)) for t in tables]
            )
    return PromptTable(values, sum(t.num_prompts for t in tables))


def hierarchical_indices(
    block_sizes: Sequence[int], num_resamples: int, seed: int, names: Sequence[str] | None = None
) -> np.ndarray:
    """Draws ``[R, S x B]`` of the hierarchical bootstrap over S blocks (seeds) of B prompts each.

    Row r holds, for each of S seeds drawn with replacement (``[R, S]``), B prompt indices drawn with
    replacement inside that seed's block (``[R, S, B]``, offset to the block's place in the
    run-major concatenation). Every block must hold the same B prompts (``names`` label them in the
    error).
    """
    sizes = [int(n) for n in block_sizes]
    labels = list(names) if names is not None else [f"block {i}" for i in range(len(sizes))]
    if not sizes:
        raise ValueError("hierarchical_indices needs at least one block (seed)")
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1 (evaluate.bootstrap)")
    if len(set(sizes)) > 1:
        counts = ", ".join(f"{label}: {n} prompts" for label, n in zip(labels, sizes))
        raise ValueError(
            f"the pooled bootstrap needs the same number of prompts from every seed; got {counts}. "
            "Rerun them with the same evaluate.num_prompts"
        )
    blocks, size = len(sizes), sizes[0]
    if size < 1:
        raise ValueError(f"every seed must have at least one prompt; got {size}")
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, blocks, size=(num_resamples, blocks))  # [R, S]
    within = rng.integers(0, size, size=(num_resamples, blocks, size))  # [R, S, B]
    return (chosen[:, :, None] * size + within).reshape(num_resamples, blocks * size)


# --------------------------------------------------------------------------------------------
# Pooled claims, gains and means
# --------------------------------------------------------------------------------------------


def candidates(evidence: Evidence) -> list[str]:
    """C4's candidates: the merges of the quality and diversity students, then the diversity student."""
    roles = evidence.roles
    found = [*roles.merges, *([roles.diversity] if roles.diversity else [])]
    return [c for c in dict.fromkeys(found) if c in evidence.table.values]


def candidate_gains(evidence: Evidence) -> list[dict[str, Any]]:
    """Every candidate's gain at matched quality over each front, under every diversity measure."""
    if evidence.quality is None:
        return []
    diversities = [m for m in evidence.table.measures() if is_diversity(m)]
    gains = gain_table(evidence.table, evidence.fronts, evidence.quality, diversities, evidence.indices)
    wanted = set(candidates(evidence))
    return [g.as_dict() for g in gains if g.system in wanted]


def system_means(table: PromptTable, indices: np.ndarray) -> dict[str, dict[str, dict[str, Any]]]:
    """Each system's mean of each measure with its interval under ``indices`` ``[R, N]``."""
    return {
        system: {m: mean_estimate(column, indices).as_dict() for m, column in measures.items()}
        for system, measures in table.values.items()
    }


def _evidence_summary(evidence: Evidence) -> dict[str, Any]:
    return {
        "measures": {
            "quality": evidence.quality,
            "primary_diversity": evidence.primary,
            "primary_note": evidence.primary_note,
        },
        "roles": evidence.roles.as_dict(),
        "fronts": {key: front.as_dict() for key, front in evidence.fronts.items()},
        "candidates": candidates(evidence),
        "claims": [c.as_dict() for c in all_claims(evidence)],
    }


def pooled_claims(runs: Sequence[str | Path], num_resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Per-seed and pooled claims, the pooled candidates' gains and the pooled means (JSON-serialisable).

    Each run's claims are recomputed from its table with its own joint draws
    (``resample_indices(B, num_resamples, <its evaluate seed>)``, as the evaluation draws them); the
    pooled ones come from the runs' concatenated table with :func:`hierarchical_indices` drawn with
    ``seed``. The systems' descriptions are the first run's (the runs share one config but the seeds).
    """
    if not runs:
        raise ValueError("pooled_claims needs at least one run folder")
    loaded = [read_run(r) for r in runs]
    gammas = {r.gamma for r in loaded}
    if len(gammas) > 1:
        raise ValueError(
            "the runs were distilled from teachers at different CFG scales ("
            + ", ".join(f"{r.name}: {r.gamma:g}" for r in loaded)
            + "); pool runs of one config (distill.gamma) only"
        )
    gamma = loaded[0].gamma
    names = [r.name for r in loaded]
    indices = hierarchical_indices([r.table.num_prompts for r in loaded], num_resamples, seed, names)
    per_run = []
    for r in loaded:
        run_indices = resample_indices(r.table.num_prompts, num_resamples, r.seed)  # [R, B]
        evidence = build_evidence(r.table, r.systems, gamma, run_indices)
        per_run.append(
            {
                "run": str(r.run),
                "name": r.name,
                "evaluate_seed": r.seed,
                "num_prompts": r.table.num_prompts,
                **_evidence_summary(evidence),
                "gains": candidate_gains(evidence),
            }
        )
        log.info("%s: %s", r.name, ", ".join(f"{c['id']} {c['verdict']}" for c in per_run[-1]["claims"]))
    table = concatenate_tables([r.table for r in loaded], names)
    systems = {s: loaded[0].systems[s] for s in table.systems}
    evidence = build_evidence(table, systems, gamma, indices)
    dropped = sorted({s for r in loaded for s in r.table.systems} - set(table.systems))
    pooled = {
        **_evidence_summary(evidence),
        "gains": candidate_gains(evidence),
        "means": system_means(table, indices),
    }
    return {
        "runs": names,
        "gamma": gamma,
        "statistics": {
            "bootstrap": int(num_resamples),
            "level": LEVEL,
            "seed": int(seed),
            "seeds": len(loaded),
            "prompts_per_seed": loaded[0].table.num_prompts,
            "resampling": RESAMPLING,
            "per_seed_resampling": "prompts, with each run's own evaluate seed (as its evaluation)",
        },
        "systems": table.systems,
        "dropped_systems": dropped,
        "per_run": per_run,
        "pooled": pooled,
    }
