"""The quality-diversity plot: one point per system with 95 % intervals, one curve per family."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

QUALITY_KEYS = ("attribute_adherence", "text_adherence")
DIVERSITY_KEYS = ("diversity_independent", "diversity_reward")


def pick_axis(report: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The first metric in ``keys`` that every system has."""
    systems = report["systems"].values()
    for key in keys:
        if systems and all(key in s["metrics"] for s in systems):
            return key
    raise ValueError(f"no system reports any of {list(keys)}; cannot draw the Pareto plot")


def _interval(metric: dict[str, float]) -> tuple[float, float, float]:
    mean = metric["mean"]
    return mean, mean - metric.get("low", mean), metric.get("high", mean) - mean


def plot_pareto(
    report: dict[str, Any], path: str | Path, quality: str | None = None, diversity: str | None = None
) -> Path:
    """Draw quality (y) against diversity (x); the legend names each family and its model rows per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = quality or pick_axis(report, QUALITY_KEYS)
    diversity = diversity or pick_axis(report, DIVERSITY_KEYS)
    families: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, sys in report["systems"].items():
        families.setdefault(sys.get("family") or name, []).append((name, sys))
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    for family, members in families.items():
        members.sort(key=lambda m: m[1]["metrics"][diversity]["mean"])
        xs, ys = [], []
        for name, sys in members:
            x, xlo, xhi = _interval(sys["metrics"][diversity])
            y, ylo, yhi = _interval(sys["metrics"][quality])
            xs.append(x)
            ys.append(y)
            ax.errorbar(
                x,
                y,
                xerr=[[xlo], [xhi]],
                yerr=[[ylo], [yhi]],
                fmt="none",
                alpha=0.35,
                capsize=2,
                color="gray",
            )
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        rows = sorted({sys["cost"]["rows_per_sample"] for _, sys in members})
        ax.plot(xs, ys, marker="o", label=f"{family} ({'/'.join(map(str, rows))} model rows per sample)")
    ax.set_xlabel(f"{diversity.replace('_', ' ')} (mean pairwise 1 - cos, higher = more diverse)")
    ax.set_ylabel(quality.replace("_", " "))
    ax.set_title(
        f"Quality vs diversity ({report['num_prompts']} held-out prompts x {report['samples_per_prompt']} "
        "samples, 95% CI)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
