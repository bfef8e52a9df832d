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


def test_discover_filters_notebooks():
    assert [p.name[:2] for p in run.discover(track="ecf")] == ["01", "02", "03", "04", "05", "06", "10"]
    assert [p.name[:2] for p in run.discover(track="empathetic")] == ["07", "08", "09", "10"]
    assert [p.name[:2] for p in run.discover(only=["03", "02"])] == ["02", "03"]  # series order, not the asked order
    with pytest.raises(run.RunError, match="matches no notebook"):
        run.discover(only=["99"])


def test_cli_values_are_typed_by_the_field_they_set():
    books = run.discover(track="all")
    values = run.typed({"LEARNING_RATE": "1e-4", "MODEL": "010", "TEST_PATH": "yes", "SMOKE": "yes",
                        "EPOCHS": "2", "LIMIT": "3", "TEST_DIR": "out", "DATA_PTH": "x"}, books)
    assert values == {"LEARNING_RATE": 0.0001, "MODEL": "010", "TEST_PATH": "yes", "SMOKE": True, "EPOCHS": 2.0,
                      "LIMIT": 3, "TEST_DIR": "out", "DATA_PTH": "x"}  # an unknown name stays text: plan refuses it
    assert isinstance(values["EPOCHS"], float)
    with pytest.raises(run.RunError, match=r"'EPOCHS' must be float, got 'abc' \(declared by notebooks 02, 04, 08, 09\)"):
        run.typed({"EPOCHS": "abc"}, books)


@pytest.fixture
def executed(monkeypatch):
    """utils.run with execute() recorded instead of run: (notebook, parameters) per call."""
    calls = []
    monkeypatch.setattr(run, "execute", lambda book, params, out_dir: calls.append((book.name[:2], params)) or 0.0)
    monkeypatch.setattr(run, "write_json_atomic", lambda path, obj: path)
    return calls


def test_a_mistyped_parameter_stops_the_run_before_the_first_notebook(executed, capsys):
    assert run.main(["-p", "EPOCHS", "abc"]) == 1
    err = capsys.readouterr().err
    assert "'EPOCHS' must be float, got 'abc'" in err and executed == []
    assert run.main(["-p", "STYLE", "prose", "--only", "02,03"]) == 1  # a value the dataclass refuses
    assert "02_emotion_finetuning.ipynb: STYLE='prose'" in capsys.readouterr().err and executed == []


def test_bad_parameters_stop_a_smoke_run_before_the_tiny_model_is_built(monkeypatch):
    monkeypatch.setattr(run, "smoke_model", lambda directory: pytest.fail("built the model"))
    with pytest.raises(run.RunError, match="'LIMIT' must be int"):
        run.run_series({"LIMIT": "3"}, only=["02"], smoke=True)


def test_command_line_and_config_values_reach_the_notebooks_typed(executed, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("LEARNING_RATE: 1e-4\nMODEL: 010\nTEST_PATH: yes\nLIMIT: 5\n", encoding="utf-8")
    assert run.main(["--config", str(config), "-p", "LIMIT", "7", "--only", "01,02"]) == 0
    (_, eda), (_, finetune) = executed
    assert eda == {"LIMIT": 7}
    assert finetune == {"LEARNING_RATE": 0.0001, "MODEL": "010", "TEST_PATH": "yes", "LIMIT": 7}
    assert isinstance(finetune["LEARNING_RATE"], float)


@pytest.mark.parametrize("content", [None, b"LIMIT: [1,\n", b"\xff\xfe LIMIT: 3", b"- LIMIT\n", b"LIMIT: [1]\n"],
                         ids=["missing", "broken", "not-utf8", "not-a-mapping", "nested"])
def test_a_bad_config_file_is_one_line_naming_it(content, tmp_path, executed, capsys):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_bytes(content)
    assert run.main(["--config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --config {path}: "), captured.err
    assert "Traceback" not in captured.err and executed == []


def test_notebook_01_follows_train_dir():
    ((book, given),) = run.plan(run.discover(only=["01"]), {"TRAIN_DIR": "elsewhere", "TEST_DIR": "t"})
    assert book.name.startswith("01_") and given == {"TRAIN_DIR": "elsewhere"}  # TEST_DIR: the runner's only


def test_list_prints_every_parameter_from_the_dataclasses(capsys):
    assert run.main(["--list", "--only", "01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "01_eda.ipynb" and len(out) == 7
    assert out[2].startswith('  TRAIN_DIR = "results_train"  # figures -> TRAIN_DIR/figures/')


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
