"""The main job's report: one self-contained HTML page, ``<run>/report.html``.

Sections, in order: the claims table (C1-C6 as the evaluate stage decided them on paired per-prompt
statistics, :mod:`musicdistill.evaluation.claims`: each claim's verdict, the paired differences with
their 95 % intervals and margins, the measures used), the fronts plot with the gains at matched
quality and their table, the metrics table (mean [95 % interval] per system), training curves
(pretraining losses; distillation KL, reward, entropy, golden metric), audio players (the same
prompts across systems, with the prompts' text), the settings behind the result and stage timings.
Images are embedded as base64 PNG data URIs and audio as base64 OGG/Vorbis (WAV when the encoder is
unavailable), so the file can be mailed or archived alone. A stage that has not run shows as "not
run"; nothing missing raises.

The run folder is read by :mod:`~musicdistill.pipeline.report_inputs`, the result sections are
:mod:`~musicdistill.pipeline.report_sections` and the data notes
:mod:`~musicdistill.pipeline.data_notes`; this module holds the header, the settings, the timings
and the page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from musicdistill.config import key_doc
from musicdistill.pipeline.data_notes import data_section
from musicdistill.pipeline.report_html import esc
from musicdistill.pipeline.report_inputs import (
    demo_command,
    machine_line,
    read_json,
    read_metrics,
    read_run_config,
    run_claims,
    run_roles,
)
from musicdistill.pipeline.report_sections import (
    audio_section,
    claims_section,
    curves_section,
    metrics_section,
    pareto_section,
)
from musicdistill.storage.atomic import atomic_write_text

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; margin: 0.1em 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.num small { color: #666; } .scroll { overflow-x: auto; }
#claims { width: 100%; } #claims td:nth-child(2) { width: 22%; } #claims td:nth-child(3) { white-space: nowrap; }
#claims td:nth-child(4) { width: 42%; font-size: 0.9em; } #claims td:nth-child(5) { font-size: 0.9em; }
.holds { background: #dff3df; } .fails { background: #f8dcdc; } .unresolved { background: #fdf3d0; }
.contested { background: #eadcf5; }
.notrun { background: #eee; color: #666; } .beside { color: #666; }
#claims ul { margin: 0; padding-left: 1.1em; } #claims li { margin-bottom: 0.25em; }
.missing { color: #888; font-style: italic; } .role { font-size: 0.8em; color: #555; }
img { max-width: 100%; } audio { width: 220px; height: 32px; } .prompt { font-style: italic; }
"""


def header_section(run_dir: Path, config: dict[str, Any]) -> str:
    name = config.get("name") or run_dir.name
    evaluated = (read_json(run_dir / "evaluate" / "stage.json") or {}).get("finished", "not run")
    return (
        f"<h1>musicdistill report: {esc(name)}</h1>"
        f'<p class="meta">config: <b>{esc(name)}</b> ({esc(run_dir / "config.yaml")}); '
        f"evaluated: {esc(evaluated)}; report written {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"
        f'<p class="meta">machine: {esc(machine_line())}</p>'
        f'<p class="meta">demo on these checkpoints: <code>{esc(demo_command(run_dir) or "not run")}</code></p>'
    )


#: the settings that decide what the students become and how finely they are judged, in the report's order
RESULT_SETTINGS = (
    "distill.gamma",
    "run.students",
    "distill.steps",
    "distill.prompts_per_step",
    "distill.group_size",
    "distill.lr",
    "run.merges",
    "distill.advantage_norm",
    "embed.pitch_jitter",
    "embed.eq_jitter",
    "evaluate.num_prompts",
    "evaluate.samples_per_prompt",
    "evaluate.seed",
    "distill.seed",
)


def _setting(config: dict[str, Any], key: str) -> Any:
    """A dotted key's value in the run's config mapping; None when absent."""
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _shown(value: Any) -> str:
    """A setting as the YAML a user writes: ``{lr: 0.0001, divergence: jeffreys}``, ``[1.0, 2.0]``, ``3.0``."""
    if value is None:
        return "not in this run's config"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def settings_section(config: dict[str, Any]) -> str:
    """The run's values of :data:`RESULT_SETTINGS`, each with its documentation, and where the
    defaults' trials are recorded."""
    rows = "".join(
        f"<tr><td><code>{esc(key)}</code></td><td>{esc(_shown(_setting(config, key)))}</td><td>{esc(key_doc(key))}</td></tr>"
        for key in RESULT_SETTINGS
    )
    return (
        "<h2>Settings behind the result</h2>"
        "<p>The settings that shape the students and the evidence, as this run used them. The defaults "
        "(<code>configs/default.yaml</code>, whose comments give each one's reason) were chosen by trials "
        "judged with rules written before they ran: every trial, with its numbers and the rule, is in "
        "<code>bench/RESULTS.md</code> (sections on the diversity-reward trials of issue 16).</p>"
        "<table><tr><th>setting</th><th>this run</th><th>meaning</th></tr>" + rows + "</table>"
    )


def timings_section(run_dir: Path, stage_names: Sequence[str] | None = None) -> str:
    """Each stage's time and state; ``stage_names`` in run order (default: those the last run timed)."""
    last = read_json(run_dir / "timings.json") or {}
    names = list(stage_names) if stage_names is not None else [n for n in last if isinstance(last[n], dict)]
    rows = []
    for name in names:
        if name == "report":
            continue
        marker = read_json(run_dir / name / "stage.json")
        if marker is None:
            rows.append(f'<tr><td>{esc(name)}</td><td colspan="3" class="missing">not run</td></tr>')
            continue
        latest = last.get(name)
        state = (
            "not part of it"
            if latest is None
            else ("skipped (up to date)" if latest.get("skipped") else "ran")
        )
        rows.append(
            f'<tr><td>{esc(name)}</td><td class="num">{marker.get("seconds", 0):.1f}</td>'
            f"<td>{esc(marker.get('finished', ''))}</td><td>{esc(state)}</td></tr>"
        )
    return (
        "<h2>Stage timings</h2><table><tr><th>stage</th><th>seconds (when it last ran)</th><th>finished</th>"
        "<th>in the latest invocation</th></tr>" + "".join(rows) + "</table>"
    )


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def render_report(run_dir: Path, stage_names: Sequence[str] | None = None) -> str:
    """The whole HTML page for ``run_dir``; ``stage_names`` orders the timings table."""
    config = read_run_config(run_dir)
    metrics = read_metrics(run_dir)
    roles = run_roles(metrics, config)
    body = "".join(
        (
            header_section(run_dir, config),
            claims_section(run_claims(run_dir), roles, metrics),
            pareto_section(run_dir, metrics),
            metrics_section(metrics, roles),
            data_section(run_dir),
            curves_section(run_dir),
            audio_section(run_dir, metrics),
            settings_section(config),
            timings_section(run_dir, stage_names),
        )
    )
    title = f"musicdistill report: {config.get('name') or run_dir.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def write_report(run_dir: Path, stage_names: Sequence[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path (``stage_names``: see :func:`timings_section`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        what = "has no config.yaml" if run_dir.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"run folder {run_dir} {what}; pass the folder a 'musicdistill run' wrote, "
            "<runs_dir>/<name> (e.g. runs/default)"
        )
    path = atomic_write_text(run_dir / REPORT_FILE, render_report(run_dir, stage_names))
    log.info("report: %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
