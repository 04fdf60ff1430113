"""The report says what the data gave: clips per split, the oracle's heads against chance, and how
many held-out prompts the evaluation could use with the interval width that buys."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from musicdistill.pipeline.data_notes import data_section, interval_width, sample_size_html
from musicdistill.pipeline.report import render_report


def _write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def _metrics(num_prompts: int) -> dict:
    def m(low: float, high: float) -> dict:
        return {"mean": (low + high) / 2, "low": low, "high": high}

    return {
        "num_prompts": num_prompts,
        "samples_per_prompt": 4,
        "systems": {
            "base": {"metrics": {"attribute_adherence": m(0.5, 0.9), "diversity_independent": m(0.1, 0.2)}},
            "quality": {
                "metrics": {"attribute_adherence": m(0.6, 0.8), "diversity_independent": m(0.1, 0.3)}
            },
            "merge": {"metrics": {"attribute_adherence": m(0.4, 0.7), "diversity_independent": m(0.2, 0.3)}},
        },
    }


def _run(tmp_path: Path, num_prompts: int) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "data": {"duration": 4.0, "window_hop": 0.0, "last_window": "drop"},
                "evaluate": {"num_prompts": 48, "split": "test"},
            }
        )
    )
    _write(
        run / "data" / "stage.json",
        {
            "summary": {
                "rows": 12,
                "files": 12,
                "clips": 400,
                "usable": 398,
                "seconds": 1592.0,
                "splits": {  # stage.json keeps its keys sorted
                    "test": {"files": 3, "clips": 98, "captions": 3},
                    "train": {"files": 9, "clips": 300, "captions": 9},
                },
            }
        },
    )
    _write(
        run / "oracle" / "model.json",
        {
            "metrics": {
                "train_clips": 300,
                "accuracy": {"real": {"instrument": 1.0, "mood": 0.4}, "recon": {"instrument": 0.97}},
                "head_choice": {
                    "heads": ["instrument", "mood"],
                    "source": "data",
                    "notes": ["'bpm' skipped: numeric; the oracle learns its classes 'bpm_class' instead"],
                },
                "heads": [
                    {
                        "name": "instrument",
                        "attributes": ["instrument"],
                        "classes": 3,
                        "checks": [
                            {
                                "attribute": "instrument",
                                "accuracy": 1.0,
                                "chance": 0.34,
                                "held_out_clips": 98,
                                "held_out_files": 3,
                                "at_chance": False,
                            }
                        ],
                        "at_chance": False,
                    },
                    {
                        "name": "mood",
                        "attributes": ["mood"],
                        "classes": 2,
                        "checks": [
                            {
                                "attribute": "mood",
                                "accuracy": 0.4,
                                "chance": 0.66,
                                "held_out_clips": 98,
                                "held_out_files": 3,
                                "at_chance": True,
                            }
                        ],
                        "at_chance": True,
                    },
                ],
            }
        },
    )
    _write(run / "evaluate" / "metrics.json", _metrics(num_prompts))
    return run


def test_the_section_gives_counts_heads_and_the_small_sample(tmp_path: Path) -> None:
    html = data_section(_run(tmp_path, num_prompts=3))
    assert "12 files, cut into 400 clips of 4.0 s (windows 4.0 s apart, last partial window: drop)" in html
    assert "train: 9 files, 300 clips, 9 captions; test: 3 files, 98 clips, 3 captions" in html
    assert "2 heads (chosen from the data&#x27;s attributes)" in html
    assert "<td>mood</td>" in html and "at chance: not used for claims" in html
    assert html.count("above chance") == 1 and '<td class="num">0.97</td>' in html
    assert "&#x27;bpm&#x27; skipped" in html
    assert "only 3 distinct captions, so the evaluation used 3 prompts, not the 48" in html
    # median interval widths over the three systems: adherence 0.3, diversity 0.1
    assert (
        "attribute adherence &plusmn;0.15 (width 0.3)" in html
        and "diversity independent &plusmn;0.05" in html
    )


def test_enough_prompts_and_missing_parts() -> None:
    metrics = _metrics(48)
    assert abs(interval_width(metrics, "attribute_adherence") - 0.3) < 1e-9
    assert interval_width(metrics, "text_adherence") is None
    html = sample_size_html(metrics, {"num_prompts": 48, "split": "test"})
    assert "small data" not in html and "48 held-out prompts from the test split" in html
    assert "not run" in sample_size_html(None, {})


def test_no_oracle_and_the_whole_report(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.yaml").write_text("name: bare\n")
    _write(
        run / "judges" / "stage.json",
        {"summary": {"oracle": {"trained": False, "notes": ["'mode' skipped: 1 value"]}}},
    )
    _write(run / "oracle" / "model.json", {"metrics": {"heads": [{"name": "stale"}]}})  # from an older run
    html = data_section(run)
    assert "data: not run" in html and "oracle: none (&#x27;mode&#x27; skipped: 1 value)" in html
    assert "stale" not in html
    assert "Data, oracle and sample size" in render_report(run)
