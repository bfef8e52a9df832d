"""Render notebooks with their outputs into ``docs/``, the pages a reader sees on GitHub.

    python -m utils.docs --ecf-data ../shared/data/ecf/Subtask_1_train.json --only 01,07
    python -m utils.docs --ecf-data ../shared/data/ecf/Subtask_1_train.json --ecf-test ecf:Subtask_2_test.json \
        --checkpoints runs/series --only 02,03,04,05,06
    python -m utils.docs --ecf-data data/ecf_sample.json --checkpoints checkpoints --only 11   # your own conversation
    python -m utils.docs --tidy   # the pages already there: no stderr box (tidy_progress), nothing rendered
    python -m utils.docs --amend-parameters 02,04 --why "..."   # only a parameters cell changed since the render

The source notebooks under ``notebooks/`` stay stripped; this executes copies with papermill and keeps
their outputs (plots embedded as PNG). Notebook 01 runs on the given ECF file with ``SHOW_TEXT=False``
(aggregates and figures only); notebook 07 runs on the bundled empathetic sample (ours). Notebooks 02 and
04 train on ``--ecf-data``'s train split into ``--checkpoints`` (a ``CHECKPOINT_DIR``; a finished run of
the same identity is restored there instead of trained again), and 03, 05 and 06 predict and score
``--ecf-test`` (``TEST_PATH``; an ``ecf:`` name is downloaded once) with the adapters found there; 06
shows no error rows (``ERROR_ROWS=0``). Before a page of the ECF corpus is kept, its outputs are searched
for the corpus's utterances: a page that shows one is refused, so no text of a corpus we may not republish
lands in the repository. Results of the runs go to a temporary folder, not to the results folders;
``docs/rendered.json`` records each page's provenance (``provenance``, ``code_digest``).

A page has no stderr box (``tidy_progress``): the weight-loading bars are dropped, and the other progress bars
(where each ended: count, time, rate) are shown as plain output; a warning would stay stderr, and
``tests/test_docs.py`` refuses a page with one. ``python -m utils.docs --tidy`` applies the same to the pages
already in ``docs/`` without rendering them again, and records it in ``rendered.json`` (``postprocessing``).

A page is stale when its notebook's code cells changed (``code_digest``). Where the only change is the generated
``parameters`` cell (a help text, or a default that gives the same run, as ``LORA_TARGETS="auto"`` does on the
model a page shows), ``--amend-parameters`` takes the new digest with the reason, after checking against the
notebook at the page's recorded commit that every other code cell is unchanged; the page's entry keeps the old
digest and the reason under ``amended``. Any other change needs a new render.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from utils import run
from utils.env import ROOT, resolve
from utils.io import write_json_atomic, write_text_atomic

DOCS_DIR = ROOT / "docs"
PATH_PARAMS = ("DATA_PATH", "TEST_PATH", "TRAIN_DIR", "TEST_DIR", "CHECKPOINT_DIR")  # shown by name only
MIN_QUOTE_CHARS = 24  # shorter utterances ("Oh my God!") are common phrases, not quotes of the corpus


class LeakError(RuntimeError):
    """A rendered page shows an utterance of a corpus that must not be republished."""


def output_texts(notebook: dict) -> Iterable[str]:
    """Every text a notebook's outputs show: streams, plain text, HTML and markdown."""
    for cell in notebook.get("cells", []):
        for out in cell.get("outputs", []):
            if "text" in out:
                yield "".join(out["text"]) if isinstance(out["text"], list) else str(out["text"])
            for mime, value in (out.get("data") or {}).items():
                if mime.startswith("text/"):
                    yield "".join(value) if isinstance(value, list) else str(value)


PROGRESS = re.compile(r"^\s*[^\n]*\d+%\|[^\n]*\|\s*\d+/\d+ \[[^\n]*\]\s*$")  # one tqdm bar state


def _is_progress(out: dict) -> bool:
    text = "".join(out["text"]) if isinstance(out.get("text"), list) else str(out.get("text", ""))
    return out.get("output_type") == "stream" and out.get("name") == "stderr" and bool(PROGRESS.match(text))


def _is_blank(out: dict) -> bool:
    text = "".join(out["text"]) if isinstance(out.get("text"), list) else str(out.get("text", ""))
    return out.get("output_type") == "stream" and not text.strip()


