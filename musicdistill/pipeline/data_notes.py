"""The report's "Data, oracle and sample size" section: what the run trained and judged on.

Read from the run folder only: the ``data`` stage's counts (files, windows, clips and captions per
split), the oracle's ``model.json`` (its heads, how they were chosen, held-out accuracy against chance,
see :mod:`musicdistill.judges.oracle_checks`) and the evaluation's prompt count against the one
``evaluate.num_prompts`` asked for, with the width of the 95 % intervals that count gives.
"""

from __future__ import annotations

import html
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

#: metrics whose interval widths are quoted, in order of preference for "quality"
QUALITY_KEYS = ("attribute_adherence", "text_adherence")
DIVERSITY_KEY = "diversity_independent"
SPLIT_ORDER = ("train", "valid", "test")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _json(path: Path) -> Any | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); the report leaves it out", path, err)
        return None


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _summary(run_dir: Path, stage: str) -> dict[str, Any]:
    marker = _json(run_dir / stage / "stage.json")
    summary = marker.get("summary") if isinstance(marker, dict) else None
    return summary if isinstance(summary, dict) else {}


def data_counts_html(summary: dict[str, Any], data_cfg: dict[str, Any]) -> str:
    """One paragraph: rows, files, clips (windows), and files/clips/captions per split."""
    if "files" not in summary:
        return '<p class="missing">data: not run</p>'
    duration = data_cfg.get("duration", "?")
    hop = data_cfg.get("window_hop") or duration
    last = data_cfg.get("last_window", "drop")
    found = summary.get("splits") or {}
    order = [s for s in SPLIT_ORDER if s in found] + [s for s in found if s not in SPLIT_ORDER]
    splits = "; ".join(
        f"{_esc(name)}: {found[name].get('files', 0)} files, {found[name].get('clips', 0)} clips, "
        f"{found[name].get('captions', 0)} captions"
        for name in order
    )
    return (
        f'<p class="meta">data: {summary.get("rows", "?")} manifest rows, {summary.get("files", "?")} files, '
        f"cut into {summary.get('clips', '?')} clips of {_esc(duration)} s (windows {_esc(hop)} s apart, "
        f"last partial window: {_esc(last)}); {summary.get('usable', '?')} usable "
        f"({_esc(summary.get('seconds', '?'))} s of audio). {splits}.</p>"
    )


