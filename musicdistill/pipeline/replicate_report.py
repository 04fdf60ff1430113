"""The pooled replication report, as plain HTML (self-contained, no script) and as markdown.

Both are rendered from one list of :class:`Section` s built from ``pooled.json``
(:func:`musicdistill.pipeline.replicate.analyze`): the seeds and their run times, the verdicts per
seed and pooled (claim x seed), each pooled claim's comparisons (mean [low, high], the Monte-Carlo
error of the bounds where the statistics give one), the pooled gains of every candidate under every
diversity view, the primary gain per seed, and the pooled means.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from musicdistill.evaluation.comparisons import is_diversity
from musicdistill.evaluation.metrics import metric_label

VERDICT_CLASSES = {
    "holds": "holds",
    "fails": "fails",
    "unresolved": "unresolved",
    "contested": "contested",
    "not run": "notrun",
}
FRONT_TITLES = {"cfg": "the CFG front", "temperature": "the temperature front", "merge": "the merge front"}


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    level: int = 2


# --------------------------------------------------------------------------------------------
# Numbers as text
# --------------------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def interval_text(mean: Any, low: Any, high: Any, signed: bool = True) -> str:
    """``+0.0123 [+0.0010, +0.0200]``; ``not defined`` when the mean is not finite."""
    if not _finite(mean):
        return "not defined"
    f = "{:+.4f}" if signed else "{:.4f}"
    if _finite(low) and _finite(high):
        return f"{f.format(mean)} [{f.format(low)}, {f.format(high)}]"
    return f"{f.format(mean)} (no interval)"


def mc_error_text(value: Any) -> str:
    """The Monte-Carlo error of an interval's bounds: ``±0.0012``, ``±0.0010 / ±0.0014`` (low / high)."""
    if _finite(value):
        return f"±{value:.4f}"
    if isinstance(value, (list, tuple)) and value and all(_finite(v) for v in value):
        return " / ".join(f"±{v:.4f}" for v in value)
    if isinstance(value, dict) and value:
        return ", ".join(f"{k} ±{v:.4f}" if _finite(v) else f"{k} {v}" for k, v in value.items())
    return ""


def seconds_text(value: Any) -> str:
    if not _finite(value):
        return "unknown"
    return f"{value:.0f} s ({value / 60:.1f} min)"


def _comparison_row(c: dict[str, Any]) -> list[str]:
    if c.get("kind") == "cost":
        value, claimed = f"{c.get('mean', math.nan):.3g}", f"at most {c.get('margin', math.nan):.4g}"
    else:
        value = interval_text(c.get("mean"), c.get("low"), c.get("high"))
        claimed = f"{c.get('side', '')} {c.get('margin', math.nan):.4g}"
    if _finite(c.get("defined_fraction")):
        value += f", defined in {100 * c['defined_fraction']:.0f} % of resamples"
    return [
        str(c.get("label", "")),
        value,
        mc_error_text(c.get("mc_error")),
        str(c.get("n", "")),
        claimed,
        str(c.get("verdict", "")),
        "decides" if c.get("decides", True) else "beside",
        str(c.get("note", "")),
    ]


def _gain_cell(g: dict[str, Any] | None) -> str:
    if g is None:
        return "-"
    text = f"{interval_text(g.get('mean'), g.get('low'), g.get('high'))} {g.get('verdict', '')}"
    fraction = g.get("defined_fraction")
    if _finite(fraction) and fraction < 1.0:
        text += f" (defined {100 * fraction:.0f} %)"
    mc = mc_error_text(g.get("mc_error"))
    return text + (f", MC {mc}" if mc else "")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def seed_labels(result: dict[str, Any]) -> list[str]:
    """A column label per run: ``seed 2 (reporting)``, or the run's name when the seeds are unknown."""
    rows = (result.get("replicate") or {}).get("seeds") or []
    runs = result.get("per_run") or []
    if len(rows) == len(runs):
        return [f"seed {r['seed']} ({r['kind']})" for r in rows]
    return [str(r.get("name", f"run {i}")) for i, r in enumerate(runs)]


def title(result: dict[str, Any]) -> str:
    rep = result.get("replicate") or {}
    seeds = ", ".join(str(r["seed"]) for r in rep.get("seeds") or [])
    return f"Replication of {rep.get('name', 'the main job')}" + (f": seeds {seeds}" if seeds else "")


