"""Claims pooled over seeds: the hierarchical draws, reading a run back, stacking runs, and the pooled
claims on synthetic run folders (per_prompt.csv + metrics.json as the evaluate stage writes them)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musicdistill.evaluation.claims import CLAIM_IDS, all_claims
from musicdistill.evaluation.comparisons import build_evidence, is_diversity
from musicdistill.evaluation.evaluate import EvalPrompts, SystemResult, write_per_prompt_csv
from musicdistill.evaluation.paired import HOLDS, PromptTable, paired_difference, resample_indices
from musicdistill.evaluation.pooled import (
    concatenate_tables,
    hierarchical_indices,
    pooled_claims,
    read_per_prompt_csv,
    read_run,
)
from musicdistill.evaluation.systems import SystemSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_evidence import GAMMA, SYSTEMS, B, per_prompt  # noqa: E402

CONTROL = "control (beta=0)"
#: the synthetic systems plus a control (the diversity student's settings, beta 0)
RUN_SYSTEMS = {**SYSTEMS, CONTROL: ("control", 1.0, 1.0, 0.69, 0.42, 0.72)}
ROLES = {
    "base": "base",
    "base T=0.7": "base",
    "base CFG 1.5": "base",
    "base CFG 3": "teacher",
    "base CFG 5": "base",
    "quality (beta=0)": "quality",
    "diversity (beta=15)": "diversity",
    CONTROL: "control",
    "merge lambda=0.25": "merge",
    "merge lambda=0.5": "merge",
    "offline (beta=0)": "offline",
}
LAMBDAS = {"merge lambda=0.25": 0.25, "merge lambda=0.5": 0.5}


def write_run(
    run: Path,
    overrides: dict[str, dict[str, float]] | None = None,
    *,
    evaluate_seed: int = 0,
    drop: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, Any]]]:
    """Write ``<run>/evaluate/per_prompt.csv`` (with the evaluation's own writer) and a minimal
    ``metrics.json`` (systems with roles, ``measures.teacher_gamma``, ``seed``) for the synthetic run."""
    values, info = per_prompt(overrides, systems=RUN_SYSTEMS, drop=drop)
    for name, entry in info.items():
        entry["role"] = ROLES[name]
        if name in LAMBDAS:
            entry |= {"lam": LAMBDAS[name], "merge_of": ["quality", "diversity"]}
    out = run / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    results = [
        SystemResult(SystemSpec(name, info[name]["checkpoint"], 1.0, 1.0, 0, 0.0), measures)
        for name, measures in values.items()
    ]
    write_per_prompt_csv(out, results, EvalPrompts([f"prompt {i}" for i in range(B)], [None] * B))
    metrics = {"seed": evaluate_seed, "num_prompts": B, "systems": info, "measures": {"teacher_gamma": GAMMA}}
    (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return values, info


# --------------------------------------------------------------------------------------------
# The hierarchical draws
# --------------------------------------------------------------------------------------------


def test_hierarchical_indices_draw_seeds_then_prompts_within_each() -> None:
    seeds, prompts, resamples = 3, 5, 2000
    idx = hierarchical_indices([prompts] * seeds, resamples, seed=1)
    assert idx.shape == (resamples, seeds * prompts) and np.issubdtype(idx.dtype, np.integer)
    assert idx.min() >= 0 and idx.max() < seeds * prompts
    blocks = idx.reshape(resamples, seeds, prompts) // prompts  # [R, S, B]: the seed each index is from
    assert (blocks == blocks[:, :, :1]).all(), "each drawn seed's B prompts come from that one seed"
    chosen = blocks[:, :, 0]  # [R, S]
    # seeds with replacement: some resamples repeat a seed (probability 1 - 3!/27 = 7/9 each)
    repeats = np.array([len(set(row)) < seeds for row in chosen])
    assert 0.7 < repeats.mean() < 0.85
    assert set(np.unique(chosen)) == set(range(seeds))
    # prompts with replacement within a seed: some draws repeat a prompt, every prompt is drawn
    within = idx.reshape(resamples, seeds, prompts) % prompts
    assert any(len(set(row)) < prompts for row in within.reshape(-1, prompts)[:50])
    assert set(np.unique(within)) == set(range(prompts))
    np.testing.assert_array_equal(idx, hierarchical_indices([prompts] * seeds, resamples, seed=1))
    assert not np.array_equal(idx, hierarchical_indices([prompts] * seeds, resamples, seed=2))


def test_hierarchical_indices_need_equal_blocks() -> None:
    with pytest.raises(ValueError, match=r"default-seed3: 40 prompts.*evaluate\.num_prompts"):
        hierarchical_indices([32, 40], 10, 0, names=["default-seed2", "default-seed3"])
    with pytest.raises(ValueError, match="num_resamples"):
        hierarchical_indices([4, 4], 0, 0)
    with pytest.raises(ValueError, match="at least one block"):
        hierarchical_indices([], 10, 0)


def _blocks(
    seed_effects: list[float], prompts: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two systems' per-prompt values ``[S x B]`` whose difference in seed s is ``seed_effects[s]`` plus
    prompt noise that averages to exactly 0 in every seed (so the seeds' mean differences are the effects)."""
    first, second = [], []
    for effect in seed_effects:
        base = rng.normal(0.5, 0.15, prompts)
        noise = rng.normal(0.0, 0.05, prompts)
        noise -= noise.mean()
        first.append(base + effect + noise)
        second.append(base)
    return np.concatenate(first), np.concatenate(second)


def _width(first: np.ndarray, second: np.ndarray, indices: np.ndarray) -> float:
    est = paired_difference(first, second, indices)
    return est.high - est.low


def test_seed_to_seed_variation_widens_the_pooled_interval() -> None:
    rng = np.random.default_rng(0)
    prompts, effects = 60, [0.10, -0.06, 0.02, 0.12]
    first, second = _blocks(effects, prompts, rng)
    hierarchical = hierarchical_indices([prompts] * len(effects), 4000, seed=0)
    prompt_only = resample_indices(prompts * len(effects), 4000, seed=0)
    wide, narrow = _width(first, second, hierarchical), _width(first, second, prompt_only)
    # between-seed sd 0.07 over 4 seeds against prompt noise 0.05 over 240 prompts: several times wider
    assert wide > 3 * narrow
    assert paired_difference(first, second, hierarchical).mean == pytest.approx(np.mean(effects))


def test_seeds_that_agree_give_nearly_the_prompt_only_interval() -> None:
    rng = np.random.default_rng(0)
    prompts = 60
    first, second = _blocks([0.05] * 4, prompts, rng)
    hierarchical = hierarchical_indices([prompts] * 4, 4000, seed=0)
    prompt_only = resample_indices(prompts * 4, 4000, seed=0)
    ratio = _width(first, second, hierarchical) / _width(first, second, prompt_only)
    assert 0.85 < ratio < 1.15


# --------------------------------------------------------------------------------------------
# Reading runs and stacking them
# --------------------------------------------------------------------------------------------


def test_read_run_gives_back_the_evaluations_table(tmp_path: Path) -> None:
    values, info = write_run(tmp_path / "r", evaluate_seed=7)
    run = read_run(tmp_path / "r")
    assert run.gamma == GAMMA and run.seed == 7 and run.systems == info
    assert run.table.num_prompts == B and run.table.systems == list(values)
    for system, measures in values.items():
        assert list(run.table.values[system]) == sorted(measures)
        for measure, column in measures.items():
            np.testing.assert_allclose(run.table.values[system][measure], column, atol=1e-6)
    assert np.isnan(run.table.column("base", "attribute_adherence")[0])  # a 'nan' cell stays NaN


def test_a_measure_a_system_lacks_stays_missing(tmp_path: Path) -> None:
    path = tmp_path / "per_prompt.csv"
    path.write_text("system,prompt_index,prompt,a,b\nx,0,p,0.5,\nx,1,q,nan,\ny,0,p,0.1,0.2\ny,1,q,0.3,0.4\n")
    table = read_per_prompt_csv(path)
    assert list(table.values["x"]) == ["a"] and list(table.values["y"]) == ["a", "b"]
    assert np.isnan(table.values["x"]["a"][1])


def test_read_run_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="per_prompt.csv"):
        read_run(tmp_path / "nothing")
    (tmp_path / "bad" / "evaluate").mkdir(parents=True)
    (tmp_path / "bad" / "evaluate" / "per_prompt.csv").write_text("who,what\n")
    (tmp_path / "bad" / "evaluate" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="not a per-prompt table"):
        read_run(tmp_path / "bad")


