"""The claims C1-C5 on synthetic metrics, and the self-contained HTML report on a fake run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from musicdistill.cli import main
from musicdistill.evaluation.claims import (
    claim_c1,
    claim_c2,
    claim_c3,
    claim_c4,
    claim_c5,
    final_golden,
    find_roles,
    main_job_claims,
)
from musicdistill.pipeline.report import REPORT_FILE, write_report

GAMMA = 3.0
PROMPT = "a slow organ melody in A minor"


def _m(mean: float, half: float = 0.02) -> dict[str, float]:
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": 8}


def _system(
    checkpoint: str,
    family: str,
    cfg: float,
    q: float,
    div: float,
    div_reward: float,
    temperature: float = 1.0,
    q_half: float = 0.02,
) -> dict[str, Any]:
    return {
        "family": family,
        "checkpoint": f"/runs/x/{checkpoint}",
        "settings": {"cfg_scale": cfg, "temperature": temperature, "top_k": 0, "top_p": 0.0},
        "metrics": {
            "attribute_adherence": _m(q, q_half),
            "text_adherence": _m(0.3),
            "diversity_independent": _m(div),
            "diversity_reward": _m(div_reward),
            "vendi_independent": _m(1.5),
            "frechet_independent": {"mean": 2.0},
        },
        "cost": {"rows_per_sample": 2 if cfg != 1.0 else 1, "seconds": 1.5, "frames_per_s": 100.0},
    }


def metrics_json(
    *,
    base_q: float = 0.50,
    teacher_q: float = 0.70,
    base_div: float = 0.40,
    teacher_div: float = 0.20,
    quality_q: float = 0.68,
    diversity_div: float = 0.35,
    diversity_reward: float = 0.30,
    merge_q: float = 0.69,
    merge_div: float = 0.25,
    cfg_scales: tuple[float, ...] = (1.5, GAMMA, 5.0),
) -> dict[str, Any]:
    """A metrics.json shaped like the main job's (stages.main_job_systems), every claim holding by default."""
    systems = {
        "base": _system("base", "base, temperature", 1.0, base_q, base_div, 0.25),
        "base T=0.7": _system("base", "base, temperature", 1.0, base_q, 0.3, 0.2, temperature=0.7),
    }
    for g in cfg_scales:
        q = teacher_q if g == GAMMA else teacher_q - 0.05
        systems[f"base CFG {g:g}"] = _system("base", "base + CFG", g, q, teacher_div, 0.1)
    systems["quality (beta=0)"] = _system("quality", "distilled", 1.0, quality_q, 0.21, 0.12)
    systems["diversity (beta=15)"] = _system(
        "diversity", "distilled", 1.0, 0.55, diversity_div, diversity_reward
    )
    systems["merge lambda=0.25"] = _system("merges/lam_0.25", "merged", 1.0, merge_q, merge_div, 0.15)
    systems["merge lambda=0.5"] = _system("merges/lam_0.50", "merged", 1.0, 0.60, 0.30, 0.2)
    return {
        "num_prompts": 8,
        "samples_per_prompt": 2,
        "seed": 0,
        "duration": 1.0,
        "sample_rate": 16000,
        "systems": systems,
        "prompts": [PROMPT],
    }


def _claims(metrics: dict[str, Any]) -> dict[str, Any]:
    return {c.id: c for c in main_job_claims(metrics, GAMMA)}


# --------------------------------------------------------------------------------------------
# Roles and claims
# --------------------------------------------------------------------------------------------


def test_roles_pick_the_teacher_at_distill_gamma_and_the_unguided_base() -> None:
    roles = find_roles(metrics_json()["systems"], GAMMA)
    assert roles.teacher == "base CFG 3"
    assert roles.base == "base"
    assert (roles.quality, roles.diversity) == ("quality (beta=0)", "diversity (beta=15)")
    assert roles.merges == ("merge lambda=0.25", "merge lambda=0.5")
    assert find_roles(metrics_json()["systems"], 5.0).teacher == "base CFG 5"


def test_every_claim_holds_on_metrics_built_to_satisfy_them() -> None:
    claims = _claims(metrics_json())
    assert [claims[c].holds for c in ("C1", "C2", "C3", "C4")] == [True, True, True, True]
    assert claims["C5"].holds is None and "not run" in claims["C5"].explanation
    assert "disjoint" in claims["C1"].explanation
    assert "merge lambda=0.25" in claims["C4"].explanation


