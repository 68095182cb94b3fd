"""The package's shape, checked: no import cycle between edgekit's packages and top-level modules, no
in-tree module loaded by name through importlib, and no module grown past what one reader can hold."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edgekit"
MAX_LINES = 450


def _unit(module: str) -> str:
    """The layer a module belongs to: ``edgekit.<package>`` or a top-level ``edgekit.<module>``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> where (file:line), for every import of an edgekit module (lazy ones too)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(_module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" if node.module == "edgekit" else node.module
                           for alias in node.names]
            for target in targets:
                if target.startswith("edgekit.") and _unit(target) != source:
                    graph[source][_unit(target)].append(f"{path.relative_to(REPO)}:{node.lineno}")
    return graph


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, {}):
            if nxt in path:
                cycle = [*path[path.index(nxt):], nxt]
                cycles.append(" -> ".join(cycle) + f" (first edge at {graph[cycle[0]][cycle[1]][0]})")
            elif len(path) < 20:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles between edgekit's packages:\n" + "\n".join(sorted(set(cycles)))


def test_no_in_tree_module_is_loaded_by_name() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and str(first.value).startswith("edgekit"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
                if isinstance(first, ast.JoinedStr) and "edgekit" in ast.unparse(first):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    # The one allowed: edgekit.store's lazy __getattr__ (importing DuckDB only when a name is used).
    assert offenders == ["edgekit/store/__init__.py:26"], offenders


def test_modules_stay_readable() -> None:
    long = [f"{p.relative_to(REPO)} ({n} lines)" for p in sorted([*PACKAGE.rglob("*.py"),
                                                                 *(REPO / "device_agents").rglob("*.py"),
                                                                 *(REPO / "device_agents").rglob("*.sh")])
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: {long}"
