"""The series runner, notebook hygiene and the parameter config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from utils import params, run
from utils.env import ROOT, resolve

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = run.declared_parameters(path)
    assert params and all(info["help"] for info in params.values()), "every parameter has a trailing comment"
    following = "".join(nb["cells"][tagged[0] + 1]["source"])
    assert "env.setup(" in following, "the cell after the parameters is the environment cell"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_unknown_parameter_is_refused_with_the_known_names():
    books = run.discover(only=["01"])
    with pytest.raises(run.RunError, match=r"unknown parameter\(s\) \['DATA_PTH'\].*DATA_PATH"):
        run.plan(books, {"DATA_PTH": "x.json"})
    (book, params), = run.plan(books, {"DATA_PATH": "x.json"})
    assert book.name.startswith("01_") and params == {"DATA_PATH": "x.json"}


def test_discover_filters_and_cli_values_are_typed():
    assert [p.name[:2] for p in run.discover(track="ecf")] == ["01", "02", "03", "04", "05", "06", "10"]
    assert [p.name[:2] for p in run.discover(track="empathetic")] == ["07", "08", "09", "10"]
    assert [p.name[:2] for p in run.discover(only=["03", "02"])] == ["02", "03"]  # series order, not the asked order
    with pytest.raises(run.RunError, match="matches no notebook"):
        run.discover(only=["99"])
    assert run.parse_value("3") == 3 and run.parse_value("0.5") == 0.5 and run.parse_value("true") is True
    assert run.parse_value("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert run.parse_value("a: b") == "a: b" and run.parse_value("") == ""


@dataclasses.dataclass
class Demo:
    DATA_PATH: str = "data/x.json"
    EPOCHS: float = 1.0
    LIMIT: int = 0
    SMOKE: bool = False
    SEED: int | None = None


def test_config_validates_names_and_types():
    cfg = params.from_namespace(Demo, {"DATA_PATH": "y.json", "EPOCHS": 2, "LIMIT": 3, "other": 1})
    assert cfg == Demo("y.json", 2.0, 3) and isinstance(cfg.EPOCHS, float)
    with pytest.raises(params.ConfigError, match="unknown parameter.*'EPOCH'"):
        params.build(Demo, {"EPOCH": 2})
    with pytest.raises(params.ConfigError, match="'LIMIT' must be"):
        params.build(Demo, {"LIMIT": "3"})
    with pytest.raises(params.ConfigError, match="'SMOKE' must be"):
        params.build(Demo, {"SMOKE": 1})
    assert params.build(Demo, {"SEED": None}).SEED is None


def test_resolve_is_relative_to_the_repository():
    assert resolve("results_test") == ROOT / "results_test"
    assert resolve("/tmp/x") == resolve("/tmp/x").absolute()