def test_c1_fails_when_cfg_does_not_raise_quality_and_reports_overlap() -> None:
    claim = claim_c1(metrics_json(teacher_q=0.49)["systems"], find_roles(metrics_json()["systems"], GAMMA))
    assert claim.holds is False
    assert "does not rise" in claim.explanation and "overlap" in claim.explanation
    values = {n.label: n.value for n in claim.numbers}
    assert values["base CFG 3: attribute adherence"] == pytest.approx(0.49)
    assert values["base: attribute adherence"] == pytest.approx(0.50)


def test_c1_fails_when_cfg_does_not_lower_diversity() -> None:
    systems = metrics_json(teacher_div=0.45)["systems"]
    claim = claim_c1(systems, find_roles(systems, GAMMA))
    assert claim.holds is False and "does not fall" in claim.explanation


@pytest.mark.parametrize(("quality_q", "holds"), [(0.666, True), (0.664, False), (0.50, False)])
def test_c2_needs_95_percent_of_the_teachers_quality(quality_q: float, holds: bool) -> None:
    systems = metrics_json(quality_q=quality_q)["systems"]
    claim = claim_c2(systems, find_roles(systems, GAMMA))
    assert claim.holds is holds
    ratio = next(n.value for n in claim.numbers if n.label.startswith("quality ratio"))
    assert ratio == pytest.approx(quality_q / 0.70)


def test_c2_fails_when_the_student_is_not_half_the_cost() -> None:
    systems = metrics_json(quality_q=0.9)["systems"]
    systems["quality (beta=0)"]["cost"]["rows_per_sample"] = 2
    claim = claim_c2(systems, find_roles(systems, GAMMA))
    assert claim.holds is False and "more than half" in claim.explanation


def test_c3_needs_the_independent_embedder_too_not_only_the_reward_one() -> None:
    systems = metrics_json(diversity_div=0.19, diversity_reward=0.9)["systems"]
    claim = claim_c3(systems, find_roles(systems, GAMMA))
    assert claim.holds is False
    assert "diversity independent: 0.19 vs the teacher's 0.2 (not higher" in claim.explanation


def test_c4_fails_when_no_merge_keeps_the_teachers_quality() -> None:
    systems = metrics_json(merge_q=0.67)["systems"]  # below the teacher's interval low, 0.68
    claim = claim_c4(systems, find_roles(systems, GAMMA))
    assert claim.holds is False
    assert "no merged model meets both" in claim.explanation
    assert "merge lambda=0.25: quality 0.67 < 0.68" in claim.explanation


def test_c4_fails_when_merges_are_less_diverse_than_the_teacher() -> None:
    systems = metrics_json(merge_div=0.2)["systems"]
    systems["merge lambda=0.5"]["metrics"]["diversity_independent"] = _m(0.1)
    assert claim_c4(systems, find_roles(systems, GAMMA)).holds is False


def test_c5_compares_the_final_golden_metrics() -> None:
    rows = [{"step": 0, "eval_golden": 0.9}, {"step": 1, "kl": 0.1}, {"step": 2, "eval_golden": 0.6}]
    assert final_golden(rows) == pytest.approx(0.6)
    assert final_golden([{"step": 1, "kl": 0.1}]) is None
    assert claim_c5(0.6, {"offline": 0.6}).holds is True
    failed = claim_c5(0.55, {"offline": 0.6})
    assert failed.holds is False and "below offline" in failed.explanation
    assert claim_c5(0.6, {}).holds is None
    assert claim_c5(None, {"offline": 0.6}).holds is None


def test_claims_are_not_run_without_metrics_or_without_a_teacher() -> None:
    assert all(c.holds is None for c in main_job_claims(None, GAMMA))
    claims = _claims(metrics_json(cfg_scales=(1.5, 5.0)))  # distill.gamma = 3 not evaluated
    for cid in ("C1", "C2", "C3", "C4"):
        assert claims[cid].holds is None and "distill.gamma" in claims[cid].explanation
        assert claims[cid].verdict == "not run"


def test_quality_falls_back_to_text_adherence_without_an_oracle() -> None:
    metrics = metrics_json()
    for s in metrics["systems"].values():
        del s["metrics"]["attribute_adherence"]
    claim = _claims(metrics)["C1"]
    assert "text_adherence" in claim.explanation
    assert claim.holds is False  # every system has text adherence 0.3: CFG does not raise it


