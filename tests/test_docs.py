"""The documents match the tree: every path and module they name exists, and the layout is complete.

Reads README.md and docs/*.md. Checked:

- every repository path they name under ``musicdistill/``, ``tests/``, ``configs/``, ``bench/``,
  ``docs/``, ``demo/``, ``scripts/`` or ``assets/`` exists;
- every dotted name ``musicdistill.x.y[.attr]`` is a module of the package (and ``attr``, when
  given, a name defined at the top level of that module);
- README's "## Layout" section names every subpackage and top-level module of the package;
- the import-floor table of docs/architecture.md is the package's actual import graph (a failure
  prints the table as the code stands), and its stage table is ``main_job_stages()``.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from test_layout import find_cycle, import_graph

import musicdistill
from musicdistill.pipeline.main_job import main_job_stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "musicdistill"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PATH_RE = re.compile(r"(?<![\w./-])((?:musicdistill|tests|configs|bench|docs|demo|scripts|assets)/[\w./-]*)")
MODULE_RE = re.compile(r"(?<![\w./-])musicdistill(?:\.[A-Za-z_]\w*)+")
FLOOR_ROW_RE = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|(.*)\|\s*$")


def named_paths(text: str) -> set[str]:
    """Repository paths in ``text`` (trailing sentence punctuation dropped)."""
    return {m.rstrip(".,:;") for m in PATH_RE.findall(text)}


def named_modules(text: str) -> set[str]:
    return set(MODULE_RE.findall(text))


def module_file(dotted: str) -> Path | None:
    """The source file of a package module ``musicdistill.a.b`` (None when there is none)."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def top_level_names(path: Path) -> frozenset[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def dotted_problem(dotted: str) -> str | None:
    """Why ``dotted`` names nothing in the package, or None when it resolves."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:cut]))
        if path is None:
            continue
        rest = parts[cut:]
        public = set(musicdistill.__all__) if cut == 1 else set()  # the lazily imported API
        if rest and rest[0] not in top_level_names(path) | public:
            return f"{'.'.join(parts[:cut])} defines no {rest[0]!r}"
        return None
    return "no such module"


def layout_section(readme: str) -> str:
    match = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    if match is None:
        raise AssertionError("README.md has no '## Layout' section")
    return match.group(1)


def package_units() -> list[str]:
    """Subpackages (folders with __init__.py) and top-level modules (but __init__) of the package."""
    units = [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    units += [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    return sorted(units)


def unit_of(module: str, units: set[str]) -> str:
    """The unit a module belongs to: the longest documented unit naming it or a package above it
    (a module may be documented apart from its subpackage), else its subpackage or top-level module;
    the package itself is ``__init__``."""
    name = module.removeprefix("musicdistill").removeprefix(".") or "__init__"
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in units:
            return ".".join(parts[:cut])
    return parts[0]


def unit_graph(units: set[str]) -> dict[str, set[str]]:
    """Which units import which (module-level imports, self-imports dropped)."""
    graph, _ = import_graph()
    out: dict[str, set[str]] = {}
    for module, imported in graph.items():
        unit = unit_of(module, units)
        out.setdefault(unit, set()).update({unit_of(m, units) for m in imported} - {unit})
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each unit's floor: 0 without imports, else one above the highest unit it imports.

    Raises AssertionError naming a loop when the units import each other in a cycle.
    """
    cycle = find_cycle(graph)
    if cycle is not None:
        raise AssertionError("the units import each other in a loop: " + " -> ".join(cycle))
    out: dict[str, int] = {}

    def floor(unit: str) -> int:
        if unit not in out:
            out[unit] = 1 + max((floor(d) for d in graph.get(unit, ())), default=-1)
        return out[unit]

    for unit in graph:
        floor(unit)
    return out


def floors_table(graph: dict[str, set[str]], floor_of: dict[str, int]) -> str:
    """The import-floor table as docs/architecture.md writes it (to paste when the code changes)."""
    rows = ["| floor | unit | imports |", "| --- | --- | --- |"]
    for unit in sorted(graph, key=lambda u: (floor_of[u], u)):
        imports = ", ".join(f"`{d}`" for d in sorted(graph[unit]))
        rows.append(f"| {floor_of[unit]} | `{unit}` | {imports} |".replace("|  |", "| |"))
    return "\n".join(rows)


