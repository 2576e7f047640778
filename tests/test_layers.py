"""The house's floors, read from the code itself (issue 20): pipeline/ is the ground floor and imports
nothing from classifiers/, reports/ or flows/; flows/ is the top floor; no import cycle between project
modules; every module of the four packages stays under 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "classifiers", "reports", "flows")
FLOOR = {"pipeline": 0, "classifiers": 1, "reports": 2, "flows": 3}
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imports_in(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """Project modules imported anywhere in ``source`` (imports inside functions count: they climb too)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from x import y`: y is a module of its own, or a name defined in x (then x is the import)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> nx.DiGraph:
    modules = project_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        graph.add_edges_from((name, target) for target in imports_in(source, name, path.name == "__init__.py",
                                                                      set(modules)))
    return graph


def climbing(graph: nx.DiGraph) -> list[str]:
    return sorted(f"{a} -> {b}" for a, b in graph.edges if FLOOR[a.split(".")[0]] < FLOOR[b.split(".")[0]])


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    return [c for c in nx.simple_cycles(graph) if len(c) > 1]


def test_no_floor_imports_a_floor_above_it() -> None:
    upward = climbing(import_graph())
    assert not upward, "imports that climb a floor:\n" + "\n".join(upward)


def test_no_import_cycle_between_project_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in found[:20])


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_every_module_stays_small(name: str) -> None:
    lines = len(project_modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{name}: {lines} lines (split it by job; the limit is {MAX_LINES})"


def test_the_checker_finds_a_planted_climb_and_cycle() -> None:
    """The checker itself can fail: a function-level climb, a relative import and a two-module cycle."""
    modules = {"pipeline", "pipeline.a", "pipeline.b", "reports", "reports.html"}
    a = imports_in("def f():\n    from reports.html import render\n    from . import b\n", "pipeline.a", False, modules)
    b = imports_in("from .a import f\n", "pipeline.b", False, modules)
    assert a == {"reports.html", "pipeline.b"} and b == {"pipeline.a"}
    graph = nx.DiGraph([("pipeline.a", t) for t in a] + [("pipeline.b", t) for t in b])
    assert climbing(graph) == ["pipeline.a -> reports.html"]
    assert [sorted(c) for c in cycles(graph)] == [["pipeline.a", "pipeline.b"]]