def final_progress_only(notebook: dict) -> dict:
    """``notebook`` with each run of consecutive progress-bar states in a cell's outputs cut to its last one
    (a page shows where every bar ended: count, time, rate, not the forty states papermill recorded), and
    without the blank stream outputs a closed bar leaves (an empty box on the page)."""
    for cell in notebook.get("cells", []):
        outs = [o for o in cell.get("outputs", []) if not _is_blank(o)]
        cell["outputs"] = [o for k, o in enumerate(outs)
                           if not (_is_progress(o) and k + 1 < len(outs) and _is_progress(outs[k + 1]))]
    return notebook


LOADING_BAR = re.compile(r"^\s*Loading (weights|checkpoint shards)\b")  # transformers' bar: says nothing
TIDY_NOTE = ("weight-loading progress bars dropped, the other progress bars' last states shown as stdout "
             "(utils.docs.tidy_progress)")


def tidy_progress(notebook: dict) -> int:
    """Drop the weight-loading bars of ``notebook`` and move its other progress bars (``_is_progress``) from stderr
    to stdout, so a page shows no stderr box for them; returns how many outputs changed. A stderr output that is
    no progress bar (a warning) is left as it is."""
    changed = 0
    for cell in notebook.get("cells", []):
        kept = []
        for out in cell.get("outputs", []):
            if _is_progress(out):
                changed += 1
                text = "".join(out["text"]) if isinstance(out["text"], list) else str(out["text"])
                if LOADING_BAR.match(text.lstrip("\r")):
                    continue
                out = {**out, "name": "stdout"}
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    return changed


def page_text(notebook: dict) -> str:
    """A page as ``docs/`` holds it."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def tidy_pages(folder: Path = DOCS_DIR) -> list[str]:
    """``tidy_progress`` on every page already in ``folder``, each change recorded on its page's entry in
    ``rendered.json``; the names of the pages changed."""
    from utils.io import read_json

    changed = []
    for path in sorted(folder.glob("*.ipynb")):
        page = json.loads(path.read_text(encoding="utf-8"))
        if tidy_progress(page):
            write_text_atomic(path, page_text(page))
            changed.append(path.name)
    record_path = folder / "rendered.json"
    if changed and record_path.is_file():
        record = read_json(record_path)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        for entry in record.get("pages", []):
            if entry.get("notebook") in changed:
                entry["postprocessing"] = f"{TIDY_NOTE}; applied {when} by python -m utils.docs --tidy"
        write_json_atomic(record_path, record)
    return changed


def check_no_quotes(notebook: dict, utterances: Iterable[str], name: str) -> None:
    """Raise LeakError when an output of ``notebook`` contains one of ``utterances`` (those of at least
    MIN_QUOTE_CHARS characters, compared with whitespace collapsed, HTML escapes undone)."""
    import html

    shown = " ".join(" ".join(html.unescape(t).split()) for t in output_texts(notebook))
    for utt in utterances:
        words = " ".join(str(utt).split())
        if len(words) >= MIN_QUOTE_CHARS and words in shown:
            raise LeakError(f"{name}: an output shows the corpus utterance {words[:40]!r}...; "
                            "the page is not written (render it with SHOW_TEXT=False)")


def _corpus_utterances(path: Path) -> list[str]:
    from utils.ecf.data import load_ecf

    return [u["text"] for c in load_ecf(path) for u in c["conversation"]]


PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "papermill")


def code_digest(notebook: Path) -> str:
    """sha256 (16 hex digits) of a notebook's code cells: a page rendered from other code is stale."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    code = "\n\x00".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def provenance(data_files: Iterable[Path]) -> dict[str, Any]:
    """Where a render ran: the commit (and whether the tree had changes), the machine, package versions and
    the sha256 of each data file it read."""
    from importlib.metadata import PackageNotFoundError, version

    from utils.io import file_sha256

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(), "packages": versions,
            "data_sha256": {Path(f).name: file_sha256(f) for f in data_files}}


ECF_BOOKS = ("01", "02", "03", "04", "05", "06", "11")  # pages checked for quotes of the ECF corpus
TRAIN_BOOKS = ("02", "04")  # train (or restore a finished run of the same identity) into --checkpoints
MODEL_BOOKS = ("03", "05", "06")  # the pages that need trained adapters (--checkpoints) and a test file


PAGE_TASKS = {"03": ("emotion",), "05": ("emotion", "cause"), "06": ("emotion", "cause"),
              "11": ("emotion", "cause")}  # the adapters each shows
