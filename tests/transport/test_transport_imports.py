"""The transport's layers import one another in one direction only, and
the HTTP/2 core stays free of asyncio and gRPC."""
from __future__ import annotations

import ast
import importlib
import pathlib

import brain.transport
from test_import_graph import assert_acyclic, import_graph

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


def test_every_module_imports():
    for name in _modules():
        importlib.import_module(name)


def test_import_graph_is_acyclic():
    graph = import_graph(PACKAGE)
    assert set(graph) == set(_modules())  # every transport module is in it
    assert_acyclic(graph)


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
