"""The service's shape, checked: no import cycles, layers that only look down, small modules.

docs/architecture.md draws the layers; this test keeps the drawing true. Every import
counts, including those inside functions (a cycle hidden in a function is still a cycle
a reader must untangle), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "cartpulse"
#: Longest module, in lines (the issue that regrouped the service set ~400).
MAX_LINES = 400
#: Which subpackages each layer may import, besides its own and the shared modules
#: (config, errors, context). cli and app sit on top and may import anything.
ALLOWED = {
    "project": set(),
    "storage": {"project"},
    "access": {"storage", "project"},
    "ingest": {"storage", "project", "access", "ops.metrics"},
    "serving": {"storage", "project", "access", "ingest", "ops.metrics"},
    "ops": {"storage", "project", "access"},
    "web": {"storage", "project", "access", "serving", "ingest"},
}
SHARED = {"config", "errors", "context"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> set[str]:
    """The cartpulse modules ``path`` imports (``from cartpulse.x import y`` counts as
    cartpulse.x.y when that is a module, else cartpulse.x)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _under_type_checking(node, parents):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cartpulse"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cartpulse"))
    return found - {module_name(path)}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_no_import_cycles():
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == "open":
                cycle = trail[trail.index(target):] + [target] if target in trail else [name, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.count(".") >= 2))
def test_layers_only_import_downwards(name):
    layer = name.split(".")[1]
    if layer not in ALLOWED:
        return  # cli: the top
    allowed = ALLOWED[layer] | {layer} | SHARED
    for target in GRAPH[name]:
        rest = target.removeprefix("cartpulse.")
        if rest in ("", "app"):
            pytest.fail(f"{name} imports {target}: only cli may")
        if not any(rest == a or rest.startswith(a + ".") for a in allowed):
            pytest.fail(f"{name} ({layer}) imports {target}; {layer} may import {sorted(allowed)}")


def test_modules_stay_small():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: lines for n, lines in long.items() if lines > MAX_LINES} == {}
