"""The package's import graph: no cycles, and no module imports from a higher floor.

Floors, lowest first (a module may import its own floor and the floors below it)::

    0 utils, version, streaming, testing (the contract's data types)
    1 registry, checkpoint, checkpoint_checks
    2 layers, outputs
    3 audio, vision, video, moe          (the families: each other only without cycles)
    4 models                             (language models, sampling, generation)
    5 speech                             (Talker, duplex, turn-taking, Thinker-Talker)
    6 fusion                             (early / cross-attention fusion, Thinker; re-exports speech)
    7 convert, data                      (published checkpoints and interop; processors and datasets)
    8 distributed and anything else, the package root (strategies: FSDP2, TP, EP; they export
                                         through convert and read the registry through the root)

Every ``import`` counts, inside functions too (a lazy import hides a cycle, it does not remove
it), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "omnikit"

FLOORS = {
    "utils": 0, "version": 0, "streaming": 0, "testing": 0,
    "registry": 1, "checkpoint": 1, "checkpoint_checks": 1,
    "layers": 2, "outputs": 2,
    "audio": 3, "vision": 3, "video": 3, "moe": 3,
    "models": 4,
    "speech": 5,
    "fusion": 6,
    "convert": 7, "data": 7,
}
TOP = 8


def module_name(path: Path) -> str:
    parts = ("omnikit", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import submodule`` depends on the submodule; any other name on the module
            found.update(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            )
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {name: _imports(ast.parse(path.read_text()), modules) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_upward_imports() -> None:
    upward = sorted(
        f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
        for a, targets in import_graph().items() for b in targets if floor(b) > floor(a)
    )
    assert upward == []


def test_families_do_not_form_cycles() -> None:
    """Packages as nodes: vision and video, say, may not import each other both ways."""
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for a, targets in graph.items():
        top = ".".join(a.split(".")[:2])
        packages.setdefault(top, set()).update(".".join(b.split(".")[:2]) for b in targets)
    for top in packages:
        packages[top].discard(top)
        packages[top] = {b for b in packages[top] if b in packages and b != "omnikit"}
    assert cycles({k: v for k, v in packages.items() if k != "omnikit"}) == []


@pytest.mark.parametrize("source,expected", [
    ("import omnikit.layers\n", {"omnikit.layers"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from omnikit.fusion import x\n", set()),
    ("def f():\n    from omnikit.layers import masks\n", {"omnikit.layers.masks"}),
    ("from omnikit.layers import masks, x\n", {"omnikit.layers", "omnikit.layers.masks"}),
])
def test_walker_sees_imports(source: str, expected: set[str]) -> None:
    modules = {"omnikit.layers", "omnikit.layers.masks", "omnikit.fusion"}
    assert _imports(ast.parse(source), modules) == expected
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
