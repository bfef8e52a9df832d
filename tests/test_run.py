"""The series runner, notebook hygiene and the parameter config."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from functools import partialmethod

import papermill
import pytest

from utils import bootstrap, env, params, progress, run
from utils.env import ROOT, resolve

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = papermill.inspect_notebook(str(path))
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


def test_a_cause_model_on_predicted_emotions_needs_the_train_labels_in_the_same_run():
    books = run.discover(only=["03", "04"])
    with pytest.raises(run.RunError, match="LABEL_TRAIN=True"):
        run.plan(books, {"CAUSE_EMOTIONS": "predicted"})
    assert len(run.plan(books, {"CAUSE_EMOTIONS": "predicted", "LABEL_TRAIN": True})) == 2
    assert len(run.plan(books, {})) == 2  # the defaults: gold emotions, no train labels needed
    assert len(run.plan(run.discover(only=["04"]), {"CAUSE_EMOTIONS": "predicted"})) == 1  # 03 ran before


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


def test_the_smoke_model_is_built_from_the_first_tracks_sample(monkeypatch, tmp_path):
    from utils.ecf.data import EMOTIONS
    from utils.ed.data import EMOTIONS_32
    from utils.lm import tiny

    built = []
    monkeypatch.setattr(tiny, "build_tiny_llama", lambda directory, texts, words: built.append(
        (directory.name, len(texts), tuple(words))) or directory)
    assert run.smoke_model(run.discover(["01", "02"]), tmp_path) == tmp_path / "tiny-llama"
    assert run.smoke_model(run.discover(["07", "08"], "all"), tmp_path) == tmp_path / "tiny-llama-empathetic"
    assert run.smoke_model(run.discover(["01"]), tmp_path) is None  # no notebook of the run loads a model
    (ecf_name, ecf_texts, ecf_words), (ed_name, ed_texts, ed_words) = built
    assert ecf_words == (*EMOTIONS, "yes", "no") and ed_words == EMOTIONS_32 and ecf_texts > 0 and ed_texts > 0


def test_bad_parameters_stop_a_smoke_run_before_the_tiny_model_is_built(monkeypatch):
    monkeypatch.setattr(run, "smoke_model", lambda books, folder: pytest.fail("built the model"))
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
    from utils.ecf.eda import EdaConfig

    assert out[0] == "01_eda.ipynb" and len(out) == 1 + len(dataclasses.fields(EdaConfig)) == 11
    assert out[1].startswith(f'  REPO_URL = "{env.REPO_URL}"  # ')
    assert out[5].startswith('  TRAIN_DIR = "results_train"  # figures -> TRAIN_DIR/figures/')


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


# ---------------------------------------------------------------- what the terminal shows (utils.progress)

class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _code(source: str, outputs=(), tags=()) -> dict:
    return {"cell_type": "code", "source": source, "outputs": list(outputs), "metadata": {"tags": list(tags)}}


TQDM = {"output_type": "stream", "name": "stderr",
        "text": "\remotions:   0%|          | 0/28 [00:00<?, ?it/s]"
                "\remotions:  57%|█████▋    | 16/28 [00:08<00:06,  1.92it/s]"}
TRAINER = {"output_type": "display_data", "data": {"text/plain": "<IPython.core.display.HTML object>", "text/html": (
    "\n    <div>\n      \n      <progress value='3' max='8' style='width:300px; height:20px;'></progress>\n"
    "      [3/8 00:02 < 00:05, 1.20 it/s, Epoch 0.38/1]\n    </div>\n    <table>...</table>")}}


def test_a_cell_is_summed_up_by_its_first_statement():
    assert progress.cell_summary("import pandas as pd\nfrom x import y\n\nCFG = build(1)\nCFG") == "CFG = build(1)"
    assert progress.cell_summary(bootstrap.cell_source()) == "ROOT = find_project(REPO_URL, REPO_REF)"
    assert progress.cell_summary("# only a comment") == "# only a comment"
    assert len(progress.cell_summary("x = " + "1" * 200)) == 90


def test_the_latest_progress_bar_of_a_cell_is_one_line():
    assert progress.latest_bar([TQDM]) == "emotions 57% 16/28 [00:08<00:06,  1.92it/s]"
    assert progress.latest_bar([TQDM, TRAINER]) == "trainer [3/8 00:02 < 00:05, 1.20 it/s, Epoch 0.38/1]"
    warning = {"output_type": "stream", "name": "stderr", "text": "UserWarning: something\n"}
    assert progress.latest_bar([TQDM, warning]) == "emotions 57% 16/28 [00:08<00:06,  1.92it/s]"
    assert progress.latest_bar([warning, {"output_type": "execute_result", "data": {"text/plain": "1"}}]) is None


def test_one_line_per_code_cell_and_throttled_progress_in_a_log(monkeypatch):
    out = Terminal(tty=False)
    feedback = progress.Feedback("02_x.ipynb", out)
    cells = [{"cell_type": "markdown", "source": "# x"}, _code("A = 1", tags=["parameters"]),
             _code("A = 2", tags=["injected-parameters"]), _code("ENV = setup()"), _code("result = train()", [TQDM])]
    clock = iter(range(0, 1000, 20))  # each call of the clock: 20 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    for index, cell in enumerate(cells):
        feedback.cell_start(cell, index, cells)
        feedback.message()  # 20 s into the cell: too early for a progress line
        feedback.message()  # 40 s: the latest bar
        feedback.message()  # 20 s after it: nothing
    feedback.close()
    assert out.getvalue().splitlines() == ["[emocause] 02_x.ipynb cell 2/3: ENV = setup()",
                                           "[emocause] 02_x.ipynb cell 3/3: result = train()",
                                           "    emotions 57% 16/28 [00:08<00:06,  1.92it/s]"]


def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    out = Terminal(tty=True)
    feedback = progress.Feedback("03_x.ipynb", out, every_s=0)
    cell = _code("labels = predict()", [TQDM])
    feedback.cell_start(cell, 0, [cell])
    feedback.message()
    cell["outputs"].append(TRAINER)
    feedback.message()
    feedback.close()
    assert out.getvalue() == ("[emocause] 03_x.ipynb cell 1/1: labels = predict()\n"
                              "\r\x1b[K    emotions 57% 16/28 [00:08<00:06,  1.92it/s]"
                              "\r\x1b[K    trainer [3/8 00:02 < 00:05, 1.20 it/s, Epoch 0.38/1]\n")


@pytest.mark.slow
def test_a_notebook_run_prints_its_cells_and_progress(tmp_path, capsys, monkeypatch):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("STEPS = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(STEPS), desc='work', "
                                  "file=sys.stderr):\n    pass"),
        nbformat.v4.new_code_cell("print('done')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, book)
    monkeypatch.setattr(progress.Feedback, "__init__", partialmethod(progress.Feedback.__init__, every_s=0))
    run.execute(book, {"STEPS": 4}, tmp_path / "executed")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[emocause] 99_demo.ipynb cell 2/3: for _ in tqdm(range(STEPS), desc='work', file=sys.stderr):"
    assert lines[-1] == "[emocause] 99_demo.ipynb cell 3/3: print('done')"
    assert lines[1:-1] and all(re.fullmatch(r"    work \d+% \d/4 .*", line) for line in lines[1:-1]), lines
