"""The package's shape: no import cycle (function-level imports included), a headless core, small units.

These read the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "napari_nst"

#: the longest class and function allowed in src/ (lines, decorators and docstring included)
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
#: declaration tables: one entry per option, each a few lines (the dataclass of every engine option)
DECLARATION_TABLES = {"napari_nst.core.options.Options"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _target(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (functions included).
    ``from pkg import name`` counts as importing ``pkg.name`` where that is a module, else ``pkg``;
    importing a submodule is not counted as importing the packages above it (Python runs their
    ``__init__`` first, but they do not depend on it)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                tgt = _target(mod, node, path.name == "__init__.py")
                for alias in node.names:
                    name = f"{tgt}.{alias.name}"
                    graph[mod].add(name if name in mods else tgt)
            elif isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names)
        graph[mod] = {t for t in graph[mod] if t in mods and t != mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    # the check above must be able to fail
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_counts_function_level_imports(tmp_path: Path) -> None:
    graph = import_graph()
    # core/optim/engine.py imports the tiles module at module level, the CLI imports the api inside a function
    assert "napari_nst.core.objective.tiles" in graph["napari_nst.core.optim.engine"]
    assert "napari_nst.core.api" in graph["napari_nst.cli"]


@pytest.mark.parametrize("forbidden", ["napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"])
def test_core_imports_neither_qt_nor_napari(forbidden: str) -> None:
    for mod, path in _modules().items():
        if not mod.startswith("napari_nst.core"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert not any(n == forbidden or n.startswith(forbidden + ".") for n in names), f"{mod} imports {forbidden}"


def _long_units() -> list[str]:
    found = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = (node.end_lineno or node.lineno) - start + 1
            if lines > limit and f"{mod}.{node.name}" not in DECLARATION_TABLES:
                found.append(f"{mod}.{node.name}: {lines} lines (limit {limit})")
    return found


def test_no_long_class_or_function() -> None:
    assert _long_units() == []
