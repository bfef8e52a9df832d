"""The series runner, notebook hygiene and the parameter config."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from functools import partialmethod

import papermill
import pytest

from utils import bootstrap, env, params, progress, run, run_report
from utils.env import ROOT, resolve
from utils.io import NOTICE

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


def test_unknown_parameter_is_refused_with_the_nearest_known_name():
    books = run.discover(only=["01"])
    with pytest.raises(run.RunError, match=r"unknown parameter\(s\) 'DATA_PTH' \(did you mean DATA_PATH\?\)"):
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


def test_a_model_per_stage_reaches_each_notebook_and_each_loads_its_own(executed):
    assert run.main(["-p", "MODEL", "m", "-p", "CAUSE_MODEL", "c", "--only", "02,03,04,05,06"]) == 0
    assert [p.get("CAUSE_MODEL") for _, p in executed] == ["c"] * 5 and all(p["MODEL"] == "m" for _, p in executed)
    built = {n: params.build(params.config_class(n), p) for n, p in executed}
    assert {n: cfg.MODEL for n, cfg in built.items()} == {"02": "m", "03": "m", "04": "c", "05": "c", "06": "m"}
    assert all((cfg.model_of("emotion"), cfg.model_of("cause")) == ("m", "c") for cfg in built.values())
    assert dataclasses.replace(built["04"], LIMIT=3).model_of("emotion") == "m"  # apply_smoke builds it again
    default = params.build(params.config_class("04"), {"MODEL": "m"})
    assert (default.MODEL, default.EMOTION_MODEL, default.CAUSE_MODEL) == ("m", "", "")  # as before: nothing pinned
    with pytest.raises(run.RunError, match="STYLE='fused' trains one adapter for both stages"):
        run.plan(run.discover(only=["02"]), {"STYLE": "fused", "EMOTION_MODEL": "e", "CAUSE_MODEL": "c"})


def test_discover_filters_notebooks():
    assert [p.name[:2] for p in run.discover(track="ecf")] == ["01", "02", "03", "04", "05", "06", "10", "11"]
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
    monkeypatch.setattr(run, "keep_earlier_results", lambda params, track: [])  # the repository's results stay
    return calls


def test_a_typo_in_a_parameter_name_suggests_the_nearest_names_in_one_short_line(executed, capsys):
    assert run.main(["-p", "MODLE", "x", "-p", "epochs", "2", "-p", "QWERTY", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "'MODLE' (did you mean MODEL?)" in err and "'epochs' (did you mean EPOCHS?)" in err and "'QWERTY'," in err
    assert "python -m utils.run --list" in err and len(err.splitlines()) == 1 and len(err) < 300  # no 60-name list
    assert "LEARNING_RATE" not in err and executed == []


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
    with pytest.raises(params.ConfigError, match=r"unknown parameter.*'EPOCH' \(did you mean EPOCHS\?\)"):
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


def test_a_notice_a_cell_prints_reaches_the_terminal_at_once_and_once():
    out = Terminal(tty=False)
    feedback = progress.Feedback("02_x.ipynb", out, every_s=1000)  # no progress line: only the notice
    cell = _code("result = train()", [{"output_type": "stream", "name": "stdout", "text": "loading\n"}])
    feedback.cell_start(cell, 0, [cell])
    cell["outputs"].append({"output_type": "stream", "name": "stdout",
                            "text": f"{NOTICE}kept the finished run in a.kept-1\nother\n"})
    feedback.message()
    feedback.message()
    cell["outputs"].append({"output_type": "stream", "name": "stderr", "text": f"{NOTICE}not from stdout\n"})
    feedback.message()
    assert out.getvalue().splitlines()[1:] == [f"{NOTICE}kept the finished run in a.kept-1"]


def test_what_a_cell_prints_reaches_the_terminal_with_its_escape_sequences_escaped():
    out = Terminal(tty=False)
    feedback = progress.Feedback("11_x.ipynb", out, every_s=1000)
    cell = _code("mine = analyse()", [])
    feedback.cell_start(cell, 0, [cell])
    cell["outputs"].append({"output_type": "stream", "name": "stdout",
                            "text": f"{NOTICE}moved Ana\x1b]0;title\x07 aside: আমি\n"})
    feedback.message()
    assert out.getvalue().splitlines()[1] == f"{NOTICE}moved Ana\\x1b]0;title\\x07 aside: আমি"


def test_the_parameters_a_notebook_receives_are_echoed_escaped(executed, capsys):
    run.run_series({"MY_CONVERSATION": "Ana: \x9b2J\x1b[31mhi আমি"}, only=["11"])
    said = capsys.readouterr().out
    assert executed and "\x1b" not in said and "\x9b" not in said and "Ana: \\x9b2J\\u001b[31mhi আমি" in said  # JSON escapes C0 only


@pytest.mark.slow
def test_a_notebook_run_prints_its_cells_and_progress(tmp_path, capfd, monkeypatch):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("STEPS = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(STEPS), desc='work', "
                                  "file=sys.stderr):\n    pass"),
        nbformat.v4.new_code_cell("print('done')\nfrom utils.io import notice\nnotice('moved a to b')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, book)
    monkeypatch.setattr(progress.Feedback, "__init__", partialmethod(progress.Feedback.__init__, every_s=0))
    run.execute(book, {"STEPS": 4}, tmp_path / "executed")
    captured = capfd.readouterr()  # the kernel's own stderr too: a separate process
    lines = captured.out.splitlines()
    assert lines[0] == "[emocause] 99_demo.ipynb cell 2/3: for _ in tqdm(range(STEPS), desc='work', file=sys.stderr):"
    assert lines[-2:] == ["[emocause] 99_demo.ipynb cell 3/3: print('done')", f"{NOTICE}moved a to b"]
    assert lines[1:-2] and all(re.fullmatch(r"    work \d+% \d/4 .*", line) for line in lines[1:-2]), lines
    assert "without encryption" not in captured.err and "WARNING" not in captured.err, captured.err


def test_ctrl_c_ends_the_run_in_one_line_naming_where_and_the_command_that_goes_on(monkeypatch, capsys):
    def stopped(book, params, out_dir):
        raise run.Interrupted(f"{book.name} cell 9/14 (result = finetune.finetune(CFG, ...))")

    monkeypatch.setattr(run, "execute", stopped)
    monkeypatch.setattr(run, "keep_earlier_results", lambda params, track: [])
    assert run.main(["--only", "02", "-p", "EPOCHS", "2"]) == run.STOPPED == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "stopped by Ctrl-C in 02_emotion_finetuning.ipynb cell 9/14" in err
    assert "run the same command again: python -m utils.run --only 02 -p EPOCHS 2" in err
    feedback = progress.Feedback("02_x.ipynb", Terminal(tty=False))
    feedback.stopped = True  # Ctrl-C between cells: the next one does not start
    with pytest.raises(KeyboardInterrupt):
        feedback.cell_start(_code("train()"), 0, [_code("train()")])


def _script_notebook(tmp_path, name: str, code: str):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(code), nbformat.v4.new_code_cell("print('after')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / name)
    return tmp_path / name


@pytest.mark.slow
def test_ctrl_c_in_a_real_run_interrupts_the_kernel_and_prints_one_line(tmp_path):
    """python -m utils.run (its cli) on a notebook whose cell sleeps; SIGINT as a terminal's Ctrl-C sends it."""
    import signal
    import subprocess
    import sys
    import time

    book = _script_notebook(tmp_path, "99_sleep.ipynb", "import time\nprint('asleep', flush=True)\ntime.sleep(120)")
    driver = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; from utils import run\n"
              f"book = Path({str(book)!r})\n"
              "run.discover = lambda only, track: [book]; run.typed = lambda texts, books: texts\n"
              "run.plan = lambda books, params: [(book, {})]; run.keep_earlier_results = lambda params, track: []\n"
              f"sys.argv = ['utils.run', '-p', 'TEST_DIR', {str(tmp_path / 'out')!r}]; run.cli()\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    while not any("cell 2/3" in line for line in lines):  # the sleeping cell runs
        lines.append(proc.stdout.readline())
        assert lines[-1], "".join(lines) + proc.stderr.read()
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "stopped by Ctrl-C in 99_sleep.ipynb cell 2/3 (print(" in err, err
    assert "python -m utils.run -p TEST_DIR" in err and "cell 3/3" not in out
    executed = json.loads((tmp_path / "out" / "executed" / "99_sleep.ipynb").read_text(encoding="utf-8"))
    assert any(o.get("ename") == "KeyboardInterrupt" for c in executed["cells"] for o in c.get("outputs", []))


