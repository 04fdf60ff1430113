"""Replication: every seed changed, seeds checked, one run per seed (resumable), the pooled report and the
``musicdistill replicate`` command, on synthetic run folders (no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from musicdistill.cli import main
from musicdistill.config import Config, config_keys, load_config
from musicdistill.pipeline.replicate import (
    DEVELOPMENT_SEEDS_FROM,
    analyze,
    check_seeds,
    parse_seeds,
    replicate,
    replicate_dir,
    reseed,
    seed_kind,
)
from musicdistill.pipeline.runner import Stage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from test_pooled import write_run  # noqa: E402

R = 200


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _cfg(tmp_path: Path, *overrides: str) -> Config:
    return load_config(None, [f"runs_dir={tmp_path}", "name=syn", f"evaluate.bootstrap={R}", *overrides])


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def test_reseed_sets_every_seed_and_keeps_the_shipped_base(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "pretrain.from_dir=assets/base", "codec.from_dir=assets/codec")
    cfg.run.students["diversity"]["distill"] = {"seed": 5, "lr": 1e-4}
    seed_keys = [k for k in config_keys() if k == "seed" or k.endswith(".seed")]  # the schema's own list
    assert {"data.seed", "distill.seed", "evaluate.seed", "embed.seed"} <= set(seed_keys)
    new = reseed(cfg, 7)
    for key in seed_keys:
        assert _get(new, key) == 7, key
        assert _get(cfg, key) == 0, f"{key}: the original config changed"
    assert new.run.students["diversity"]["distill"] == {"seed": 7, "lr": 1e-4}
    assert cfg.run.students["diversity"]["distill"]["seed"] == 5
    assert new.name == "syn-seed7" and new.run_dir == tmp_path / "syn-seed7"
    assert (new.pretrain.from_dir, new.codec.from_dir) == ("assets/base", "assets/codec")
    # nothing but the seeds and the name differs
    new.name = cfg.name
    new.run.students = cfg.run.students
    for key in config_keys():
        if key not in seed_keys and key != "name":
            assert _get(new, key) == _get(cfg, key), key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "at least two distinct seeds"),
        ("", "at least two distinct seeds"),
        ("2,2", r"\[2\] appear more than once"),
        ("2,-1", "integer >= 0"),
        ("2,x", "'x' is not an integer"),
        ("2,3.5", "'3.5' is not an integer"),
    ],
)
def test_bad_seeds_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_seeds_are_parsed_and_labelled() -> None:
    assert parse_seeds(" 4, 2,3 ") == [4, 2, 3]
    assert check_seeds([100, 101]) == [100, 101]
    assert (
        seed_kind(DEVELOPMENT_SEEDS_FROM) == "development"
        and seed_kind(DEVELOPMENT_SEEDS_FROM - 1) == "reporting"
    )


# --------------------------------------------------------------------------------------------
# Running the seeds
# --------------------------------------------------------------------------------------------


def _fake_main_job(calls: list[tuple[str, int, int]]):
    """Stages of one seed's run that write a synthetic evaluation (whose merge depends on the seed)."""

    def stages_of(cfg: Config) -> list[Stage]:
        def evaluate(cfg: Config, run_dir: Path, out: Path, resume: bool) -> dict[str, Any]:
            calls.append((cfg.name, cfg.data.seed, cfg.evaluate.seed))
            write_run(
                run_dir,
                {"merge lambda=0.5": {"primary": 0.40 + 0.01 * cfg.data.seed}},
                evaluate_seed=cfg.evaluate.seed,
            )
            return {}

        return [Stage("evaluate", evaluate, reads=("data", "evaluate"))]

    return stages_of


def test_replicate_runs_each_seed_once_and_resumes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    calls: list[tuple[str, int, int]] = []
    result = replicate(cfg, [3, 2], stages_of=_fake_main_job(calls))
    assert calls == [("syn-seed3", 3, 3), ("syn-seed2", 2, 2)]
    out = replicate_dir(cfg, [3, 2])
    assert out == tmp_path / "syn-replicate-3_2"
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"3", "2"} and timings["3"]["stages_run"] == ["evaluate"]
    rows = result["replicate"]["seeds"]
    assert [(r["seed"], r["kind"]) for r in rows] == [(3, "reporting"), (2, "reporting")]
    assert all(isinstance(r["wall_s"], float) for r in rows)
    assert result["runs"] == ["syn-seed3", "syn-seed2"]
    # a second pass: both runs are up to date, nothing trains, the first pass's times stay
    calls.clear()
    again = replicate(cfg, [3, 2], stages_of=_fake_main_job(calls))
    assert calls == []
    assert json.loads((out / "timings.json").read_text()) == timings
    assert [c["verdict"] for c in again["pooled"]["claims"]] == [
        c["verdict"] for c in result["pooled"]["claims"]
    ]
    # --force reruns the stage in every seed
    replicate(cfg, [3, 2], force=("evaluate",), stages_of=_fake_main_job(calls))
    assert [c[0] for c in calls] == ["syn-seed3", "syn-seed2"]


def test_analyze_writes_the_report_and_names_a_missing_run(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    write_run(tmp_path / "syn-seed100")
    with pytest.raises(FileNotFoundError, match="syn-seed101.*--seeds 100,101"):
        analyze(cfg, [100, 101])
    write_run(tmp_path / "syn-seed101", {"merge lambda=0.25": {"primary": 0.40}}, evaluate_seed=101)
    result = analyze(cfg, [100, 101])
    out = tmp_path / "syn-replicate-100_101"
    assert json.loads((out / "pooled.json").read_text())["runs"] == ["syn-seed100", "syn-seed101"]
    page = (out / "report.html").read_text()
    md = (out / "pooled.md").read_text()
    assert "<script" not in page
    for text in (page, md):
        assert "seed 100 (development)" in text and "seed 101 (development)" in text
        assert "development seeds" in text and f"R = {R}" in text
        assert "then, within each drawn seed, its prompts with replacement" in text
        assert "Verdicts per seed and pooled" in text and "Pooled gains at matched quality" in text
        assert "merge lambda=0.25" in text and "diversity (beta=15)" in text
    # the seeds' times come from their stage markers when replicate did not run them (none here)
    assert [r["wall_s"] for r in result["replicate"]["seeds"]] == [None, None]
    assert "unknown" in md


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "2"], "at least two distinct seeds"),
        (["--seeds", "2,x"], "'x' is not an integer"),
        (["--seeds", "2,3", "data.seed=4"], "replicate sets every seed"),
        (["--seeds", "2,3", "--analyze-only", "--force", "evaluate"], "give one of them"),
    ],
)
def test_command_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["replicate", f"runs_dir={tmp_path}", *args]) == 2
    assert message in capsys.readouterr().err


def test_command_analyze_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["replicate", f"runs_dir={tmp_path}", "name=syn", f"evaluate.bootstrap={R}"]
    write_run(tmp_path / "syn-seed2")
    assert main([*base, "--seeds", "2,3", "--analyze-only"]) == 2
    err = capsys.readouterr().err
    assert "syn-seed3" in err and "Create them with: musicdistill replicate" in err and "--seeds 2,3" in err
    write_run(tmp_path / "syn-seed3", evaluate_seed=3)
    # overrides may also follow the options
    assert main([*base[:3], "--seeds", "2,3", "--analyze-only", base[3]]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "syn-replicate-2_3"
    assert f"report: {out / 'report.html'}" in printed
    assert "C1: holds" in printed and "C4:" in printed
    for name in ("pooled.json", "report.html", "pooled.md"):
        assert (out / name).is_file()
