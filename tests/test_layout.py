"""The package's floors hold: no import cycle, the shared floors and the empathetic track import nothing of the
ECF track (nor the ECF track of the empathetic one), no module keeps state behind a ``global``, and none
grows past 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "utils"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The utils modules ``path`` imports, at module level or inside a function."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != _module(path)}
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(name):] + (name,)))
        if name in done:
            return
        for dep in sorted(GRAPH[name]):
            visit(dep, path + (name,))
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, ())


@pytest.mark.parametrize("floor, forbidden", [
    ("utils.lm", ("utils.ecf", "utils.ed")),
    ("utils.ed", ("utils.ecf",)),
    ("utils.ecf", ("utils.ed",)),
    ("utils.run", ("utils.ecf", "utils.ed")),
    ("utils.params", ("utils.ecf", "utils.ed", "utils.lm")),
])
def test_a_floor_imports_nothing_of_the_tracks_above_it(floor, forbidden):
    crossing = sorted(f"{name} -> {dep}" for name, deps in GRAPH.items() if name == floor or name.startswith(floor + ".")
                      for dep in deps if dep.startswith(forbidden))
    assert not crossing, crossing


def test_no_module_keeps_state_behind_a_global():
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in MODULES.values()
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.Global)]
    assert not found, found


MAX_LINES = 450  # past this a module holds more than one concern: split it into parts a newcomer can place


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines, split them: {long}"


def test_the_checker_sees_imports_inside_functions():  # the graph above would be blind without them
    assert "utils.lm.tiny" in GRAPH["utils.run"]  # imported inside smoke_model only
    assert "utils.ecf.data" in GRAPH["utils.docs"]  # imported inside _corpus_utterances only