@pytest.mark.slow
def test_a_kernel_shut_down_after_its_run_gets_no_interrupt(tmp_path):
    """jupyter_client interrupts every kernel before shutting it down; a kernel caught inside a message handler
    then logged 'KeyboardInterrupt caught in kernel' at the end of a run nobody interrupted. The kernel here
    keeps a SIGINT handler that leaves a file; the runner's manager must never trigger it."""
    import asyncio

    marker = tmp_path / "interrupted"

    async def start_run_stop():
        km = progress.kernel_manager()(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        code = ("import signal\nget_ipython().kernel.post_handler_hook = lambda: None  # keep the handler below\n"
                f"signal.signal(signal.SIGINT, lambda *a: open({str(marker)!r}, 'w').close())")
        reply = await kc.execute_interactive(code, timeout=120)
        kc.stop_channels()
        await km.shutdown_kernel()
        return reply["content"]["status"]

    assert asyncio.run(start_run_stop()) == "ok"
    assert not marker.exists()


# ---------------------------------------------------------------- nothing lost, and the run's answer at the end

def test_smoke_writes_under_its_own_folders_and_says_so(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(run, "execute", lambda book, params, out_dir: calls.append((params, out_dir)) or 0.0)
    monkeypatch.setattr(run, "write_json_atomic", lambda path, obj: path)
    monkeypatch.setattr(run, "smoke_model", lambda books, folder: folder / "tiny-llama")
    monkeypatch.setattr(run, "keep_earlier_results", lambda params, track: [])  # runs/smoke's own files stay
    entry = run.run_series({}, only=["02", "03"], smoke=True)
    smoke = ROOT / "runs" / "smoke"
    assert {k: params[k] for params, _ in calls for k in ("TRAIN_DIR", "TEST_DIR", "CHECKPOINT_DIR")} == {
        "TRAIN_DIR": "runs/smoke/results_train", "TEST_DIR": "runs/smoke/results_test",
        "CHECKPOINT_DIR": "runs/smoke/checkpoints"}
    assert all(params["MODEL"] == str(smoke / "checkpoints" / "tiny-llama") for params, _ in calls)
    assert {out for _, out in calls} == {smoke / "results_test" / "executed"} and entry["executed"] == str(
        smoke / "results_test" / "executed")
    assert f"--smoke writes under its own folders: {smoke / 'checkpoints'}" in capsys.readouterr().out
    run.run_series({"TEST_DIR": "elsewhere"}, only=["02"], smoke=True)  # an explicit folder still wins
    assert calls[-1][0]["TEST_DIR"] == "elsewhere"


def _results(folder, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_a_run_with_other_parameters_keeps_the_earlier_results_and_summaries_merge_by_track(monkeypatch, tmp_path,
                                                                                            capsys):
    monkeypatch.setattr(run, "execute", lambda book, params, out_dir: 0.0)
    base = {"TEST_DIR": str(tmp_path / "results_test"), "TRAIN_DIR": str(tmp_path / "results_train")}
    first = run.run_series({**base, "LIMIT": 3}, only=["01", "02"])
    earlier = {"subtask2_scores.json": '{"weighted_f1": 0.25}', "executed/02.ipynb": "{}"}
    _results(tmp_path / "results_test", earlier)
    _results(tmp_path / "results_train", {"eda_stats.json": "{}", "experiments.sqlite": "log"})
    capsys.readouterr()
    run.run_series({**base, "LIMIT": 3}, only=["01", "02"])  # the same parameters: a rerun, nothing copied
    assert not list(tmp_path.glob("*.kept-*")) and "differ" not in capsys.readouterr().out
    run.run_series({**base, "LIMIT": 4}, only=["01", "02"])
    said = capsys.readouterr().out
    kept_test = tmp_path / f"results_test.kept-{first['run_id']}"
    kept_train = tmp_path / f"results_train.kept-{first['run_id']}"
    assert "LIMIT: 3 -> 4" in said and str(kept_test) in said and str(kept_train) in said
    assert all((kept_test / name).read_text() == text for name, text in earlier.items())
    assert (kept_train / "eda_stats.json").is_file() and not (kept_train / "experiments.sqlite").exists()
    monkeypatch.setenv(env.REPLACE_ENV, "0")
    seen = []  # what the kernels inherit
    monkeypatch.setattr(run, "execute", lambda book, params, out_dir: seen.append(os.environ[env.REPLACE_ENV]) or 0.0)
    run.run_series({**base, "LIMIT": 5}, only=["01", "02"], replace=True)  # asked: no copy
    assert len(list(tmp_path.glob("results_test.kept-*"))) == 1
    assert seen == ["1", "1"] and os.environ[env.REPLACE_ENV] == "0"  # for this run's kernels only
    run.run_series({**base, "ED_LIMIT": 8}, only=["07"], track="empathetic")
    summary = json.loads((tmp_path / "results_test" / run.SUMMARY_FILE).read_text())
    assert set(summary["tracks"]) == {"ecf", "empathetic"} and summary["last"] == "empathetic"
    assert summary["tracks"]["ecf"]["parameters"]["LIMIT"] == 5  # the other track's entry stays
    run.run_series({**base, "LIMIT": 6}, only=["01", "07"], track="all")  # an "all" run speaks for both tracks
    summary = json.loads((tmp_path / "results_test" / run.SUMMARY_FILE).read_text())
    assert {t: summary["tracks"][t]["parameters"].get("LIMIT") for t in ("ecf", "empathetic", "all")} == {
        "ecf": 6, "empathetic": 6, "all": 6}
    capsys.readouterr()
    run.run_series({**base, "LIMIT": 7}, only=["01"])  # so an ecf run after it keeps the all-run's results
    assert "LIMIT: 6 -> 7" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.partial"))  # every copy completed under its final name


def test_a_run_of_notebook_11_alone_copies_nothing_and_keeps_the_headline(monkeypatch, tmp_path):
    def execute(book, params, out_dir):  # 03 scores, as it does; 11 writes its own two files
        if book.name.startswith("03"):
            _results(tmp_path / "results_test", {"emotion_metrics.json": '{"weighted_f1": 0.41}'})
        if book.name.startswith("11"):
            _results(tmp_path / "results_test", {"your_conversation.json": "[]"})
        return 0.0

    monkeypatch.setattr(run, "execute", execute)
    base = {"TEST_DIR": str(tmp_path / "results_test"), "TRAIN_DIR": str(tmp_path / "results_train")}
    scored = run.run_series({**base, "LIMIT": 3}, only=["03"])
    assert [row["score"] for row in scored["headline"]] == [0.41]
    run.run_series({**base, "MY_CONVERSATION": "Ana: hi"}, only=["11"])  # other parameters, no results changed
    assert not list(tmp_path.glob("*.kept-*"))
    summary = json.loads((tmp_path / "results_test" / run.SUMMARY_FILE).read_text())
    assert summary["tracks"]["ecf"]["headline"] == scored["headline"] and summary["last"] == "ecf"
    assert summary["tracks"]["ecf"]["parameters"]["LIMIT"] == 3  # what the next run compares with
    assert summary["views"]["ecf"]["parameters"] == {**base, "MY_CONVERSATION": "Ana: hi"}


def test_the_run_ends_with_its_scores_beside_their_baselines(tmp_path):
    import sqlite3
    import time

    started = time.time() - 1
    test, train = tmp_path / "results_test", tmp_path / "results_train"
    _results(test, {"emotion_metrics.json": json.dumps({"weighted_f1": 0.4123, "baselines": {"majority": {
        "weighted_f1": 0.2411}}, "test_set": {"annotated": True}}),
        "subtask2_scores.json": json.dumps({"weighted_f1": 0.2, "model_gold_emotions": {"weighted_f1": 0.61},
                                            "baselines": {"self_and_previous_predicted_emotions": {"weighted_f1": 0.25},
                                                          "self_and_previous_gold_emotions": {"weighted_f1": 0.65}}})})
    train.mkdir()
    with sqlite3.connect(train / "experiments.sqlite") as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, created_at TEXT, kind TEXT)")
        conn.executemany("INSERT INTO runs VALUES (?, ?, ?)", [(1, run_report.utc(started - 3600), "old"),
                                                                (2, run_report.utc(started), "emotion_train"),
                                                                (3, run_report.utc(started + 5), "cause_train")])
    params = {"TEST_DIR": str(test), "TRAIN_DIR": str(train), "CHECKPOINT_DIR": str(tmp_path / "ck")}
    books = run.discover(only=["02", "05"])
    entry = {"run_id": "r1", "total_wall_s": 12.0,
             **run_report.answer(params, books, started, test)}
    lines = run_report.closing_lines(entry, test / run.SUMMARY_FILE)
    text = "\n".join(lines)
    assert re.search(r"emotion, weighted F1 +0\.412 +majority class 0\.241", text), text
    assert re.search(r"pairs end to end, weighted F1 +0\.200 +self \+ previous utterance 0\.250", text), text
    assert re.search(r"pairs on gold emotions, weighted F1 +0\.610 +self \+ previous utterance 0\.650", text), text
    assert f"experiment log: {train / 'experiments.sqlite'}, runs 2-3 of this run" in text
    assert f"executed notebooks: {test / 'executed'}" in text and str(tmp_path / "ck") in text
    old = time.time() - 3600  # a score file an earlier run wrote is not this run's answer
    os.utime(test / "emotion_metrics.json", (old, old))
    assert [r["what"] for r in run_report.answer(params, books, started, test)["headline"]] == [
        "pairs end to end, weighted F1", "pairs on gold emotions, weighted F1"]