def test_concatenate_keeps_what_every_run_has(caplog: pytest.LogCaptureFixture) -> None:
    one = PromptTable.from_lists({"a": {"q": [1, 2], "d": [3, 4]}, "b": {"q": [5, 6]}})
    two = PromptTable.from_lists(
        {"a": {"q": [7, 8, 9]}, "b": {"q": [1, 2, 3], "x": [0, 0, 0]}, "c": {"q": [1, 1, 1]}}
    )
    with caplog.at_level(logging.WARNING):
        table = concatenate_tables([one, two], ["seed2", "seed3"])
    assert table.systems == ["a", "b"] and table.num_prompts == 5
    np.testing.assert_array_equal(table.values["a"]["q"], [1, 2, 7, 8, 9])
    assert list(table.values["a"]) == ["q"] and list(table.values["b"]) == ["q"]
    assert "'c'" in caplog.text and "seed2" in caplog.text
    three = PromptTable.from_lists({"a": {"q": [1.0], "d": [2.0]}, "b": {"q": [1.0]}})
    both = concatenate_tables([one, three])
    np.testing.assert_array_equal(both.values["a"]["d"], [3, 4, 2])
    assert "d" not in both.values["b"]


# --------------------------------------------------------------------------------------------
# Pooled claims
# --------------------------------------------------------------------------------------------


