"""The quality-diversity figure of ``metrics.json``: the fronts, and the gains at matched quality.

Left panel: quality (y) against the primary diversity measure (x), one point per system with its 95 %
interval on each axis; each front (:mod:`musicdistill.evaluation.fronts`: the base over the CFG scale,
over the temperature, the merges over λ) is a line through its points in the order of its setting,
with its cost (model rows per frame) in the legend; systems on no front are single points. Right
panel: the diversity gain at matched quality of each system that is not on the base's own sweeps,
against the CFG front and against the temperature front, with its joint-bootstrap 95 % interval; a
gain outside a front's quality range is marked "not defined".
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from musicdistill.evaluation.metrics import metric_label

log = logging.getLogger(__name__)

QUALITY_KEYS = ("attribute_adherence", "text_adherence")
DIVERSITY_KEYS = ("attribute_diversity", "diversity_second", "diversity_independent", "diversity_reward")
FRONT_STYLE = {
    "cfg": ("C0", "o", "-"),
    "temperature": ("C1", "s", "-"),
    "merge": ("C2", "D", "-"),
    "conditioned": ("C4", "^", "-"),
}
LABEL_OFFSET = {"cfg": (4, 4), "temperature": (4, -11), "merge": (4, 4), "conditioned": (4, -11)}
GAIN_FRONTS = (("cfg", "C0", "o"), ("temperature", "C1", "s"))


def pick_axis(report: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The first metric in ``keys`` that every system has."""
    systems = report["systems"].values()
    for key in keys:
        if systems and all(key in s["metrics"] for s in systems):
            return key
    raise ValueError(f"no system reports any of {list(keys)}; cannot draw the Pareto plot")


def _value(metric: dict[str, Any] | None) -> tuple[float, float, float]:
    """(mean, distance down to low, distance up to high); zeros for a missing interval."""
    if not metric or not isinstance(metric.get("mean"), (int, float)):
        return math.nan, 0.0, 0.0
    mean = float(metric["mean"])
    low, high = metric.get("low", mean), metric.get("high", mean)
    low = mean if not isinstance(low, (int, float)) or not math.isfinite(low) else low
    high = mean if not isinstance(high, (int, float)) or not math.isfinite(high) else high
    return mean, mean - low, high - mean


def _point_label(front: dict[str, Any], i: int, name: str) -> str:
    value = front["values"][i]
    return f"{front['setting']}={value:g}" if isinstance(value, (int, float)) else name


def _axes_pair(plt):
    return plt.subplots(1, 2, figsize=(13.5, 5.6), dpi=110, gridspec_kw={"width_ratios": [1.25, 1.0]})


