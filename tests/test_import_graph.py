"""brain's and the engines' modules import one another in one direction
only: each package reads as layers (request -> service -> apply -> mvcc ->
engine), and no module needs another that needs it back."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("brain", "engines", "bench")
GENERATED = ("brain/etcdpb",)


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if any(str(rel).startswith(g) for g in GENERATED):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """The package's modules this file imports anywhere (functions and
    TYPE_CHECKING blocks included: a cycle there is still a cycle of design)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def import_graph(prefix: str = "") -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports, for the modules
    whose name starts with prefix."""
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items() if name.startswith(prefix)}


def assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, "import cycle: " + " -> ".join(trail + [name])
        state[name] = 1
        for dep in sorted(graph[name] & graph.keys()):
            visit(dep, trail + [name])
        state[name] = 2

    for name in graph:
        visit(name, [])


def test_no_import_cycles():
    assert_acyclic(import_graph())


def test_server_does_not_import_bench():
    """bench is a client of brain, never a part of it."""
    graph = import_graph()
    reached = {(name, dep) for name, deps in graph.items() if not name.startswith("bench") for dep in deps if dep.startswith("bench")}
    assert not reached
