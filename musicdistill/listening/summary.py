"""The summary of a listening test: Markdown, self-contained HTML (plot as base64 PNG) and JSON.

Both text forms are rendered from the same list of tables (:func:`sections`), so they always agree.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from musicdistill.listening.analysis import QUESTION_ORDER, Analysis, MeanRow
from musicdistill.listening.vocabulary import QUESTIONS, SCORE_MAX, SCORE_MIN
from musicdistill.storage.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

MAX_LISTED_PROBLEMS = 200


def write_summary(analysis: Analysis, out: str | Path | None = None) -> dict[str, Path]:
    """Write summary.md, summary.html, summary.json (and means.png) to ``out`` (default: analysis/ beside
    the key) -> their paths by kind."""
    out = Path(out) if out is not None else analysis.key.path.parent / "analysis"
    png = plot_means(analysis.means, analysis.key.systems)
    paths = {"markdown": out / "summary.md", "html": out / "summary.html", "json": out / "summary.json"}
    atomic_write_text(paths["markdown"], render_markdown(analysis, with_plot=png is not None))
    atomic_write_text(paths["html"], render_html(analysis, png))
    atomic_write_text(paths["json"], json.dumps(summary_dict(analysis), indent=2) + "\n")
    if png is not None:
        paths["plot"] = atomic_write_bytes(out / "means.png", png)
    return paths


def plot_means(means: list[MeanRow], systems: list[str]) -> bytes | None:
    """Grouped bar chart (questions x systems) with the bootstrap intervals as error bars -> PNG bytes."""
    if not means:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'musicdistill[plot]'); the summary has no plot")
        return None
    questions = [q for q in QUESTION_ORDER if any(m.question == q for m in means)]
    fig, ax = plt.subplots(
        figsize=(max(6.0, 1.6 * len(questions) * max(1, len(systems)) ** 0.5), 4.0), dpi=110
    )
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        rows = {m.question: m for m in means if m.system == system}
        xs = [j + (i - (len(systems) - 1) / 2) * width for j, q in enumerate(questions) if q in rows]
        ms = [rows[q] for q in questions if q in rows]
        if not ms:
            continue
        ax.bar(
            xs,
            [m.mean - SCORE_MIN for m in ms],
            width,
            bottom=SCORE_MIN,
            label=system,
            yerr=[[m.mean - m.low for m in ms], [m.high - m.mean for m in ms]],
            capsize=3,
        )
    ax.set_xticks(range(len(questions)), [QUESTIONS[q].label for q in questions])
    ax.set_ylim(SCORE_MIN, SCORE_MAX + 0.4)
    ax.set_yticks(range(SCORE_MIN, SCORE_MAX + 1))
    ax.set_ylabel("mean score (95 % bootstrap CI)")
    ax.legend(fontsize=8, loc="upper right", ncols=min(3, len(systems)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def sections(a: Analysis) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, note, header, rows) of every table of the summary, shared by the Markdown and HTML forms."""
    sections = []
    questions = [q for q in QUESTION_ORDER if any(m.question == q for m in a.means)]
    cells = {
        (m.system, m.question): f"{m.mean:.2f} [{m.low:.2f}, {m.high:.2f}] (n={m.n_ratings})" for m in a.means
    }
    sections.append(
        (
            "Scores by system",
            f"Mean (1-5) with a 95 % percentile bootstrap interval over items (stimuli for the quality questions, "
            f"pairs for the difference question; {a.n_boot} resamples); n = ratings used. Difference: higher = the "
            "system's generations for one prompt sound more different from each other.",
            ["system", *[QUESTIONS[q].label for q in questions]],
            [[s, *[cells.get((s, q), "-") for q in questions]] for s in a.key.systems],
        )
    )
    sections.append(
        (
            "Pairwise win rates (prompt-matched)",
            "For each prompt, the two systems' mean scores are compared; win rate = (wins + ties / 2) / prompts. "
            "p: two-sided sign test on the untied prompts.",
            ["question", "A", "B", "A wins", "ties", "B wins", "prompts", "win rate of A", "p"],
            [
                [
                    QUESTIONS[w.question].label,
                    w.system_a,
                    w.system_b,
                    str(w.wins),
                    str(w.ties),
                    str(w.losses),
                    str(w.prompts),
                    _fmt(w.win_rate),
                    _fmt(w.p_value, 3),
                ]
                for w in a.wins
            ],
        )
    )
    sections.append(
        (
            "Inter-rater agreement (Krippendorff's alpha)",
            "1 = perfect agreement, 0 = chance level; units = items rated by at least two included raters.",
            ["question", "alpha (interval)", "alpha (ordinal)", "units", "raters"],
            [
                [
                    QUESTIONS[g.question].label,
                    _fmt(g.alpha_interval, 3),
                    _fmt(g.alpha_ordinal, 3),
                    str(g.units),
                    str(g.raters),
                ]
                for g in a.agreement
            ],
        )
    )
    sections.append(
        (
            "Attention check",
            f"The repeated stimulus must get the same rating twice, within {a.tolerance:g} point(s) on every question; "
            "raters who fail it, or did not rate the repeat, are excluded from every table above.",
            ["rater", "result", "included", "details (failed questions, or all compared)"],
            [
                [r, res.status, "no" if res.excluded else "yes", res.detail()]
                for r, res in sorted(a.attention.items())
            ],
        )
    )
    counts = a.ratings.problem_counts()
    sections.append(
        (
            "Rejected ratings",
            f"{a.ratings.rows_read} rows read from {len(a.ratings.files)} file(s); {len(a.ratings.ratings)} accepted; "
            f"{sum(n for k, n in counts.items() if k not in ('missing columns', 'unreadable file'))} rows rejected, "
            f"{counts.get('missing columns', 0) + counts.get('unreadable file', 0)} file(s) skipped. Rejected rows "
            "are never used.",
            ["problem", "count"],
            [[k, str(n)] for k, n in sorted(counts.items())],
        )
    )
    listed = a.ratings.problems[:MAX_LISTED_PROBLEMS]
    if listed:
        more = len(a.ratings.problems) - len(listed)
        sections.append(
            (
                "Rejected rows and skipped files",
                f"file:row (row = line number in the file){f'; {more} more not listed' if more > 0 else ''}.",
                ["where", "problem", "detail"],
                [[p.where(), p.kind, p.detail] for p in listed],
            )
        )
    return sections