ADAPTER_BOOKS = ("11",)  # pages that read --checkpoints' adapters and no corpus (your own conversation)


def _models(checkpoints: Path, tasks: tuple[str, ...] = ("emotion", "cause")) -> dict[str, dict]:
    """The task records of the ``tasks``' adapters under ``checkpoints`` (notebooks 02/04 or bench.quality)."""
    from utils.ecf.artifacts import TASK_FILE
    from utils.io import read_json

    found = {}
    for task in tasks:
        path = checkpoints / task / "conversation" / TASK_FILE
        if not (path.is_file() and (path.parent / "adapter").is_dir()):
            raise FileNotFoundError(f"--checkpoints {checkpoints}: no {task} adapter with its {TASK_FILE} under "
                                    f"{path.parent} (run notebook {'02' if task == 'emotion' else '04'}, or "
                                    "`python -m bench.quality export RUN` for a quality run)")
        found[task] = read_json(path)
    if len({r["model"] for r in found.values()}) > 1:
        raise ValueError(f"--checkpoints {checkpoints}: the emotion adapter is for {found['emotion']['model']!r}, "
                         f"the cause adapter for {found['cause']['model']!r}")
    return found


def _provenance(record: dict) -> dict:
    """What a page's reader needs to know of an adapter: model, training budget, the rule chosen on val."""
    keep = ("model", "train_tokens", "global_step", "train_wall_s", "emotion_format", "cause_layout", "offsets", "threshold")
    out = {k: record[k] for k in keep if k in record}
    run = record.get("quality_run", {}).get("args", {})
    out.update({k: run[k] for k in ("epochs", "max_steps", "lr", "lora_r", "targets", "seed", "split",
                                    "cause_emotions") if k in run})
    return out


def _series_plans(books: tuple[str, ...], ecf_path: Path, ecf_test: str, checkpoints: str) -> dict[str, dict]:
    """The parameters of notebooks 02-06: train on ``ecf_path``'s train split into ``checkpoints``, test on
    ``ecf_test``; 03, 05 and 06 need the adapters there (rendered in the same call after 02 and 04, or before)."""
    if not (ecf_test and checkpoints):
        raise FileNotFoundError(f"notebooks {', '.join(TRAIN_BOOKS + MODEL_BOOKS)} need --ecf-test and --checkpoints")
    test_path, ckpt = resolve(ecf_test).resolve(), Path(checkpoints).resolve()
    if not test_path.is_file():
        raise FileNotFoundError(f"--ecf-test {ecf_test}: no such file")
    try:  # adapters already there: every page runs on the model they were trained on
        model = _models(ckpt, ("emotion",))["emotion"]["model"]
    except FileNotFoundError:
        if any(b in MODEL_BOOKS for b in books) and not all(b in books for b in TRAIN_BOOKS):
            raise  # nothing renders 02 and 04 first: fail before anything runs
        model = "auto"  # 02 and 04 train this machine's model; 03-06 then find it recorded
    if "04" not in books and any(b in ("05", "06") for b in books):
        _models(ckpt)  # 05 and 06 read the cause adapter too: fail before anything runs
    series = {"DATA_PATH": str(ecf_path), "TEST_PATH": str(test_path), "CHECKPOINT_DIR": str(ckpt), "MODEL": model}
    return {"02": {**series, "SHOW_TEXT": False}, "03": {**series, "LABEL_TRAIN": False},
            "04": {**series, "SHOW_TEXT": False}, "05": dict(series), "06": {**series, "ERROR_ROWS": 0}}


