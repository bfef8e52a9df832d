"""Rendered pages (utils.docs): outputs kept, no utterance of the corpus shown (issue 12, item 7)."""

from __future__ import annotations

import json

import pytest

from utils import docs
from utils.ecf.data import SAMPLE_PATH, load_ecf


def _page(*texts: str, html: str = "") -> dict:
    outputs = [{"output_type": "stream", "name": "stdout", "text": [t]} for t in texts]
    if html:
        outputs.append({"output_type": "execute_result", "data": {"text/html": html, "text/plain": "table"}})
    return {"cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}


def test_a_page_quoting_an_utterance_is_refused():
    said = "I can't believe you ate the whole cheesecake, Ross!"
    docs.check_no_quotes(_page("1,374 conversations", html="<td>joy</td>"), [said], "01_eda.ipynb")
    with pytest.raises(docs.LeakError, match="01_eda.ipynb.*I can't believe"):  # escaped and wrapped in HTML
        docs.check_no_quotes(_page(html="<td>I can&#x27;t believe you ate\n the whole cheesecake, Ross!</td>"),
                             [said], "01_eda.ipynb")
    with pytest.raises(docs.LeakError):
        docs.check_no_quotes(_page(f"first line: {said}"), [said], "p")
    docs.check_no_quotes(_page("Oh my God!"), ["Oh my God!"], "p")  # a short common phrase is not a quote


@pytest.mark.slow
def test_notebook_01_renders_figures_without_the_corpus_text(tmp_path):
    record = docs.render(str(SAMPLE_PATH), tmp_path / "docs", books=("01",))
    page = json.loads((tmp_path / "docs" / "01_eda.ipynb").read_text(encoding="utf-8"))
    images = [o for c in page["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 8  # every figure embedded, so GitHub shows it
    utterances = [u["text"] for c in load_ecf(SAMPLE_PATH) for u in c["conversation"]]
    docs.check_no_quotes(page, utterances, "01")
    assert page["metadata"]["papermill"]["parameters"]["DATA_PATH"] == SAMPLE_PATH.name  # no local path
    assert record["pages"][0]["notebook"] == "01_eda.ipynb"
    written = json.loads((tmp_path / "docs" / "rendered.json").read_text())["pages"]
    assert [p["notebook"] for p in written] == ["01_eda.ipynb"] and written[0]["rendered_at"] == record["rendered_at"]
    # the same notebook with its text shown is what the guard exists for
    with pytest.raises(docs.LeakError):
        docs.check_no_quotes(_shown_page(tmp_path), utterances, "01")


def test_a_page_keeps_where_each_progress_bar_ended_not_every_state():
    def err(text):
        return {"output_type": "stream", "name": "stderr", "text": text}

    bars = [err("\rcauses:   0%|          | 0/341 [00:00<?, ?it/s]"), err("\rcauses:  50%|#####     | 170/341 [01:00<01:00]"),
            err("\rcauses: 100%|##########| 341/341 [04:24<00:00,  1.29it/s]")]
    warning = err("/site-packages/transformers/x.py:1: FutureWarning: deprecated\n")
    page = {"cells": [{"cell_type": "code", "outputs": [*bars[:2], warning, *bars, err("\n"), {"output_type": "stream",
                                                                                  "name": "stdout", "text": "done"}]}]}
    kept = docs.final_progress_only(page)["cells"][0]["outputs"]
    assert kept == [bars[1], warning, bars[2], {"output_type": "stream", "name": "stdout", "text": "done"}]  # no blank box


def test_a_page_shows_no_stderr_box_for_progress_bars_and_keeps_warnings_visible(tmp_path):
    def err(text):
        return {"output_type": "stream", "name": "stderr", "text": text}

    loading = err("\rLoading weights: 100%|██████████| 272/272 [00:00<00:00, 12411.48it/s]")
    causes = err(["\r", "causes: 100%|##########| 341/341 [04:24<00:00,  1.29it/s]"])
    warning = err("/site-packages/transformers/x.py:1: FutureWarning: deprecated\n")
    page = {"cells": [{"cell_type": "code", "outputs": [loading, causes, warning]}, {"cell_type": "markdown"}]}
    assert docs.tidy_progress(page) == 2
    assert page["cells"][0]["outputs"] == [{**causes, "name": "stdout"}, warning]  # the warning is not hidden
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "02_x.ipynb").write_text(docs.page_text({"cells": [{"cell_type": "code", "outputs": [loading]}]}))
    (folder / "01_y.ipynb").write_text(docs.page_text({"cells": []}))
    (folder / "rendered.json").write_text(json.dumps({"pages": [{"notebook": "02_x.ipynb"}, {"notebook": "01_y.ipynb"}]}))
    assert docs.main(["--tidy", "--out", str(folder)]) == 0
    assert json.loads((folder / "02_x.ipynb").read_text())["cells"][0]["outputs"] == []
    pages = json.loads((folder / "rendered.json").read_text())["pages"]
    assert pages[0]["postprocessing"].startswith(docs.TIDY_NOTE) and "postprocessing" not in pages[1]
    assert docs.tidy_pages(folder) == []  # tidied once: nothing left to do


def test_a_partial_render_keeps_the_other_pages_records(tmp_path):
    path = tmp_path / "rendered.json"
    path.write_text(json.dumps({"pages": [{"notebook": "01_eda.ipynb", "rendered_at": "before"},
                                          {"notebook": "06_evaluation.ipynb", "rendered_at": "before"}]}))
    now = {"rendered_at": "now", "machine": "m", "python": "3", "models": {"cause": {"train_tokens": 9}},
           "pages": [{"notebook": "06_evaluation.ipynb", "wall_s": 1.0}]}
    merged = docs._merged(path, now)["pages"]
    assert [(p["notebook"], p["rendered_at"]) for p in merged] == [("01_eda.ipynb", "before"), ("06_evaluation.ipynb", "now")]
    assert merged[1]["models"]["cause"]["train_tokens"] == 9 and "models" not in merged[0]


def _shown_page(tmp_path) -> dict:
    from utils import run

    (book,) = run.discover(["01"], "all")
    run.execute(book, {"DATA_PATH": str(SAMPLE_PATH), "TRAIN_DIR": str(tmp_path / "rt")}, tmp_path / "shown")
    return json.loads((tmp_path / "shown" / book.name).read_text(encoding="utf-8"))


def test_source_notebooks_carry_no_outputs_and_the_pages_do():
    from utils.env import ROOT

    for book in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(book.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells), book.name
    pages = sorted((ROOT / "docs").glob("*.ipynb"))
    plotted = {"01_eda.ipynb": 3, "02_emotion_finetuning.ipynb": 1, "04_cause_finetuning.ipynb": 3,
               "06_evaluation.ipynb": 2, "07_empathetic_eda.ipynb": 3}  # 03 and 05 show tables
    assert {p.name for p in pages} >= {"01_eda.ipynb", "02_emotion_finetuning.ipynb", "03_emotion_inference.ipynb",
                                       "04_cause_finetuning.ipynb", "05_cause_inference.ipynb", "06_evaluation.ipynb",
                                       "07_empathetic_eda.ipynb"}
    recorded = {p["notebook"]: p for p in json.loads((ROOT / "docs" / "rendered.json").read_text())["pages"]}
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert text.count('"image/png"') >= plotted.get(page.name, 0), page.name
        assert "/tmp/" not in text and str(ROOT) not in text and "error" not in _output_types(text), page.name
        assert recorded[page.name]["rendered_at"], page.name
    assert recorded["03_emotion_inference.ipynb"]["models"]["emotion"]["train_tokens"] > 0  # which adapters it shows
    assert {p.name for p in pages} == set(recorded)  # every page has its record, no record lacks its page


def test_every_page_is_newer_than_the_code_it_renders():
    """A page whose notebook's code cells changed since it was rendered is stale: render it again (README)."""
    from utils.env import ROOT

    for page in json.loads((ROOT / "docs" / "rendered.json").read_text())["pages"]:
        source = ROOT / "notebooks" / page["notebook"]
        assert page.get("code_sha256") == docs.code_digest(source), (
            f"docs/{page['notebook']} was rendered from other code than notebooks/{page['notebook']}: rerun "
            "python -m utils.docs (README, Rendered pages)")
        assert page["commit"] and page["packages"]["transformers"] and page["data_sha256"], page["notebook"]


def _outputs(page: dict):
    return [o for c in page["cells"] for o in c.get("outputs", [])]


def test_the_pages_read_well():
    """No warning boxes, no bare return values, no raw records, no empty tables; the sample page says it is one;
    the cause pages say what the scores mean."""
    import re

    from utils.env import ROOT

    shown = {}
    for path in sorted((ROOT / "docs").glob("*.ipynb")):
        page = json.loads(path.read_text(encoding="utf-8"))
        for out in _outputs(page):
            assert out.get("name") != "stderr", (path.name, "a stderr box", out["text"])  # docs.tidy_progress
            plain = "".join(out.get("data", {}).get("text/plain", ""))
            if out.get("output_type") == "execute_result":
                assert not re.fullmatch(r"\s*-?\d+\s*", plain), (path.name, plain)  # a stray Out: 1
                assert not re.match(r"\w+Config\(|\{'|\w+\(\w+=|PosixPath\(", plain), (path.name, plain[:80])  # a raw record
            html = "".join(out.get("data", {}).get("text/html", ""))
            if "<table" in html:
                assert "<td" in html, (path.name, "an empty table")
        shown[path.name] = "\n".join(docs.output_texts(page))
    assert "synthetic sample" in shown["07_empathetic_eda.ipynb"]
    for name in ("05_cause_inference.ipynb", "06_evaluation.ipynb"):
        assert "With gold emotions the cause model scores" in shown[name] and "End to end" in shown[name], name
        assert "model (conversation), gold emotions" in shown[name], name
        assert "The stage-wise rule" in shown[name] and "03's emotions (stage-wise rule)" in shown[name], name
    assert "end-to-end rule chosen on val in 04" in shown["05_cause_inference.ipynb"]
    assert "chosen: neutral shift" in shown["04_cause_finetuning.ipynb"]


def _output_types(page_text: str) -> set[str]:
    return {o["output_type"] for c in json.loads(page_text)["cells"] for o in c.get("outputs", [])}


def test_a_page_takes_a_new_digest_only_where_just_its_parameters_cell_changed(tmp_path, monkeypatch):
    import subprocess

    def notebook(params: str, code: str) -> dict:
        return {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": params},
                          {"cell_type": "code", "metadata": {}, "source": code}]}

    shown = notebook('LORA_TARGETS: str = "q_proj"', "train()")
    books, pages = tmp_path / "notebooks", tmp_path / "docs"
    books.mkdir(), pages.mkdir()
    (books / "02_x.ipynb").write_text(json.dumps(shown), encoding="utf-8")
    entry = {"notebook": "02_x.ipynb", "commit": "abc", "uncommitted_changes": False,
             "code_sha256": docs.code_digest(books / "02_x.ipynb")}
    (pages / "rendered.json").write_text(json.dumps({"pages": [entry]}), encoding="utf-8")
    monkeypatch.setattr(docs.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, json.dumps(shown)))
    (books / "02_x.ipynb").write_text(json.dumps(notebook('LORA_TARGETS: str = "auto"', "train()")), encoding="utf-8")
    with pytest.raises(ValueError, match="--why"):
        docs.amend_parameters(["02"], " ", pages, books)
    assert docs.amend_parameters(["02"], "same run", pages, books) == ["02_x.ipynb"]
    page = json.loads((pages / "rendered.json").read_text(encoding="utf-8"))["pages"][0]
    assert page["code_sha256"] == docs.code_digest(books / "02_x.ipynb")
    assert page["amended"][0]["code_sha256_before"] == entry["code_sha256"] and page["amended"][0]["why"] == "same run"
    (books / "02_x.ipynb").write_text(json.dumps(notebook('LORA_TARGETS: str = "auto"', "train(more=1)")),
                                      encoding="utf-8")
    with pytest.raises(ValueError, match="code other than the parameters cell changed"):
        docs.amend_parameters(["02"], "same run", pages, books)
