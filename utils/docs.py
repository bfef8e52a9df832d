"""Render notebooks with their outputs into ``docs/``, the pages a reader sees on GitHub.

    python -m utils.docs --ecf-data ../shared/data/ecf/Subtask_1_train.json

The source notebooks under ``notebooks/`` stay stripped; this executes copies with papermill and keeps
their outputs (plots embedded as PNG). Notebook 01 runs on the given ECF file with ``SHOW_TEXT=False``
(aggregates and figures only); notebook 07 runs on the bundled empathetic sample (ours). Before a
page is kept, every output of notebook 01 is searched for the corpus's utterances: a page that shows
one is refused, so no text of a corpus we may not republish lands in the repository. Results of the
runs go to a temporary folder, not to the results folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from utils import run
from utils.env import ROOT
from utils.io import write_json_atomic, write_text_atomic

DOCS_DIR = ROOT / "docs"
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


def render(ecf_data: str, out: Path = DOCS_DIR, books: tuple[str, ...] = ("01", "07")) -> dict[str, Any]:
    """Execute ``books`` with outputs into ``out`` (01 on ``ecf_data``, text hidden; 07 on its sample)."""
    ecf_path = Path(ecf_data).resolve()
    if not ecf_path.is_file():
        raise FileNotFoundError(f"--ecf-data {ecf_data}: no such file")
    plans = {"01": {"DATA_PATH": str(ecf_path), "SHOW_TEXT": False}, "07": {}}
    record: dict[str, Any] = {"rendered_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                              "python": platform.python_version(), "pages": []}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emocause-docs-") as tmp:
        for book in run.discover(list(books), "all"):
            key = book.name[:2]
            params = {**plans.get(key, {}), "TRAIN_DIR": str(Path(tmp) / "results_train"),
                      "TEST_DIR": str(Path(tmp) / "results_test")}
            fields = {f.name for f in dataclasses.fields(run.config_classes([book])[book])}
            ((_, params),) = run.plan([book], {k: v for k, v in params.items() if k in fields})  # values checked
            seconds = run.execute(book, params, Path(tmp) / "executed")
            executed = json.loads((Path(tmp) / "executed" / book.name).read_text(encoding="utf-8"))
            if key == "01":
                check_no_quotes(executed, _corpus_utterances(ecf_path), book.name)
            executed.setdefault("metadata", {}).setdefault("papermill", {})["parameters"] = params
            page = json.dumps(executed, indent=1, ensure_ascii=False) + "\n"
            # the page names files as the repository does, not by this machine's folders
            for local, shown in ((str(ecf_path), ecf_path.name), (f"{tmp}/", ""), (f"{ROOT}/", "")):
                page = page.replace(local, shown)
            write_text_atomic(out / book.name, page)
            record["pages"].append({"notebook": book.name, "wall_s": round(seconds, 1),
                                    "parameters": {k: Path(v).name if k in ("DATA_PATH", "TRAIN_DIR", "TEST_DIR")
                                                   else v for k, v in params.items()}})
            print(f"[emocause] docs/{book.name} written ({seconds:.0f} s)", flush=True)
    write_json_atomic(out / "rendered.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.docs", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--ecf-data", required=True, help="the ECF file notebook 01 describes (e.g. the official "
                        "Subtask_1_train.json)")
    parser.add_argument("--out", default=str(DOCS_DIR))
    parser.add_argument("--only", default="01,07", help="comma-separated notebook numbers")
    args = parser.parse_args(argv)
    try:
        render(args.ecf_data, Path(args.out), tuple(args.only.split(",")))
    except (FileNotFoundError, LeakError, run.RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
