"""The transport's layers import one another in one direction only, and
the HTTP/2 core stays free of asyncio and gRPC."""
from __future__ import annotations

import ast
import importlib
import pathlib

import brain.transport

ROOT = pathlib.Path(brain.transport.__file__).parent
PACKAGE = "brain.transport"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([PACKAGE, *parts])] = path
    return out


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """Every module of the package this file imports, wherever the import
    statement is (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` depends on that module; `from
            # module import name` on the module
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
    return found


def test_every_module_imports():
    for name in _modules():
        importlib.import_module(name)


def test_import_graph_is_acyclic():
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, "import cycle: " + " -> ".join(trail + [name])
        state[name] = 1
        for dep in sorted(graph[name]):
            visit(dep, trail + [name])
        state[name] = 2

    for name in graph:
        visit(name, [])


def test_h2_core_knows_no_asyncio_or_grpc():
    for path in (ROOT / "h2").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("asyncio", "grpc", "socket", "ssl"), (path.name, name)
                assert not name.startswith(PACKAGE) or name.startswith(PACKAGE + ".h2"), (path.name, name)