def test_pooled_claims_on_synthetic_runs(tmp_path: Path) -> None:
    runs = [tmp_path / "s2", tmp_path / "s3", tmp_path / "s4"]
    for i, run in enumerate(runs):
        write_run(run, {"merge lambda=0.5": {"primary": 0.46 + 0.02 * i}}, evaluate_seed=i)
    result = pooled_claims(runs, num_resamples=300, seed=0)
    json.dumps(result)  # serialisable
    assert result["runs"] == ["s2", "s3", "s4"] and result["statistics"]["prompts_per_seed"] == B
    # per seed: the claims the run's own evaluation would decide (same table, same draws)
    for i, (run, stored) in enumerate(zip(runs, result["per_run"])):
        r = read_run(run)
        expected = all_claims(build_evidence(r.table, r.systems, GAMMA, resample_indices(B, 300, i)))
        assert [c["verdict"] for c in stored["claims"]] == [c.verdict for c in expected]
    pooled = result["pooled"]
    assert [c["id"] for c in pooled["claims"]] == list(CLAIM_IDS)
    assert pooled["claims"][0]["verdict"] == HOLDS  # CFG's effect is the same in every seed
    # every candidate's gain under every diversity view, over the CFG front
    candidates = set(pooled["candidates"])
    assert {"merge lambda=0.25", "merge lambda=0.5", "diversity (beta=15)"} <= candidates
    views = {m for m in read_run(runs[0]).table.measures() if is_diversity(m)}
    cfg_gains = {(g["system"], g["diversity"]) for g in pooled["gains"] if g["front"] == "cfg"}
    assert {(c, v) for c in candidates for v in views} <= cfg_gains
    assert {g["system"] for g in pooled["gains"]} <= candidates
    merge = next(
        g
        for g in pooled["gains"]
        if (g["system"], g["front"], g["diversity"]) == ("merge lambda=0.25", "cfg", "attribute_diversity")
    )
    assert merge["low"] < merge["mean"] < merge["high"]
    means = pooled["means"]["base"]["attribute_adherence"]
    assert means["n"] == 3 * (B - 3) and means["mean"] == pytest.approx(0.50, abs=1e-5)


def test_a_system_missing_from_one_run_is_dropped(tmp_path: Path) -> None:
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", drop=("offline (beta=0)",))
    result = pooled_claims([tmp_path / "a", tmp_path / "b"], num_resamples=100)
    assert result["dropped_systems"] == ["offline (beta=0)"]
    assert "offline (beta=0)" not in result["systems"]
    c5 = next(c for c in result["pooled"]["claims"] if c["id"] == "C5")
    assert c5["verdict"] == "not run"


def test_runs_of_different_teachers_are_not_pooled(tmp_path: Path) -> None:
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    path = tmp_path / "b" / "evaluate" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["measures"]["teacher_gamma"] = 5.0
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="different CFG scales"):
        pooled_claims([tmp_path / "a", tmp_path / "b"], num_resamples=50)
