"""The main job's report: one self-contained HTML page, ``<run>/report.html``.

Sections, in order: the claims table (C1-C5 as the evaluate stage decided them on paired per-prompt
statistics, :mod:`musicdistill.evaluation.claims`: each claim's verdict, the paired differences with
their 95 % intervals and margins, the measures used), the fronts plot with the gains at matched
quality and their table, the metrics table (mean [95 % interval] per system), training curves (pretraining
losses; distillation KL, reward, entropy, golden metric), audio players (the same prompts across
systems, with the prompts' text) and stage timings. Images are embedded as base64 PNG data URIs and
audio as base64 OGG/Vorbis (WAV when the encoder is unavailable), so the file can be mailed or
archived alone. A stage that has not run shows as "not run"; nothing missing raises.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import platform
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from musicdistill.config import DistillConfig
from musicdistill.evaluation.claims import Claim, claims_from_metrics
from musicdistill.evaluation.metrics import metric_label
from musicdistill.evaluation.paired import FAILS, HOLDS, UNRESOLVED
from musicdistill.evaluation.roles import Roles, find_roles
from musicdistill.evaluation.systems import slug
from musicdistill.pipeline.data_notes import data_section
from musicdistill.storage.atomic import atomic_write_text
from musicdistill.storage.checkpoint import MODEL_FILE, PROVENANCE_FILE
from musicdistill.storage.history import read_rows

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
AUDIO_PROMPTS = 3
AUDIO_SAMPLES = 2
#: the metrics table's column order: metric keys by prefix (others follow in the order measured)
METRIC_ORDER = (
    "attribute_adherence",
    "text_adherence",
    "attribute_diversity",
    "diversity_",
    "vendi_",
    "frechet_",
)
NOT_RUN = '<p class="missing">not run</p>'

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
.notrun { background: #eee; color: #666; } .beside { color: #666; }
#claims ul { margin: 0; padding-left: 1.1em; } #claims li { margin-bottom: 0.25em; }
.missing { color: #888; font-style: italic; } .role { font-size: 0.8em; color: #555; }
img { max-width: 100%; } audio { width: 220px; height: 32px; } .prompt { font-style: italic; }
"""


# --------------------------------------------------------------------------------------------
# Reading the run folder
# --------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any | None:
    """A JSON file's content, or None when missing or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s); the report shows it as not run", path, err)
        return None


def read_history(folder: Path) -> list[dict[str, Any]]:
    """A training history's rows; empty when missing or unreadable (logged)."""
    try:
        return read_rows(folder)
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s/history.jsonl is unreadable (%s); its curves are left out", folder, err)
        return []


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config (``config.yaml``) as a plain mapping; empty when missing."""
    path = run_dir / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s is unreadable (%s); using the defaults", path, err)
        raw = {}
    return raw if isinstance(raw, dict) else {}


def teacher_gamma(config: dict[str, Any]) -> float:
    """``distill.gamma``: the CFG scale of the teacher the students were distilled from."""
    return float((config.get("distill") or {}).get("gamma", DistillConfig().gamma))


def offline_runs(run_dir: Path) -> dict[str, Path]:
    """Sub-folders holding an offline β = 0 distillation (``mode`` teacher or dataset), by folder name."""
    found = {}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        prov = read_json(folder / PROVENANCE_FILE)
        if (
            isinstance(prov, dict)
            and prov.get("kind") == "distilled"
            and prov.get("beta") == 0
            and prov.get("mode") in ("teacher", "dataset")
        ):
            found[folder.name] = folder
    return found


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """``evaluate/metrics.json``, or None when the evaluate stage has not written it."""
    metrics = read_json(run_dir / "evaluate" / "metrics.json")
    return metrics if isinstance(metrics, dict) else None


def run_claims(run_dir: Path) -> list[Claim]:
    """C1-C5 for the run in ``run_dir``, as its evaluate stage decided them (``evaluate/metrics.json``);
    every one "not run" when the file is missing or predates the paired statistics."""
    return claims_from_metrics(read_metrics(run_dir))


def run_roles(metrics: dict[str, Any] | None, config: dict[str, Any]) -> Roles | None:
    """The roles metrics.json records (an older file: found from its systems and ``distill.gamma``)."""
    if metrics is None:
        return None
    stored = metrics.get("roles")
    if isinstance(stored, dict):
        try:
            return Roles(**{**stored, "merges": tuple(stored.get("merges") or ())})
        except TypeError as err:
            log.warning("evaluate/metrics.json roles are unreadable (%s); finding them again", err)
    return find_roles(metrics.get("systems") or {}, teacher_gamma(config))


def demo_command(run_dir: Path) -> str | None:
    """The command serving the quality-diversity demo on this run's checkpoints (None before both exist)."""
    if all((run_dir / name / MODEL_FILE).is_file() for name in ("quality", "diversity")):
        return f"musicdistill demo --run {shlex.quote(str(run_dir))}"
    return None