def resampling_section(result: dict[str, Any]) -> Section:
    st = result.get("statistics") or {}
    rep = result.get("replicate") or {}
    rows = rep.get("seeds") or []
    kinds = {r["kind"] for r in rows}
    seeds = ", ".join(str(r["seed"]) for r in rows) or ", ".join(result.get("runs") or [])
    text = [
        f"Pooled over {st.get('seeds', '?')} seeds ({seeds}), {st.get('prompts_per_seed', '?')} held-out "
        f"prompts each. Hierarchical bootstrap with R = {st.get('bootstrap', '?')} resamples (seeded "
        f"{st.get('seed', '?')}): each resample draws the seeds with replacement, then, within each drawn "
        "seed, its prompts with replacement; one draw serves every system and measure (paired), and "
        "the same claim rules as one run's decide (docs/method.md section 7). Intervals are "
        f"{100 * st.get('level', 0.95):.0f} % percentile intervals.",
        "Per-seed verdicts are recomputed from each run's per-prompt table with that run's own prompt "
        f"bootstrap (R = {st.get('bootstrap', '?')}, its evaluation seed).",
    ]
    if rep:
        kept = ", ".join(f"{k} = {v or repr('')}" for k, v in (rep.get("kept") or {}).items())
        text.append(
            f"Every seed key of the config is set to the seed ({', '.join(rep.get('reseeded_keys') or [])}), "
            f"so each run has fresh data, prompts, judges and students; the shipped base stays ({kept})."
        )
        first = rep.get("development_seeds_from", 100)
        if kinds == {"reporting"}:
            text.append(
                f"All seeds are reporting seeds (below {first}): these verdicts may be quoted, provided no "
                "trial ever ran on these seeds."
            )
        elif kinds == {"development"}:
            text.append(
                f"All seeds are development seeds ({first} and up): trials tune on these; do not quote "
                "these verdicts as the result."
            )
        else:
            text.append(
                f"The seeds mix development ({first} and up) and reporting seeds: quote only a pooled "
                "result on reporting seeds alone."
            )
    return Section("How the seeds are pooled", text)


def seeds_section(result: dict[str, Any]) -> Section | None:
    rep = result.get("replicate") or {}
    rows = rep.get("seeds") or []
    if not rows:
        return None
    table = Table(
        ["seed", "kind", "run folder", "main job time", "stages run", "how timed"],
        [
            [
                str(r["seed"]),
                r["kind"],
                r["run"],
                seconds_text(r.get("wall_s")),
                f"{len(r['stages_run'])} of {r.get('stages', '?')}" if "stages_run" in r else "",
                r.get("timing", ""),
            ]
            for r in rows
        ],
    )
    total = rep.get("total_wall_s")
    text = [f"Total: {seconds_text(total)}."] if _finite(total) else []
    return Section("Seeds", text, [table])


def verdicts_section(result: dict[str, Any]) -> Section:
    labels = seed_labels(result)
    per_run = [{c["id"]: c for c in r.get("claims", [])} for r in result.get("per_run") or []]
    pooled = (result.get("pooled") or {}).get("claims") or []
    rows = [
        [c["id"], *[str(run.get(c["id"], {}).get("verdict", "-")) for run in per_run], c["verdict"]]
        for c in pooled
    ]
    return Section("Verdicts per seed and pooled", [], [Table(["claim", *labels, "pooled"], rows)])


def claims_section(result: dict[str, Any]) -> list[Section]:
    pooled = result.get("pooled") or {}
    sections = [
        Section(
            "Pooled claims, with their comparisons",
            [str((pooled.get("measures") or {}).get("primary_note", ""))],
        )
    ]
    headers = ["comparison", "mean [low, high]", "MC error", "n", "claimed", "verdict", "role", "note"]
    for c in pooled.get("claims") or []:
        rows = [_comparison_row(x) for x in c.get("comparisons") or []]
        text = [str(c.get("statement", "")), str(c.get("explanation", ""))]
        sections.append(
            Section(f"{c['id']}: {c['verdict']}", text, [Table(headers, rows)] if rows else [], level=3)
        )
    return sections


def _gains_by(gains: Sequence[dict[str, Any]], front: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g["system"], g["diversity"]): g for g in gains if g.get("front") == front}


