"""The report's result sections: the claims table, the fronts plot with the gains at matched quality,
the metrics table, the training curves and the audio players. Each takes what the run folder holds
(:mod:`musicdistill.pipeline.report_inputs`) and returns HTML; what has not run shows as "not run".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from musicdistill.evaluation.claims import Claim
from musicdistill.evaluation.metrics import metric_label
from musicdistill.evaluation.paired import CONTESTED, FAILS, HOLDS, UNRESOLVED
from musicdistill.evaluation.roles import Roles
from musicdistill.evaluation.systems import slug
from musicdistill.pipeline.report_html import NOT_RUN, audio_data_uri, data_uri, esc, figure_html, pyplot
from musicdistill.pipeline.report_inputs import offline_runs, read_history, student_names

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


#: a contested claim is drawn as undecided (yellow), with its own class for styling
VERDICT_CSS = {HOLDS: "holds", FAILS: "fails", UNRESOLVED: "unresolved", CONTESTED: "contested unresolved"}


def _comparison_item(text: str, decides: bool, verdict: str) -> str:
    css = VERDICT_CSS.get(verdict, "notrun") if decides else "beside"
    return f'<li class="{css}">{esc(text)}</li>'


def claims_section(claims: list[Claim], roles: Roles | None, metrics: dict[str, Any] | None = None) -> str:
    """The claims table: verdict, each paired difference with its interval and margin, why; and the measures."""
    rows = []
    for c in claims:
        items = "".join(_comparison_item(x.text(), x.decides, x.verdict) for x in c.comparisons)
        tested = f"<ul>{items}</ul>" if items else "&ndash;"
        rows.append(
            f'<tr class="{VERDICT_CSS.get(c.verdict, "notrun")}"><td><b>{esc(c.id)}</b></td>'
            f"<td>{esc(c.statement)}</td><td><b>{esc(c.verdict)}</b></td><td>{tested}</td>"
            f"<td>{esc(c.explanation)}</td></tr>"
        )
    measures = (metrics or {}).get("measures") or {}
    stats = (metrics or {}).get("statistics") or {}
    who = ""
    if roles is not None:
        quality = measures.get("quality")
        who = (
            f'<p class="meta">teacher = {esc(roles.teacher or "not evaluated")} (the base with CFG at '
            f"distill.gamma, temperature 1); base = {esc(roles.base or 'not evaluated')}; quality = "
            f"{esc(metric_label(quality) if quality else 'not measured')}; "
            f"<b>{esc(measures.get('primary_note') or 'primary diversity measure: not recorded')}</b>.</p>"
        )
    rules = (
        '<p class="meta">Every comparison is a mean per-prompt paired difference (or a gain at matched '
        "quality) with its 95 % interval from one bootstrap that resamples the prompts jointly for every "
        f"system and measure ({esc(stats.get('bootstrap', '?'))} resamples). A comparison <b>holds</b> "
        "when the interval clears the margin on the claimed side, <b>fails</b> when it lies entirely on "
        "the other side, and is <b>unresolved</b> otherwise; grey lines are shown beside a claim and do "
        "not decide it. C3 and C4 are <b>contested</b> when another validated diversity view places a "
        "primary comparison they rest on entirely on the other side of its margin. The non-inferiority "
        "margin is min(5 % of the teacher's quality, 25 % of CFG's quality gain over the base); C4 "
        "decides on lower bounds corrected for its several candidates (docs/method.md section 7).</p>"
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
            f'<tr class="{VERDICT_CSS.get(g.get("verdict"), "notrun")}"><td>{esc(g.get("system"))}</td>'
            f"<td>{esc(front.get('label', g.get('front')))} ({esc(front.get('cost', ''))})</td>"
            f"<td>{esc(metric_label(str(g.get('diversity'))))}"
            f"{' <b>(primary)</b>' if g.get('diversity') == primary else ''}</td>"
            f'<td class="num">{value}</td><td class="num">{_fmt(g.get("defined_fraction"), ".0%")}</td>'
            f"<td>{esc(g.get('verdict'))}</td></tr>"
        )
    return (
        "<h3>Diversity gain at matched quality</h3>"
        "<p class=\"meta\">A system's diversity minus the front's diversity at the system's quality "
        "(piecewise-linear along the front; the front's best where it bends back; above its highest "
        "quality, its highest-quality point's diversity; not defined below its lowest). Each bootstrap "
        "resample rebuilds the front; an interval from fewer than 95 % "
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
    head = "".join(f"<th>{esc(label)}</th>" for _, label in present)
    tags = roles.tags()
    rows = []
    for name, s in systems.items():
        tag = f' <span class="role">({tags[name]})</span>' if name in tags else ""
        cost = s.get("cost") or {}
        rows.append(
            f"<tr><td>{esc(name)}{tag}</td><td>{esc(s.get('family', ''))}</td>"
            + "".join(_cell((s.get("metrics") or {}).get(k)) for k, _ in present)
            + f'<td class="num">{esc(cost.get("rows_per_sample", "–"))}</td>'
            + f'<td class="num">{esc(cost.get("seconds", "–"))}</td></tr>'
        )
    note = (
        f'<p class="meta">{esc(metrics.get("num_prompts"))} held-out prompts x '
        f"{esc(metrics.get('samples_per_prompt'))} samples, seed {esc(metrics.get('seed'))}; "
        "mean [95 % interval; one bootstrap over prompts for every system]; Fréchet distances to codec reconstructions of real "
        "held-out clips (lower = closer); cost = model rows per generated frame (2 with CFG) and seconds "
        "to generate every sample of the system. Reward embedder (its diversity and Fréchet space): "
        f"{esc(((metrics.get('judges') or {}).get('reward')) or 'none recorded')}.</p>"
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
    plt = pyplot()
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
    runs = {name: read_history(run_dir / name) for name in (*student_names(run_dir), *offline_runs(run_dir))}
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
            rows.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")
        parts.append(
            f'<h3>Prompt {p + 1}</h3><p class="prompt">&ldquo;{esc(prompt)}&rdquo;</p>'
            f"<table>{''.join(rows)}</table>"
        )
    return "".join(parts)