def machine_line() -> str:
    """The machine writing the report: OS, CPU, cores, memory, torch and accelerator."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{memory}; "
        f"torch {torch.__version__}, {gpu}; Python {platform.python_version()}"
    )


# --------------------------------------------------------------------------------------------
# Embedding images and audio
# --------------------------------------------------------------------------------------------


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def audio_data_uri(path: Path) -> str:
    """A sound file as a data URI: OGG/Vorbis when the encoder works (about 4x smaller than 16-bit WAV), else WAV."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32")
        buf = io.BytesIO()
        sf.write(buf, audio, rate, format="OGG", subtype="VORBIS")
        return data_uri(buf.getvalue(), "audio/ogg")
    except (RuntimeError, ValueError, TypeError) as err:  # sf.LibsndfileError is a RuntimeError
        log.info("%s: no OGG/Vorbis encoding (%s); embedding the WAV", path, err)
        return data_uri(path.read_bytes(), "audio/wav")


def figure_html(fig, alt: str) -> str:
    """A matplotlib figure as an ``<img>`` with a PNG data URI (closes the figure)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="{data_uri(buf.getvalue(), "image/png")}">'


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value))


def header_section(run_dir: Path, config: dict[str, Any]) -> str:
    name = config.get("name") or run_dir.name
    evaluated = (read_json(run_dir / "evaluate" / "stage.json") or {}).get("finished", "not run")
    return (
        f"<h1>musicdistill report: {_esc(name)}</h1>"
        f'<p class="meta">config: <b>{_esc(name)}</b> ({_esc(run_dir / "config.yaml")}); '
        f"evaluated: {_esc(evaluated)}; report written {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"
        f'<p class="meta">machine: {_esc(machine_line())}</p>'
        f'<p class="meta">demo on these checkpoints: <code>{_esc(demo_command(run_dir) or "not run")}</code></p>'
    )


VERDICT_CSS = {HOLDS: "holds", FAILS: "fails", UNRESOLVED: "unresolved"}


def _comparison_item(text: str, decides: bool, verdict: str) -> str:
    css = VERDICT_CSS.get(verdict, "notrun") if decides else "beside"
    return f'<li class="{css}">{_esc(text)}</li>'


def claims_section(claims: list[Claim], roles: Roles | None, metrics: dict[str, Any] | None = None) -> str:
    """The claims table: verdict, each paired difference with its interval and margin, why; and the measures."""
    rows = []
    for c in claims:
        items = "".join(_comparison_item(x.text(), x.decides, x.verdict) for x in c.comparisons)
        tested = f"<ul>{items}</ul>" if items else "&ndash;"
        rows.append(
            f'<tr class="{VERDICT_CSS.get(c.verdict, "notrun")}"><td><b>{_esc(c.id)}</b></td>'
            f"<td>{_esc(c.statement)}</td><td><b>{_esc(c.verdict)}</b></td><td>{tested}</td>"
            f"<td>{_esc(c.explanation)}</td></tr>"
        )
    measures = (metrics or {}).get("measures") or {}
    stats = (metrics or {}).get("statistics") or {}
    who = ""
    if roles is not None:
        quality = measures.get("quality")
        who = (
            f'<p class="meta">teacher = {_esc(roles.teacher or "not evaluated")} (the base with CFG at '
            f"distill.gamma, temperature 1); base = {_esc(roles.base or 'not evaluated')}; quality = "
            f"{_esc(metric_label(quality) if quality else 'not measured')}; "
            f"<b>{_esc(measures.get('primary_note') or 'primary diversity measure: not recorded')}</b>.</p>"
        )
    rules = (
        '<p class="meta">Every comparison is a mean per-prompt paired difference (or a gain at matched '
        "quality) with its 95 % interval from one bootstrap that resamples the prompts jointly for every "
        f"system and measure ({_esc(stats.get('bootstrap', '?'))} resamples). A comparison <b>holds</b> "
        "when the interval clears the margin on the claimed side, <b>fails</b> when it lies entirely on "
        "the other side, and is <b>unresolved</b> otherwise; grey lines are shown beside a claim and do "
        "not decide it. Non-inferiority margins are -5 % of the reference's quality.</p>"
    )
    return (
        "<h2>Claims</h2>"
        + who
        + rules
        + '<table id="claims"><tr><th>claim</th><th>statement</th><th>verdict</th>'
        "<th>paired differences: mean [95 % interval], margin, verdict</th><th>why</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def pareto_section(run_dir: Path, metrics: dict[str, Any] | None = None) -> str:
    path = run_dir / "evaluate" / "pareto.png"
    body = (
        f'<img alt="quality against diversity: fronts and gains at matched quality" '
        f'src="{data_uri(path.read_bytes(), "image/png")}">'
        if path.is_file()
        else NOT_RUN
    )
    return "<h2>Quality against diversity</h2>" + body + gains_table(metrics)


def _fmt(value: Any, spec: str = "+.4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and value == value else "–"


def gains_table(metrics: dict[str, Any] | None) -> str:
    """Each system's diversity gain at matched quality against the CFG and temperature fronts."""
    gains = (metrics or {}).get("gains")
    if not isinstance(gains, list) or not gains:
        return ""
    fronts = (metrics or {}).get("fronts") or {}
    primary = ((metrics or {}).get("measures") or {}).get("primary_diversity")
    gains = sorted(
        gains, key=lambda g: (g.get("diversity") != primary, g.get("diversity", ""), g.get("front", ""))
    )
    rows = []
    for g in gains:
        defined = g.get("defined", g.get("mean") == g.get("mean"))
        value = (
            f"{_fmt(g.get('mean'))} <small>[{_fmt(g.get('low'))}, {_fmt(g.get('high'))}]</small>"
            if defined
            else "not defined (outside the front's quality range)"
        )
        front = fronts.get(g.get("front"), {})
        rows.append(
            f'<tr class="{VERDICT_CSS.get(g.get("verdict"), "notrun")}"><td>{_esc(g.get("system"))}</td>'
            f"<td>{_esc(front.get('label', g.get('front')))} ({_esc(front.get('cost', ''))})</td>"
            f"<td>{_esc(metric_label(str(g.get('diversity'))))}"
            f"{' <b>(primary)</b>' if g.get('diversity') == primary else ''}</td>"
            f'<td class="num">{value}</td><td class="num">{_fmt(g.get("defined_fraction"), ".0%")}</td>'
            f"<td>{_esc(g.get('verdict'))}</td></tr>"
        )
    return (
        "<h3>Diversity gain at matched quality</h3>"
        "<p class=\"meta\">A system's diversity minus the front's diversity at the system's quality "
        "(piecewise-linear along the front; the front's best where it bends back; not defined outside "
        "its quality range). Each bootstrap resample rebuilds the front; an interval from fewer than 95 % "
        "defined resamples is unresolved.</p>"
        '<div class="scroll"><table><tr><th>system</th><th>front (cost)</th><th>diversity measure</th>'
        "<th>gain [95 % interval]</th><th>defined in resamples</th><th>gain above 0</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )


def _cell(m: dict[str, Any] | None) -> str:
    if not m or not isinstance(m.get("mean"), (int, float)):
        return '<td class="num">&ndash;</td>'
    if isinstance(m.get("low"), (int, float)) and isinstance(m.get("high"), (int, float)):
        return f'<td class="num">{m["mean"]:.4g}<br><small>[{m["low"]:.4g}, {m["high"]:.4g}]</small></td>'
    return f'<td class="num">{m["mean"]:.4g}</td>'


def metric_columns(systems: dict[str, Any]) -> list[str]:
    """Every metric some system has, ordered by :data:`METRIC_ORDER` then as measured."""
    keys = list(dict.fromkeys(k for s in systems.values() for k in (s.get("metrics") or {})))

    def rank(key: str) -> int:
        return next(
            (i for i, p in enumerate(METRIC_ORDER) if key == p or key.startswith(p)), len(METRIC_ORDER)
        )

    return sorted(keys, key=rank)


def metrics_section(metrics: dict[str, Any] | None, roles: Roles | None) -> str:
    if metrics is None or roles is None:
        return "<h2>Metrics</h2>" + NOT_RUN
    systems = metrics.get("systems") or {}
    present = [(k, metric_label(k)) for k in metric_columns(systems)]
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in present)
    tags = roles.tags()
    rows = []
    for name, s in systems.items():
        tag = f' <span class="role">({tags[name]})</span>' if name in tags else ""
        cost = s.get("cost") or {}
        rows.append(
            f"<tr><td>{_esc(name)}{tag}</td><td>{_esc(s.get('family', ''))}</td>"
            + "".join(_cell((s.get("metrics") or {}).get(k)) for k, _ in present)
            + f'<td class="num">{_esc(cost.get("rows_per_sample", "–"))}</td>'
            + f'<td class="num">{_esc(cost.get("seconds", "–"))}</td></tr>'
        )
    note = (
        f'<p class="meta">{_esc(metrics.get("num_prompts"))} held-out prompts x '
        f"{_esc(metrics.get('samples_per_prompt'))} samples, seed {_esc(metrics.get('seed'))}; "
        "mean [95 % interval; one bootstrap over prompts for every system]; Fréchet distances to codec reconstructions of real "
        "held-out clips (lower = closer); cost = model rows per generated frame (2 with CFG) and seconds "
        "to generate every sample of the system.</p>"
    )
    return (
        "<h2>Metrics</h2>" + note + f'<div class="scroll"><table><tr><th>system</th><th>family</th>{head}'
        "<th>rows / frame</th><th>seconds</th></tr>" + "".join(rows) + "</table></div>"
    )


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def pretrain_figure(plt, rows: list[dict[str, Any]]):
    """Training loss per step and validation losses (conditional and null text) of the base model."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for key, label, style in (
        ("loss", "train loss", "-"),
        ("val_loss", "val loss (text)", "o-"),
        ("val_loss_null", "val loss (null text)", "s--"),
    ):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, style, label=label, markersize=3, alpha=0.5 if key == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title("Pretraining (base model)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


DISTILL_PANELS = (
    (("kl", "eval_teacher_kl"), "KL(student || CFG teacher)"),
    (("reward_mean",), "diversity reward (mean ± std)"),
    (("entropy",), "policy entropy (nats)"),
    (("eval_golden",), "golden metric (held-out attribute adherence)"),
)


def distill_figure(plt, runs: dict[str, list[dict[str, Any]]]):
    """One panel per quantity (KL, reward, entropy, golden), one colour per distillation run."""
    fig, axes = plt.subplots(1, len(DISTILL_PANELS), figsize=(14, 3.4), dpi=100)
    for ax, (keys, title) in zip(axes, DISTILL_PANELS):
        for i, (name, rows) in enumerate(runs.items()):
            color = f"C{i}"
            for key in keys:
                xs, ys = _series(rows, key)
                if not xs:
                    continue
                held_out = key.startswith("eval_")
                ax.plot(
                    xs,
                    ys,
                    "o--" if held_out else "-",
                    color=color,
                    markersize=3,
                    label=f"{name}{' (held-out)' if held_out else ''}",
                )
                if key == "reward_mean":
                    _, spread = _series(rows, "reward_std")
                    if len(spread) == len(ys):
                        ax.fill_between(
                            xs,
                            [y - s for y, s in zip(ys, spread)],
                            [y + s for y, s in zip(ys, spread)],
                            color=color,
                            alpha=0.15,
                        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    return fig


def curves_section(run_dir: Path) -> str:
    plt = _pyplot()
    if plt is None:
        return (
            '<h2>Training curves</h2><p class="missing">not drawn: matplotlib is not installed '
            "(pip install 'musicdistill[plot]')</p>"
        )
    base = read_history(run_dir / "base")
    parts = [
        "<h2>Training curves</h2><h3>Pretraining</h3>",
        figure_html(pretrain_figure(plt, base), "pretraining losses") if base else NOT_RUN,
    ]
    runs = {name: read_history(run_dir / name) for name in ("quality", "diversity", *offline_runs(run_dir))}
    runs = {name: rows for name, rows in runs.items() if rows}
    parts += [
        "<h3>Distillation</h3>",
        figure_html(distill_figure(plt, runs), "distillation curves") if runs else NOT_RUN,
    ]
    return "".join(parts)


def sample_folder(run_dir: Path, metrics: dict[str, Any], name: str) -> Path:
    """Where a system's samples are: the folder metrics.json records, else ``samples/<slug of its name>``."""
    recorded = ((metrics.get("systems") or {}).get(name) or {}).get("samples")
    evaluate = run_dir / "evaluate"
    if isinstance(recorded, str) and recorded:
        return evaluate / recorded
    return evaluate / "samples" / (slug(name) or name)