def gains_sections(result: dict[str, Any]) -> list[Section]:
    pooled = result.get("pooled") or {}
    gains = pooled.get("gains") or []
    names = list(pooled.get("candidates") or [])
    primary = (pooled.get("measures") or {}).get("primary_diversity")
    quality = (pooled.get("measures") or {}).get("quality")
    sections = []
    for front in dict.fromkeys(g.get("front") for g in gains):
        cells = _gains_by(gains, front)
        views = list(dict.fromkeys(d for (_, d) in cells))
        views.sort(key=lambda v: v != primary)
        rows = [[name, *[_gain_cell(cells.get((name, v))) for v in views]] for name in names]
        heads = [metric_label(v) + (" (primary)" if v == primary else "") for v in views]
        sections.append(
            Section(
                f"Pooled gains at matched quality over {FRONT_TITLES.get(front, front)}",
                [
                    "Each candidate's diversity minus the front's diversity at the candidate's "
                    f"{metric_label(str(quality))}, under every diversity view (pooled over the seeds). "
                    "Each cell's verdict is that comparison's alone; C4 is decided above, on bounds "
                    "corrected for its several candidates."
                ],
                [Table(["candidate", *heads], rows)],
            )
        )
    per_run = result.get("per_run") or []
    if primary and per_run:
        labels = seed_labels(result)
        runs = [_gains_by(r.get("gains") or [], "cfg") for r in per_run]
        pooled_cells = _gains_by(gains, "cfg")
        rows = [
            [
                name,
                *[_gain_cell(run.get((name, primary))) for run in runs],
                _gain_cell(pooled_cells.get((name, primary))),
            ]
            for name in names
        ]
        sections.append(
            Section(
                f"Gain over the CFG front in {metric_label(primary)}, per seed and pooled",
                [],
                [Table(["candidate", *labels, "pooled"], rows)],
            )
        )
    return sections


def _mean_cell(estimate: dict[str, Any] | None) -> str:
    if not estimate:
        return "-"
    return interval_text(estimate.get("mean"), estimate.get("low"), estimate.get("high"), signed=False)


def means_section(result: dict[str, Any]) -> Section | None:
    pooled = result.get("pooled") or {}
    means = pooled.get("means") or {}
    if not means:
        return None
    measures = pooled.get("measures") or {}
    diversities = sorted({m for per in means.values() for m in per if is_diversity(m)})
    wanted = [measures.get("quality"), measures.get("primary_diversity"), *diversities]
    columns = [m for m in dict.fromkeys(wanted) if m]
    rows = [[system, *[_mean_cell(per.get(m)) for m in columns]] for system, per in means.items()]
    return Section("Pooled means", [], [Table(["system", *[metric_label(m) for m in columns]], rows)])


def sections(result: dict[str, Any]) -> list[Section]:
    """Every section of the report, in order."""
    out = [resampling_section(result)]
    if (s := seeds_section(result)) is not None:
        out.append(s)
    out.append(verdicts_section(result))
    out += claims_section(result)
    out += gains_sections(result)
    if (s := means_section(result)) is not None:
        out.append(s)
    return out


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.holds { background: #d8f0d8; } td.fails { background: #f6d5d5; }
td.unresolved { background: #f6efcf; } td.contested { background: #efd9f2; } td.notrun { color: #777; }
"""


def _cell_html(text: str) -> str:
    word = text.split(" (")[0].strip()
    css = VERDICT_CLASSES.get(word)
    return f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>"


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "\n".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in table.rows)
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>"


def render_html(result: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline style, no script)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title(result))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title(result))}</h1>",
    ]
    for s in sections(result):
        parts.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        parts += [f"<p>{html.escape(t)}</p>" for t in s.text if t]
        parts += [_table_html(t) for t in s.tables]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_markdown(table: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
        "|" + "---|" * len(table.headers),
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    """The same tables as markdown, for pasting into ``bench/RESULTS.md``."""
    parts = [f"## {title(result)}"]
    for s in sections(result):
        parts.append(f"{'#' * (s.level + 1)} {s.title}")
        parts += [t for t in s.text if t]
        parts += [_table_markdown(t) for t in s.tables]
    return "\n\n".join(parts) + "\n"