def marked_block(text: str, name: str) -> str:
    """The text between ``<!-- name: begin -->`` and ``<!-- name: end -->``."""
    match = re.search(rf"<!-- {name}: begin -->(.*?)<!-- {name}: end -->", text, flags=re.S)
    if match is None:
        raise AssertionError(f"docs/architecture.md has no '{name}' block (markers missing)")
    return match.group(1)


def documented_floors(text: str) -> dict[str, tuple[int, set[str]]]:
    """The rows of the table between the import-floors markers: unit -> (floor, imported units)."""
    rows = {}
    for line in marked_block(text, "import-floors").splitlines():
        row = FLOOR_ROW_RE.match(line.strip())
        if row:
            rows[row.group(2)] = (int(row.group(1)), set(re.findall(r"`([\w.]+)`", row.group(3))))
    return rows


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_path_exists(doc: Path) -> None:
    missing = sorted(p for p in named_paths(doc.read_text(encoding="utf-8")) if not (ROOT / p).exists())
    assert missing == [], f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_module_exists(doc: Path) -> None:
    names = named_modules(doc.read_text(encoding="utf-8"))
    problems = sorted(f"{n} ({why})" for n in names if (why := dotted_problem(n)))
    assert problems == [], f"{doc.name} names modules that do not exist: {problems}"


def test_readme_layout_lists_every_subpackage_and_module() -> None:
    section = layout_section((ROOT / "README.md").read_text(encoding="utf-8"))
    listed = {
        p.rstrip("/").removesuffix(".py").split("/")[1] for p in named_paths(section) if p.count("/") >= 1
    }
    missing = [u for u in package_units() if u not in listed]
    assert missing == [], f"README.md's Layout section does not list: {missing}"


def test_architecture_import_floors_match_the_code() -> None:
    documented = documented_floors((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    graph = unit_graph(set(documented))
    actual = floors(graph)
    problems = []
    for unit in sorted(graph.keys() | documented.keys()):
        if unit not in documented:
            problems.append(f"{unit}: in the code, not in the table")
        elif unit not in graph:
            problems.append(f"{unit}: in the table, not in the code")
        elif documented[unit] != (actual[unit], graph[unit]):
            floor, imports = documented[unit]
            problems.append(
                f"{unit}: table says floor {floor} importing {sorted(imports)}; "
                f"the code has floor {actual[unit]} importing {sorted(graph[unit])}"
            )
    assert problems == [], (
        "docs/architecture.md's import floors are stale:\n"
        + "\n".join(problems)
        + "\n\nthe table as the code stands:\n"
        + floors_table(graph, actual)
    )


def test_architecture_stage_table_matches_the_main_job() -> None:
    text = marked_block((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"), "main-job-stages")
    documented = []
    for line in text.splitlines():
        row = re.match(r"^\|\s*`(\w+)`\s*\|([^|]*)\|", line.strip())
        if row:
            documented.append((row.group(1), tuple(re.findall(r"`(\w+)`", row.group(2)))))
    actual = [(s.name, tuple(s.after)) for s in main_job_stages()]
    assert documented == actual, f"docs/architecture.md's stage table is stale; the code has {actual}"


def test_the_checks_catch_what_they_should() -> None:
    text = "see `musicdistill/nowhere.py`, musicdistill.model.text.null_condition and musicdistill.nothing."
    assert named_paths(text) == {"musicdistill/nowhere.py"}
    assert named_modules(text) == {"musicdistill.model.text.null_condition", "musicdistill.nothing"}
    assert dotted_problem("musicdistill.model.text.null_condition") is None
    assert dotted_problem("musicdistill.model.text.no_such_name") is not None
    assert dotted_problem("musicdistill.nothing") == "musicdistill defines no 'nothing'"
    assert dotted_problem("musicdistill.load") is None  # the lazily imported API
    assert dotted_problem("musicdistil.nothing") == "no such module"
    assert floors({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == {"b": 0, "a": 1, "c": 2}
    with pytest.raises(AssertionError, match="loop"):
        floors({"a": {"b"}, "b": {"a"}})
    assert unit_of("musicdistill.training.distill", {"training.distill", "training"}) == "training.distill"
    assert unit_of("musicdistill.training.losses", {"training.distill", "training"}) == "training"
    assert unit_of("musicdistill", set()) == "__init__"