def _headline(a: Analysis) -> str:
    excluded = sorted(r for r, res in a.attention.items() if res.excluded)
    return (
        f"Test {a.key.test_id or '(no id)'}: {len(a.key.systems)} systems, {len(a.key.entries)} stimuli; "
        f"{len(a.included_raters)} rater(s) included, {len(excluded)} excluded"
        f"{' (' + ', '.join(excluded) + ')' if excluded else ''}; {a.used_ratings} ratings used."
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(a: Analysis, with_plot: bool = True) -> str:
    lines = [f"# Listening test results: {a.key.test_id}", "", _headline(a), "", f"Key: `{a.key.path}`", ""]
    if with_plot and a.means:
        lines += ["![mean scores](means.png)", ""]
    for title, note, header, rows in sections(a):
        lines += [f"## {title}", "", note, ""]
        if rows:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        else:
            lines.append("(none)")
        lines.append("")
    return "\n".join(lines)


HTML_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1000px; margin: 24px auto; padding: 0 16px; color: #1d2330; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #d5dae3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
p.note { color: #5b6475; }
img { max-width: 100%; }
"""


def render_html(a: Analysis, png: bytes | None) -> str:
    """A self-contained HTML page (inline style, plot embedded as base64 PNG)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>Listening test results: {esc(a.key.test_id)}</title><style>{HTML_STYLE}</style></head><body>",
        f"<h1>Listening test results: {esc(a.key.test_id)}</h1>",
        f"<p>{esc(_headline(a))}</p>",
    ]
    if png is not None:
        parts.append(
            f"<img alt='mean scores by system and question' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
        )
    for title, note, header, rows in sections(a):
        parts += [f"<h2>{esc(title)}</h2>", f"<p class='note'>{esc(note)}</p>"]
        if rows:
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        else:
            parts.append("<p>(none)</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def summary_dict(a: Analysis) -> dict[str, Any]:
    """The summary's numbers as plain JSON (NaN written as null)."""

    def rows(items: list[Any]) -> list[dict[str, Any]]:
        return [{k: _nan_to_none(v) for k, v in asdict(x).items()} for x in items]

    return {
        "test_id": a.key.test_id,
        "key": str(a.key.path),
        "systems": a.key.systems,
        "files": a.ratings.files,
        "rows_read": a.ratings.rows_read,
        "rows_accepted": len(a.ratings.ratings),
        "problem_counts": a.ratings.problem_counts(),
        "problems": [asdict(p) for p in a.ratings.problems],
        "included_raters": a.included_raters,
        "attention": {
            r: {"status": res.status, "differences": res.differences} for r, res in a.attention.items()
        },
        "means": rows(a.means),
        "win_rates": rows(a.wins),
        "agreement": rows(a.agreement),
        "n_boot": a.n_boot,
        "tolerance": a.tolerance,
    }