def draw_fronts(ax, report: dict[str, Any], quality: str, diversity: str) -> None:
    """The left panel: every system with its intervals, the fronts as lines."""
    systems = report["systems"]
    teacher = (report.get("roles") or {}).get("teacher")
    on_front: set[str] = set()
    for key, front in (report.get("fronts") or {}).items():
        color, marker, style = FRONT_STYLE.get(key, ("C4", "^", "-"))
        members = [m for m in front["members"] if m in systems]
        points = [
            (_value(systems[m]["metrics"].get(diversity)), _value(systems[m]["metrics"].get(quality)), m)
            for m in members
        ]
        ax.plot(
            [x[0] for x, _, _ in points],
            [y[0] for _, y, _ in points],
            style,
            marker=marker,
            color=color,
            label=f"{front['label']} {front['setting']} ({front.get('cost', 'cost not recorded')})",
        )
        for x, y, name in points:
            ax.errorbar(
                x[0], y[0], xerr=[[x[1]], [x[2]]], yerr=[[y[1]], [y[2]]], fmt="none", color=color, alpha=0.3
            )
            ax.annotate(
                _point_label(front, front["members"].index(name), name),
                (x[0], y[0]),
                textcoords="offset points",
                xytext=LABEL_OFFSET.get(key, (4, 4)),
                fontsize=7,
                color=color,
            )
        on_front.update(members)
    for i, (name, s) in enumerate(n for n in systems.items() if n[0] not in on_front):
        x, y = _value(s["metrics"].get(diversity)), _value(s["metrics"].get(quality))
        rows = (s.get("cost") or {}).get("rows_per_sample", "?")
        ax.errorbar(
            x[0],
            y[0],
            xerr=[[x[1]], [x[2]]],
            yerr=[[y[1]], [y[2]]],
            fmt="P",
            color=f"C{5 + i % 5}",
            capsize=2,
            label=f"{name} ({rows} model row{'s' if rows != 1 else ''} per frame)",
        )
    if teacher in systems:
        tx, ty = (
            _value(systems[teacher]["metrics"].get(diversity)),
            _value(systems[teacher]["metrics"].get(quality)),
        )
        ax.plot([tx[0]], [ty[0]], "*", color="black", markersize=13, label=f"teacher ({teacher})", zorder=5)
    ax.set_xlabel(f"{metric_label(diversity)} (higher = more diverse)")
    ax.set_ylabel(metric_label(quality))
    ax.set_title(
        f"Fronts: {report['num_prompts']} held-out prompts x {report['samples_per_prompt']} samples, "
        "95 % intervals",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def draw_gains(ax, report: dict[str, Any], diversity: str) -> None:
    """The right panel: each system's gain at matched quality over the CFG and temperature fronts."""
    fronts = report.get("fronts") or {}
    # the base's own sweeps are the fronts: their gains against them are 0 or undefined by construction
    swept = {m for key, _, _ in GAIN_FRONTS for m in (fronts.get(key) or {}).get("members", [])}
    gains = [g for g in report.get("gains") or [] if g.get("diversity") == diversity]
    names = [n for n in dict.fromkeys(g["system"] for g in gains) if n not in swept]
    if not names:
        ax.text(
            0.5,
            0.5,
            "no gain at matched quality was computed",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return
    for offset, (key, color, marker) in zip((-0.15, 0.15), GAIN_FRONTS):
        if key in fronts:  # a legend entry even when no gain over this front is defined
            ax.plot([], [], marker, color=color, label=f"over the {fronts[key].get('label', key)} front")
        for row, name in enumerate(names):
            g = next((g for g in gains if g["system"] == name and g["front"] == key), None)
            if g is None:
                continue
            y = row + offset
            if not g.get("defined", math.isfinite(g.get("mean", math.nan))):
                ax.text(0, y, "not defined", fontsize=6, color=color, ha="center", va="center")
                continue
            low = g["low"] if math.isfinite(g["low"]) else g["mean"]
            high = g["high"] if math.isfinite(g["high"]) else g["mean"]
            ax.errorbar(
                g["mean"],
                y,
                xerr=[[g["mean"] - low], [high - g["mean"]]],
                fmt=marker,
                color=color,
                capsize=3,
                alpha=1.0 if g.get("defined_fraction", 1.0) >= 0.95 else 0.45,
            )
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first system on top; keeps "not defined" rows in view
    ax.set_xlabel(f"gain in {metric_label(diversity)} at matched quality")
    ax.set_title("Diversity gain at matched quality (95 % joint-bootstrap interval)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def plot_pareto(
    report: dict[str, Any], path: str | Path, quality: str | None = None, diversity: str | None = None
) -> Path:
    """Draw the fronts (left) and the gains at matched quality (right) of ``report`` (metrics.json) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = report.get("measures") or {}
    quality = quality or measures.get("quality") or pick_axis(report, QUALITY_KEYS)
    diversity = diversity or measures.get("primary_diversity") or pick_axis(report, DIVERSITY_KEYS)
    fig, (left, right) = _axes_pair(plt)
    draw_fronts(left, report, quality, diversity)
    draw_gains(right, report, diversity)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