def audio_section(run_dir: Path, metrics: dict[str, Any] | None) -> str:
    samples = run_dir / "evaluate" / "samples"
    prompts = (metrics or {}).get("prompts") or []
    if metrics is None or not samples.is_dir() or not prompts:
        return "<h2>Listen</h2>" + NOT_RUN
    parts = [
        '<h2>Listen</h2><p class="meta">The same held-out prompts and seeds for every system '
        f"(the first {AUDIO_SAMPLES} samples of each).</p>"
    ]
    for p, prompt in enumerate(prompts[:AUDIO_PROMPTS]):
        rows = []
        for name in metrics.get("systems") or {}:
            cells = []
            for s in range(AUDIO_SAMPLES):
                wav = sample_folder(run_dir, metrics, name) / f"p{p:03d}_s{s}.wav"
                cells.append(
                    f'<td><audio controls preload="none" src="{audio_data_uri(wav)}"></audio></td>'
                    if wav.is_file()
                    else '<td class="missing">not run</td>'
                )
            rows.append(f"<tr><td>{_esc(name)}</td>{''.join(cells)}</tr>")
        parts.append(
            f'<h3>Prompt {p + 1}</h3><p class="prompt">&ldquo;{_esc(prompt)}&rdquo;</p>'
            f"<table>{''.join(rows)}</table>"
        )
    return "".join(parts)


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
            rows.append(f'<tr><td>{_esc(name)}</td><td colspan="3" class="missing">not run</td></tr>')
            continue
        latest = last.get(name)
        state = (
            "not part of it"
            if latest is None
            else ("skipped (up to date)" if latest.get("skipped") else "ran")
        )
        rows.append(
            f'<tr><td>{_esc(name)}</td><td class="num">{marker.get("seconds", 0):.1f}</td>'
            f"<td>{_esc(marker.get('finished', ''))}</td><td>{_esc(state)}</td></tr>"
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
            timings_section(run_dir, stage_names),
        )
    )
    title = f"musicdistill report: {config.get('name') or run_dir.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
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