def _percent(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "&ndash;"


def oracle_html(model: dict[str, Any] | None, judges: dict[str, Any]) -> str:
    """The oracle's heads: how they were chosen, their held-out accuracy against chance, skipped attributes."""
    if not isinstance(model, dict):
        oracle = judges.get("oracle") if isinstance(judges.get("oracle"), dict) else {}
        notes = "; ".join(_esc(n) for n in oracle.get("notes", []))
        why = f" ({notes})" if notes else ""
        return (
            f'<p class="meta">oracle: none{why}; quality is text adherence, attribute adherence is not '
            "measured.</p>"
        )
    metrics = model.get("metrics") or {}
    choice = metrics.get("head_choice") or {}
    source = {
        "config": "oracle.heads",
        "built-in": "the built-in data's tuned heads",
        "data": "chosen from the data's attributes",
    }.get(choice.get("source"), "oracle.heads")
    recon = (metrics.get("accuracy") or {}).get("recon") or {}
    rows = []
    for head in metrics.get("heads") or []:
        for check in head.get("checks") or []:
            flag = {True: "at chance: not used for claims", False: "above chance", None: "not measured"}[
                check.get("at_chance")
            ]
            css = ' class="fails"' if check.get("at_chance") is not False else ""
            rows.append(
                f"<tr{css}><td>{_esc(head.get('name'))}</td><td>{_esc(check.get('attribute'))}</td>"
                f'<td class="num">{_esc(head.get("classes"))}</td>'
                f'<td class="num">{_percent(check.get("accuracy"))}</td>'
                f'<td class="num">{_percent(recon.get(check.get("attribute")))}</td>'
                f'<td class="num">{_percent(check.get("chance"))}</td>'
                f'<td class="num">{check.get("held_out_clips", 0)} / {check.get("held_out_files", 0)}</td>'
                f"<td>{flag}</td></tr>"
            )
    notes = "".join(f"<li>{_esc(n)}</li>" for n in choice.get("notes") or [])
    return (
        f'<p class="meta">oracle: {len(metrics.get("heads") or [])} heads ({_esc(source)}), trained on '
        f"{_esc(metrics.get('train_clips', '?'))} clips. Chance = the share of the most frequent held-out "
        "value; a head is at chance unless its accuracy clears chance by a one-sided 95 % margin counted "
        "over held-out files.</p>"
        "<table><tr><th>head</th><th>attribute</th><th>classes</th><th>held-out accuracy</th>"
        "<th>on codec reconstructions</th><th>chance</th><th>held-out clips / files</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
        + (f'<p class="meta">attributes not learned:</p><ul>{notes}</ul>' if notes else "")
    )


def interval_width(metrics: dict[str, Any], key: str) -> float | None:
    """The median width (high - low) of ``key``'s 95 % intervals over the evaluated systems."""
    widths = []
    for system in (metrics.get("systems") or {}).values():
        m = (system.get("metrics") or {}).get(key) or {}
        if isinstance(m.get("low"), (int, float)) and isinstance(m.get("high"), (int, float)):
            widths.append(float(m["high"]) - float(m["low"]))
    return statistics.median(widths) if widths else None


def sample_size_html(metrics: dict[str, Any] | None, evaluate_cfg: dict[str, Any]) -> str:
    """How many held-out prompts the evaluation used against how many it asked for, and the interval
    widths that gives."""
    if not isinstance(metrics, dict):
        return '<p class="missing">sample size: evaluation not run</p>'
    used = metrics.get("num_prompts")
    asked = evaluate_cfg.get("num_prompts", used)
    split = evaluate_cfg.get("split", "test")
    widths = []
    for key in (
        next((k for k in QUALITY_KEYS if interval_width(metrics, k) is not None), None),
        DIVERSITY_KEY,
    ):
        width = interval_width(metrics, key) if key else None
        if width is not None:
            widths.append(f"{key.replace('_', ' ')} &plusmn;{width / 2:.3g} (width {width:.3g})")
    spread = (
        "; the 95 % intervals over prompts are, as a median over systems: " + ", ".join(widths)
        if widths
        else ""
    )
    if isinstance(used, int) and isinstance(asked, int) and used < asked:
        return (
            f'<p class="meta fails"><b>small data</b>: the {_esc(split)} split has only {used} distinct '
            f"captions, so the evaluation used {used} prompts, not the {asked} evaluate.num_prompts asks "
            f"for{spread}. A difference between systems smaller than about that width is not resolved; "
            "more distinct captions in the held-out split narrow it (roughly as 1/sqrt(prompts)).</p>"
        )
    return f'<p class="meta">sample size: {_esc(used)} held-out prompts from the {_esc(split)} split{spread}.</p>'


def data_section(run_dir: Path) -> str:
    """The whole section for the run in ``run_dir`` (nothing missing raises)."""
    config = _config(run_dir)
    metrics = _json(run_dir / "evaluate" / "metrics.json")
    judges = _summary(run_dir, "judges")
    trained = (
        (judges.get("oracle") or {}).get("trained", True) if isinstance(judges.get("oracle"), dict) else True
    )
    model = _json(run_dir / "oracle" / "model.json") if trained else None  # not a stale one
    return (
        "<h2>Data, oracle and sample size</h2>"
        + data_counts_html(_summary(run_dir, "data"), config.get("data") or {})
        + oracle_html(model, judges)
        + sample_size_html(metrics, config.get("evaluate") or {})
    )