# --------------------------------------------------------------------------------------------
# The HTML report
# --------------------------------------------------------------------------------------------


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def fake_run(root: Path) -> Path:
    """A run folder with pretraining and quality histories, metrics, one prompt's samples; no diversity run."""
    run = root / "fake"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "fake", "distill": {"gamma": GAMMA}}))
    _jsonl(
        run / "base" / "history.jsonl",
        [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 5)]
        + [{"step": 5, "loss": 2.5, "val_loss": 2.6, "val_loss_null": 2.8}],
    )
    _jsonl(
        run / "quality" / "history.jsonl",
        [
            {"step": 0, "eval_teacher_kl": 0.2, "eval_golden": 0.5},
            {"step": 1, "kl": 0.2, "entropy": 3.0, "reward_mean": 0.1, "reward_std": 0.02},
            {"step": 2, "kl": 0.1, "entropy": 2.9, "eval_golden": 0.6},
        ],
    )
    metrics = metrics_json()
    (run / "evaluate").mkdir()
    (run / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    (run / "evaluate" / "stage.json").write_text(
        json.dumps({"stage": "evaluate", "seconds": 4.2, "finished": "2025-01-01T00:00:00"})
    )
    for name in metrics["systems"]:
        _wav(run / "evaluate" / "samples" / name / "p000_s0.wav")
    (run / "timings.json").write_text(json.dumps({"evaluate": {"skipped": False, "seconds": 4.2}}))
    return run


def test_write_report_is_one_self_contained_page(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    path = write_report(run)
    assert path == run / REPORT_FILE
    assert sorted(p.name for p in run.iterdir() if p.is_file()) == [
        "config.yaml",
        REPORT_FILE,
        "timings.json",
    ]
    page = path.read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert links and all(link.startswith("data:") for link in links)
    assert not re.search(r"(?:src|href)\s*=\s*'", page) and "url(" not in page
    claims_table = page[page.index('<table id="claims">') :]
    claims_table = claims_table[: claims_table.index("</table>")]
    for cid in ("C1", "C2", "C3", "C4", "C5"):
        assert f"<b>{cid}</b>" in claims_table
    assert page.index('id="claims"') < page.index("<h2>Metrics</h2>")
    assert claims_table.count("<b>holds</b>") == 4 and "<b>not run</b>" in claims_table
    assert len(re.findall(r'<audio controls preload="none" src="data:audio/(?:ogg|wav);base64,', page)) == 9
    assert PROMPT in page
    assert (
        page.count('src="data:image/png;base64,') == 2
    )  # pretraining and distillation curves; no pareto.png
    assert "0.7<br><small>[0.68, 0.72]</small>" in page  # the teacher's attribute adherence with its interval
    timings = page[page.index("<h2>Stage timings</h2>") :]
    assert (
        "<td>evaluate</td>" in timings
        and '<td>diversity</td><td colspan="3" class="missing">not run' in timings
    )


def test_write_report_on_an_empty_run_shows_not_run(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.yaml").write_text("name: empty\n")
    _jsonl(run / "base" / "history.jsonl", [])
    (run / "base" / "history.jsonl").write_text(
        '{"step": 1, "loss": 3.0}\n{"step": 2, "lo'
    )  # torn by a crash
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("<b>not run</b>") == 5
    assert '<h3>Pretraining</h3><p class="missing">not run</p>' in page
    for section in ("Quality against diversity", "Metrics", "Listen"):
        after = page[page.index(f"<h2>{section}</h2>") :]
        assert after[len(section) + 9 :].startswith('<p class="missing">not run</p>'), section


def test_write_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "missing")


def test_report_command_writes_the_page_and_lists_the_verdicts(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "C1: holds" in out and "C5: not run" in out and f"report: {run / REPORT_FILE}" in out
    assert (run / REPORT_FILE).is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize(("offline_golden", "verdict"), [(0.55, "holds"), (0.7, "does not hold")])
def test_c5_finds_an_offline_run_by_its_provenance(
    tmp_path: Path, offline_golden: float, verdict: str
) -> None:
    from musicdistill.pipeline.report import run_claims

    run = fake_run(tmp_path)  # the on-policy quality run ends with golden 0.6
    offline = run / "quality_offline"
    _jsonl(offline / "history.jsonl", [{"step": 2, "kl": 0.1, "eval_golden": offline_golden}])
    (offline / "provenance.json").write_text(
        json.dumps({"kind": "distilled", "beta": 0.0, "mode": "teacher"})
    )
    c5 = {c.id: c for c in run_claims(run)}["C5"]
    assert c5.verdict == verdict
    assert [n.value for n in c5.numbers] == [pytest.approx(0.6), pytest.approx(offline_golden)]
