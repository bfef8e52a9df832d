"""One source per notebook parameter: the dataclass field; the parameters cells are generated from it and checked."""

from __future__ import annotations

import dataclasses
import json

import papermill
import pytest

from utils import bootstrap, params
from utils.params import param

NOTEBOOKS = params.notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_parameters_cell_matches_its_dataclass(path):
    """What ``python -m utils.params --check`` runs: names, order, types, defaults and help."""
    assert params.check([path]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_field_from_the_cell(path):
    # papermill skips a line it cannot parse (a second '=', say): utils.run would never inject it
    cls = params.config_class(path)
    declared = papermill.inspect_notebook(str(path))
    assert list(declared) == [f.name for f in dataclasses.fields(cls)]
    assert [info["help"] for info in declared.values()] == [params.help_of(f) for f in dataclasses.fields(cls)]


def test_registry_names_a_dataclass_for_every_numbered_notebook():
    assert [p.name[:2] for p in NOTEBOOKS] == sorted(params.CONFIGS)
    assert params.config_class("04").__name__ == "CauseFinetuneConfig"
    assert params.config_class(NOTEBOOKS[0]).__name__ == "EdaConfig"
    with pytest.raises(params.ConfigError, match="no parameters dataclass"):
        params.config_class("99_new.ipynb")


@dataclasses.dataclass(frozen=True)
class Demo:
    DATA_PATH: str = param("data/x.json", "an input file")
    EPOCHS: float = param(1e-3, "a float")
    LIMIT: int = param(0, "first N rows (0: all)")
    SMOKE: bool = param(False, "tiny run")
    MESSAGE: str = param("it's \"quoted\"", "a string with both quotes")


def _cell(lines):
    return "\n".join(lines)


def test_the_cell_is_one_line_per_field_in_field_order():
    assert params.cell_source(Demo).splitlines() == [
        'DATA_PATH: str = "data/x.json"  # an input file',
        "EPOCHS: float = 0.001  # a float",
        "LIMIT: int = 0  # first N rows (0: all)",
        "SMOKE: bool = False  # tiny run",
        "MESSAGE: str = 'it\\'s \"quoted\"'  # a string with both quotes",
    ]
    assert params.compare(Demo, params.cell_source(Demo)) == []
    assert params.compare(Demo, params.cell_source(Demo).replace("0.001", "1e-3")) == []  # values, not spelling


def test_compare_names_every_parameter_that_differs():
    lines = params.cell_source(Demo).splitlines()
    changed = [lines[1].replace("float = 0.001", "int = 2"),  # EPOCHS: type and default
               lines[0].replace("an input file", "a file"),    # DATA_PATH: help, and now second
               "SEED: int = 1  # not a field",
               lines[3]]                                       # SMOKE; LIMIT and MESSAGE missing
    problems = params.compare(Demo, _cell(changed))
    assert "SEED: in the cell, not a field of Demo" in problems
    assert "LIMIT: a field of Demo, not in the cell" in problems
    assert "MESSAGE: a field of Demo, not in the cell" in problems
    assert "DATA_PATH: at position 2 of the cell, 1 in Demo" in problems
    assert "EPOCHS: at position 1 of the cell, 2 in Demo" in problems
    assert "EPOCHS: annotated int in the cell, float in Demo" in problems
    assert "EPOCHS: default 2 in the cell, 0.001 in Demo" in problems
    assert "DATA_PATH: help 'a file' in the cell, 'an input file' in Demo" in problems
    assert len(problems) == 8, problems
    # a default of the right value but the wrong type differs too (papermill would inject an int)
    assert params.compare(Demo, params.cell_source(Demo).replace("SMOKE: bool = False", "SMOKE: bool = 0")) == \
        ["SMOKE: default 0 in the cell, False in Demo"]


def test_a_line_papermill_would_drop_is_named():
    source = params.cell_source(Demo).replace("# tiny run", "# tiny run (LIMIT = 8)")
    assert params.compare(Demo, source) == [
        "SMOKE: line 4: papermill reads one '=' on one line per parameter",
        "SMOKE: help 'tiny run (LIMIT = 8)' in the cell, 'tiny run' in Demo"]


@dataclasses.dataclass(frozen=True)
class Unwritable:
    LIMIT: int = param(0, "first N rows; 0 = all")
    TAG: str = param("#1", "a tag")
    NOTE: str = param("x")
    SEED: int | None = param(None, "a seed")


def test_the_generator_refuses_what_papermill_would_misread_and_names_the_field():
    problems = params.field_problems(Unwritable)
    assert [p.split(":")[0] for p in problems] == ["Unwritable.LIMIT", "Unwritable.TAG", "Unwritable.NOTE",
                                                   "Unwritable.SEED"]
    assert "'='" in problems[0] and "rephrase" in problems[0]
    assert "'#'" in problems[1] and "no help text" in problems[2] and "str, int, float or bool" in problems[3]
    with pytest.raises(params.ConfigError, match="Unwritable.LIMIT"):
        params.cell_source(Unwritable)


def _notebook(tmp_path, source, setup=None):
    """A notebook: a heading, the parameters cell ``source``, the environment cell ``setup`` (default: the
    current one; False: none)."""
    setup = bootstrap.cell_source() if setup is None else setup
    nb = {"cells": [{"cell_type": "markdown", "id": "md", "metadata": {}, "source": ["# Demo"]},
                    {"cell_type": "code", "execution_count": 3, "id": "cell-01",
                     "metadata": {"tags": ["parameters"], "custom": 1}, "outputs": [{"output_type": "stream"}],
                     "source": source.splitlines(keepends=True)}] +
                   ([{"cell_type": "code", "execution_count": 4, "id": "cell-02", "metadata": {},
                      "outputs": [{"output_type": "stream"}], "source": setup.splitlines(keepends=True)}]
                    if setup else []),
          "metadata": {"kernelspec": {"name": "python3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "01_demo.ipynb"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def test_write_rewrites_only_the_parameters_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(params, "config_class", lambda path: Demo)
    path = _notebook(tmp_path, 'DATA_PATH: str = "old.json"  # an input file\nOUT_DIR: str = "x"  # gone')
    assert [p.split(": ")[1] for p in params.check([path])] == ["OUT_DIR", "EPOCHS", "LIMIT", "SMOKE", "MESSAGE",
                                                                 "DATA_PATH"]
    assert params.write([path]) == ([path], [])
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    assert text == json.dumps(nb, indent=1, ensure_ascii=False) + "\n"  # the committed formatting
    cell = nb["cells"][1]
    assert (cell["id"], cell["metadata"], cell["outputs"], cell["execution_count"]) == \
        ("cell-01", {"tags": ["parameters"], "custom": 1}, [], None)
    assert "".join(cell["source"]) == params.cell_source(Demo) and nb["cells"][0]["source"] == ["# Demo"]
    assert params.check([path]) == []
    assert params.write([path]) == ([], [])  # nothing differs: nothing written
    assert list(papermill.inspect_notebook(str(path))) == [f.name for f in dataclasses.fields(Demo)]


def test_write_rewrites_a_stale_environment_cell_and_check_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(params, "config_class", lambda path: Demo)
    path = _notebook(tmp_path, params.cell_source(Demo), setup="from utils import env\nENV = env.setup()")
    assert params.check([path]) == ["01_demo.ipynb: the environment cell differs from utils.bootstrap.cell_source()"]
    assert params.write([path]) == ([path], [])
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert "".join(cells[2]["source"]) == bootstrap.cell_source() and cells[2]["id"] == "cell-02"
    assert (cells[2]["outputs"], cells[2]["execution_count"]) == ([], None)
    assert cells[1]["execution_count"] == 3  # the parameters cell matched: left as it was
    assert params.check([path]) == []
    no_setup = _notebook(tmp_path, params.cell_source(Demo), setup=False)
    assert params.check([no_setup]) == ["01_demo.ipynb: no code cell after the parameters cell for the "
                                        "environment cell"]


def test_every_notebook_carries_the_same_environment_cell():
    sources = set()
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        sources.add("".join(params.environment_cell(nb, path)["source"]))
    assert sources == {bootstrap.cell_source()}
    cell = bootstrap.cell_source()
    assert "def find_project(" in cell and "ENV = env.setup(persist_dir=PERSIST_DIR)" in cell


def test_every_notebook_declares_where_the_project_comes_from_and_where_artifacts_persist():
    for path in NOTEBOOKS:
        names = [f.name for f in dataclasses.fields(params.config_class(path))]
        assert names[:3] == ["REPO_URL", "REPO_REF", "PERSIST_DIR"], path.name


def test_write_refuses_a_dataclass_it_cannot_render(tmp_path, monkeypatch):
    monkeypatch.setattr(params, "config_class", lambda path: Unwritable)
    path = _notebook(tmp_path, "LIMIT: int = 0  # rows")
    before = path.read_text(encoding="utf-8")
    written, problems = params.write([path])
    assert written == [] and problems and "Unwritable.LIMIT" in problems[0]
    assert path.read_text(encoding="utf-8") == before


def test_main_check_exits_1_naming_the_parameter(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(params, "config_class", lambda path: Demo)
    monkeypatch.setattr(params, "NOTEBOOK_DIR", tmp_path)
    _notebook(tmp_path, params.cell_source(Demo).replace("# a float", "# a number"))
    assert params.main(["--check"]) == 1
    assert "01_demo.ipynb: EPOCHS: help 'a number' in the cell, 'a float' in Demo" in capsys.readouterr().err
    assert params.main(["--write"]) == 0 and params.main(["--check"]) == 0


def test_text_is_typed_by_the_field():
    assert params.from_text("LEARNING_RATE", "1e-4", float) == 0.0001
    assert params.from_text("EPOCHS", "2", float) == 2.0 and isinstance(params.from_text("E", "2", float), float)
    assert params.from_text("MODEL", "010", str) == "010" and params.from_text("MODEL", "yes", str) == "yes"
    assert params.from_text("LIMIT", "010", int) == 10
    assert params.from_text("SMOKE", "yes", bool) is True and params.from_text("SMOKE", "False", bool) is False
    assert params.from_text("SEED", "null", int | None) is None and params.from_text("SEED", "3", int | None) == 3
    for name, text, annotation in (("EPOCHS", "abc", float), ("LIMIT", "1.5", int), ("SMOKE", "maybe", bool)):
        with pytest.raises(params.ConfigError, match=rf"'{name}' must be {annotation.__name__}, got '{text}'"):
            params.from_text(name, text, annotation)


def test_a_notebook_with_a_typo_in_a_parameter_name_stops_instead_of_ignoring_it():
    cls = params.config_class("02")
    with pytest.raises(params.ConfigError, match=r"'MODLE' \(did you mean MODEL\?\).*would ignore it"):
        params.from_namespace(cls, {"MODLE": "x", "ROOT": "/repo", "ENV": None})
    kept = {"MODEL": "x", "ROOT": "/repo", "MODELS": object(), "In": [], "_i1": ""}  # not plain values or not near
    assert params.from_namespace(cls, kept).MODEL == "x"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_global_a_notebook_assigns_reads_as_a_typo_of_its_parameters(path):
    """Every upper-case global any cell assigns (a rerun in one kernel sees them all) stays clear of the typo
    check: a literal as itself, anything else as the object it is."""
    import ast

    nb = json.loads(path.read_text(encoding="utf-8"))
    cls = params.config_class(path)
    found = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" not in cell.get("metadata", {}).get("tags", []):
            lines = "".join(cell["source"]).splitlines()
            tree = ast.parse("\n".join(l for l in lines if not l.lstrip().startswith(("!", "%"))))  # shell, magics
            for node in ast.walk(tree):
                value = node.value.value if isinstance(getattr(node, "value", None), ast.Constant) else object()
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                found |= {t.id: value for t in targets if isinstance(t, ast.Name) and t.id.isupper()}
    assert found  # ROOT, ENV, CFG at least
    params.from_namespace(cls, {**found, **{f.name: f.default for f in dataclasses.fields(cls)}})