def render(ecf_data: str, out: Path = DOCS_DIR, books: tuple[str, ...] = ("01", "07"),
           ecf_test: str = "", checkpoints: str = "", overrides: dict[str, dict] | None = None) -> dict[str, Any]:
    """Execute ``books`` with outputs into ``out``: 01 on ``ecf_data``, text hidden; 07 on its sample; 02 and 04
    train on ``ecf_data``'s train split into ``checkpoints`` (a finished run of the same identity is restored, not
    trained again); 03, 05 and 06 predict and score ``ecf_test`` with the adapters there. ``overrides``: more
    parameters per notebook number ({"04": {"MAX_STEPS": 100}}), recorded with the page's."""
    ecf_path = resolve(ecf_data).resolve()
    if not ecf_path.is_file():
        raise FileNotFoundError(f"--ecf-data {ecf_data}: no such file")
    plans: dict[str, dict] = {"01": {"DATA_PATH": str(ecf_path), "SHOW_TEXT": False}, "07": {}}
    scrub = [(str(ecf_path), ecf_path.name)]
    corpus = [ecf_path]
    if any(b in TRAIN_BOOKS + MODEL_BOOKS for b in books):
        plans.update(_series_plans(books, ecf_path, ecf_test, checkpoints))
        test_path, ckpt = resolve(ecf_test).resolve(), Path(checkpoints).resolve()
        corpus.append(test_path)
        scrub += [(str(test_path), test_path.name), (str(ckpt), "checkpoints")]
    if any(b in ADAPTER_BOOKS for b in books):
        if not checkpoints:
            raise FileNotFoundError(f"notebooks {', '.join(ADAPTER_BOOKS)} need --checkpoints")
        ckpt = Path(checkpoints).resolve()
        plans.update({b: {"CHECKPOINT_DIR": str(ckpt)} for b in ADAPTER_BOOKS})
        scrub.append((str(ckpt), "checkpoints"))
    record: dict[str, Any] = {"rendered_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              **provenance(corpus), "pages": []}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emocause-docs-") as tmp:
        utterances = [u for path in corpus for u in _corpus_utterances(path)]
        for book in run.discover(list(books), "all"):
            key = book.name[:2]
            fields = {f.name for f in dataclasses.fields(run.config_classes([book])[book])}
            extra = (overrides or {}).get(key, {})
            if set(extra) - fields:
                raise ValueError(f"--param {key}:{sorted(set(extra) - fields)[0]}: {book.name} has no such parameter")
            params = {**plans.get(key, {}), **run.typed(extra, [book]), "TRAIN_DIR": str(Path(tmp) / "results_train"),
                      "TEST_DIR": str(Path(tmp) / "results_test")}
            ((_, params),) = run.plan([book], {k: v for k, v in params.items() if k in fields})  # values checked
            seconds = run.execute(book, params, Path(tmp) / "executed")
            executed = final_progress_only(json.loads((Path(tmp) / "executed" / book.name).read_text(encoding="utf-8")))
            tidy_progress(executed)
            if key in ECF_BOOKS:
                check_no_quotes(executed, utterances, book.name)
            executed.setdefault("metadata", {}).setdefault("papermill", {})["parameters"] = params
            page = page_text(executed)
            # the page names files as the repository does, not by this machine's folders
            for local, shown in (*scrub, (f"{tmp}/", ""), (f"{ROOT}/", "")):
                page = page.replace(local, shown)
            write_text_atomic(out / book.name, page)
            entry = {"notebook": book.name, "wall_s": round(seconds, 1), "code_sha256": code_digest(book),
                     "parameters": {k: Path(v).name if k in PATH_PARAMS else v for k, v in params.items()},
                     "postprocessing": TIDY_NOTE}
            if key in MODEL_BOOKS + ADAPTER_BOOKS:
                entry["models"] = {task: _provenance(r)
                                   for task, r in _models(Path(checkpoints).resolve(), PAGE_TASKS[key]).items()}
            record["pages"].append(entry)
            # recorded page by page: a render that stops later keeps the records of the pages it wrote
            write_json_atomic(out / "rendered.json", _merged(out / "rendered.json", {**record, "pages": [entry]}))
            print(f"[emocause] docs/{book.name} written ({seconds:.0f} s)", flush=True)
    return record


