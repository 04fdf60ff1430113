"""The package's shape: no import cycles, and internal imports at module level only.

Every package-internal import is read from the source (``ast``), resolved to the module it names,
and the graph of modules is searched for cycles. A function-level internal import is allowed only
to defer an optional heavy dependency; none is needed today, so none is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "musicdistill"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.AST, known: dict[str, Path]) -> set[str]:
    """Package modules an import statement loads (``from pkg import mod`` counts ``pkg.mod``)."""
    found = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
        return found
    for name in names:
        if name.startswith("musicdistill") and name in known:
            found.add(name)
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> modules it imports at module level, function-level internal imports as 'file:line')."""
    known = modules()
    graph: dict[str, set[str]] = {}
    nested: list[str] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = set()
        for node in tree.body:
            graph[name] |= imported_modules(node, known)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if imported_modules(inner, known):
                        nested.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
        graph[name].discard(name)
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for root in graph:
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_internal_imports_are_at_module_level() -> None:
    _, nested = import_graph()
    assert nested == [], f"package-internal imports inside functions: {nested}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_from_package_import_module_counts_the_module() -> None:
    known = {"musicdistill.generation": Path("x"), "musicdistill.generation.fast_decode": Path("y")}
    node = ast.parse("from musicdistill.generation import fast_decode").body[0]
    assert imported_modules(node, known) == {"musicdistill.generation", "musicdistill.generation.fast_decode"}
