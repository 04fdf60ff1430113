"""The self-contained HTML report on fake run folders: the claims as the evaluate stage decided them on paired
statistics (verdict, differences with intervals, margins, the primary measure), the fronts plot and the
gains at matched quality, and older or missing files shown as "not run". The claims' rules themselves are
tested in tests/evaluation/test_claims.py."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from musicdistill.cli import main
from musicdistill.evaluation.pareto import draw_gains, plot_pareto
from musicdistill.pipeline.report import REPORT_FILE, write_report
from musicdistill.pipeline.report_inputs import run_claims

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from synthetic_evidence import GAMMA, metrics_json  # noqa: E402

PROMPT = "a slow organ melody in A minor"
TEACHER, MERGE = "base CFG 3", "merge lambda=0.25"


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16")


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def fake_run(root: Path, metrics: dict[str, Any] | None = None, plot: bool = False) -> Path:
    """A run folder with pretraining and quality histories, metrics, one prompt's samples; no diversity run."""
    run = root / "fake"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "fake",
                "distill": {"gamma": GAMMA},
                "run": {
                    "students": {
                        "quality": {"role": "quality"},
                        "diversity": {"role": "diversity", "distill": {"lr": 0.0001}},
                    }
                },
            },
            sort_keys=False,
        )
    )
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
    metrics = metrics_json() if metrics is None else metrics
    (run / "evaluate").mkdir()
    (run / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    (run / "evaluate" / "stage.json").write_text(
        json.dumps({"stage": "evaluate", "seconds": 4.2, "finished": "2025-01-01T00:00:00"})
    )
    for name, system in metrics["systems"].items():
        _wav(run / "evaluate" / system.get("samples", f"samples/{name}") / "p000_s0.wav")
    if plot:
        plot_pareto(metrics, run / "evaluate" / "pareto.png")
    (run / "timings.json").write_text(json.dumps({"evaluate": {"skipped": False, "seconds": 4.2}}))
    return run


def _claims_table(page: str) -> str:
    table = page[page.index('<table id="claims">') :]
    return table[: table.index("</table>")]


def test_write_report_is_one_self_contained_page(tmp_path: Path) -> None:
    run = fake_run(tmp_path, plot=True)
    path = write_report(run, ["evaluate", "diversity", "report"])
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
    claims = _claims_table(page)
    for cid in ("C1", "C2", "C3", "C4", "C5"):
        assert f"<b>{cid}</b>" in claims
    assert page.index('id="claims"') < page.index("<h2>Metrics</h2>")
    assert claims.count("<b>holds</b>") == 5
    # each claim shows its paired differences with intervals and margins, and the primary measure is named
    assert (
        "attribute adherence: base CFG 3 - base: +0.2000 [" in claims
        and "claimed above 0 -&gt; holds" in claims
    )
    assert "claimed above -0.035" in claims  # C2's non-inferiority margin, -5 % of the teacher's 0.70
    assert "primary independent diversity measure: attribute diversity" in page
    assert len(re.findall(r'<audio controls preload="none" src="data:audio/(?:ogg|wav);base64,', page)) == 10
    assert PROMPT in page
    assert page.count('src="data:image/png;base64,') == 3  # fronts plot, pretraining and distillation curves
    gains = page[page.index("<h3>Diversity gain at matched quality</h3>") :]
    assert f"<td>{MERGE}</td>" in gains and "<b>(primary)</b>" in gains and "100%" in gains
    assert "0.7<br><small>[" in page  # the teacher's attribute adherence with its interval
    settings = page[page.index("<h2>Settings behind the result</h2>") : page.index("<h2>Stage timings</h2>")]
    assert f"<td><code>distill.gamma</code></td><td>{GAMMA}</td>" in settings  # the run's value
    assert (
        "<td><code>run.merges</code></td><td>not in this run&#x27;s config</td>" in settings
    )  # absent from this config
    assert "bench/RESULTS.md" in settings and "CFG scale of the frozen teacher" in settings
    # a mapping is shown as the YAML one writes
    assert (
        "<td><code>run.students</code></td><td>{quality: {role: quality}, diversity: {role: diversity, "
        "distill: {lr: 0.0001}}}</td>" in settings
    )
    timings = page[page.index("<h2>Stage timings</h2>") :]
    assert (
        "<td>evaluate</td>" in timings
        and '<td>diversity</td><td colspan="3" class="missing">not run' in timings
    )


def test_report_shows_fails_and_unresolved_with_their_reasons(tmp_path: Path) -> None:
    failing = metrics_json({TEACHER: {"quality": 0.45}})  # CFG lowers quality
    page = write_report(fake_run(tmp_path / "a", failing)).read_text(encoding="utf-8")
    assert '<tr class="fails"><td><b>C1</b>' in _claims_table(page)
    off_front = metrics_json({MERGE: {"quality": 0.45}})  # the merge is below the CFG front's range
    page = write_report(fake_run(tmp_path / "b", off_front)).read_text(encoding="utf-8")
    claims = _claims_table(page)
    assert '<tr class="fails"><td><b>C4</b>' in claims  # far below the teacher: not non-inferior
    assert "not defined" in claims and "outside the CFG front" in claims
    assert "not defined (outside the front" in page[page.index("<h3>Diversity gain") :]


def test_a_fallback_primary_measure_is_said_in_the_report(tmp_path: Path) -> None:
    page = write_report(fake_run(tmp_path, metrics_json(primary="diversity_independent"))).read_text("utf-8")
    assert "FALLBACK" in page[: page.index('<table id="claims">')]


def test_an_older_metrics_json_renders_with_claims_not_run(tmp_path: Path) -> None:
    """A metrics.json from before the paired statistics: no claims, fronts, gains, roles, samples keys."""
    old = metrics_json()
    for key in ("claims", "fronts", "gains", "roles", "measures", "statistics"):
        del old[key]
    for system in old["systems"].values():
        del system["samples"]
    run = fake_run(tmp_path, old)
    page = write_report(run).read_text(encoding="utf-8")
    claims = _claims_table(page)
    assert claims.count("<b>not run</b>") == 6 and "predates the paired statistics" in claims
    assert "(teacher)" in page  # roles found from the systems and distill.gamma
    assert "<h3>Diversity gain" not in page and "<h2>Metrics</h2>" in page
    assert [c.verdict for c in run_claims(run)] == ["not run"] * 6


def test_write_report_on_an_empty_run_shows_not_run(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    (run / "config.yaml").write_text("name: empty\n")
    _jsonl(run / "base" / "history.jsonl", [])
    (run / "base" / "history.jsonl").write_text(
        '{"step": 1, "loss": 3.0}\n{"step": 2, "lo'
    )  # torn by a crash
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("<b>not run</b>") == 6
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
    run = fake_run(tmp_path, metrics_json({"offline (beta=0)": {"quality": 0.80}}))
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "C1: holds" in out and "C5: fails" in out and f"report: {run / REPORT_FILE}" in out
    assert (run / REPORT_FILE).is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_the_fronts_plot_draws_both_panels(tmp_path: Path) -> None:
    path = plot_pareto(metrics_json(), tmp_path / "pareto.png")
    image = __import__("matplotlib.image", fromlist=["imread"]).imread(path)
    assert image.shape[1] > 1.9 * image.shape[0]  # two panels side by side
    assert path.stat().st_size > 30_000


def test_the_gains_panel_lists_the_systems_off_the_base_sweeps_only() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def gain(system: str, front: str, mean: float) -> dict:
        return {
            "system": system,
            "front": front,
            "diversity": "d",
            "mean": mean,
            "low": mean - 0.01,
            "high": mean + 0.01,
            "defined": math.isfinite(mean),
            "defined_fraction": 1.0,
        }

    report = {
        "fronts": {
            "cfg": {"members": ["base", "base CFG 3"]},
            "temperature": {"members": ["base", "base T=0.7"]},
        },
        "gains": [
            gain("base CFG 3", "temperature", math.nan),
            gain("base T=0.7", "cfg", math.nan),
            gain(MERGE, "cfg", 0.02),
            gain(MERGE, "temperature", math.nan),
        ],
    }
    fig, ax = plt.subplots()
    draw_gains(ax, report, "d")
    assert [t.get_text() for t in ax.get_yticklabels()] == [MERGE]
    plt.close(fig)