def _merged(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the pages of an earlier render that this one did not redo (``--only`` renders a few);
    each page keeps when and where it was rendered, and which adapters it shows."""
    from utils.io import read_json

    when = {k: v for k, v in record.items() if k != "pages"}
    pages = [{**page, **when} for page in record["pages"]]
    done = {page["notebook"] for page in pages}
    earlier = read_json(path).get("pages", []) if path.is_file() else []
    return {"pages": sorted([p for p in earlier if p["notebook"] not in done] + pages, key=lambda p: p["notebook"])}


def notebook_overrides(items: Iterable[str]) -> dict[str, dict]:
    """"04:MAX_STEPS=100" items as {"04": {"MAX_STEPS": "100"}} (typed later by the notebook's dataclass)."""
    found: dict[str, dict] = {}
    for item in items:
        book, _, assignment = item.partition(":")
        key, equals, value = assignment.partition("=")
        if not (book.isdigit() and key and equals):
            raise ValueError(f"--param {item!r}: write NN:KEY=VALUE, e.g. 04:MAX_STEPS=100")
        found.setdefault(book.zfill(2), {})[key] = value
    return found


def _code_cells(notebook: dict) -> list[str]:
    """The code cells' sources, the parameters cell left out."""
    return ["".join(c["source"]) for c in notebook["cells"]
            if c["cell_type"] == "code" and "parameters" not in c.get("metadata", {}).get("tags", [])]


def amend_parameters(books: Iterable[str], why: str, folder: Path = DOCS_DIR,
                     notebooks: Path = run.NOTEBOOK_DIR) -> list[str]:
    """Take the current code digest for the pages of ``books`` (numbers) whose notebooks changed only in their
    parameters cell since the render (checked against the notebook at the page's recorded commit, which must
    have been clean), recording the old digest and ``why``; raises naming the page otherwise."""
    from utils.io import read_json

    if not why.strip():
        raise ValueError("--why is required: say why the page still shows what the notebook now runs")
    record_path = folder / "rendered.json"
    record = read_json(record_path)
    wanted = {b[:2] for b in books}
    amended = []
    for entry in record.get("pages", []):
        name = entry["notebook"]
        if name[:2] not in wanted:
            continue
        current = notebooks / name
        if entry.get("code_sha256") == code_digest(current):
            continue
        if entry.get("uncommitted_changes") or not entry.get("commit"):
            raise ValueError(f"{name}: rendered from a tree with uncommitted changes; render it again")
        shown = subprocess.run(["git", "show", f"{entry['commit']}:notebooks/{name}"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
        if _code_cells(json.loads(shown)) != _code_cells(json.loads(current.read_text(encoding="utf-8"))):
            raise ValueError(f"{name}: code other than the parameters cell changed since {entry['commit'][:8]}; "
                             "render the page again")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        entry.setdefault("amended", []).append({"on": when, "code_sha256_before": entry["code_sha256"], "why": why})
        entry["code_sha256"] = code_digest(current)
        amended.append(name)
    write_json_atomic(record_path, record)
    return amended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.docs", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--ecf-data", help="the ECF file notebook 01 describes (e.g. the official "
                        "Subtask_1_train.json); required unless --tidy")
    parser.add_argument("--tidy", action="store_true", help="render nothing: drop the weight-loading bars of the "
                        "pages in --out and show their other progress bars as stdout (recorded in rendered.json)")
    parser.add_argument("--ecf-test", default="", help="notebooks 03, 05, 06: the test file (TEST_PATH), e.g. "
                        "the official Subtask_2_test.json")
    parser.add_argument("--checkpoints", default="", help="notebooks 03, 05, 06: a CHECKPOINT_DIR with emotion/ and "
                        "cause/ adapters and their task.json")
    parser.add_argument("--amend-parameters", metavar="NN,NN", help="render nothing: the pages of these notebooks "
                        "take their notebooks' new code digest where only the parameters cell changed (--why)")
    parser.add_argument("--why", default="", help="with --amend-parameters: why the pages still show what the "
                        "notebooks run")
    parser.add_argument("--out", default=str(DOCS_DIR))
    parser.add_argument("--only", default="01,07", help="comma-separated notebook numbers")
    parser.add_argument("--param", action="append", default=[], metavar="NN:KEY=VALUE",
                        help="a parameter of notebook NN, e.g. 04:MAX_STEPS=100 (repeatable)")
    args = parser.parse_args(argv)
    if args.tidy:
        changed = tidy_pages(Path(args.out))
        print(f"[emocause] tidied {len(changed)} page(s): {', '.join(changed) or 'none needed it'}")
        return 0
    if args.amend_parameters:
        try:
            done = amend_parameters(args.amend_parameters.split(","), args.why, Path(args.out))
        except (ValueError, subprocess.CalledProcessError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"[emocause] amended {len(done)} page(s): {', '.join(done) or 'none needed it'}")
        return 0
    if not args.ecf_data:
        parser.error("--ecf-data is required (or --tidy, --amend-parameters)")
    try:
        render(args.ecf_data, Path(args.out), tuple(args.only.split(",")), args.ecf_test, args.checkpoints,
               notebook_overrides(args.param))
    except (FileNotFoundError, ValueError, LeakError, run.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
