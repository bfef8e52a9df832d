"""Run the notebook series headless with papermill.

    python -m utils.run                      # the embedded offline set-up: sample data + SmolLM2
    python -m utils.run --smoke              # tiny random Llama, a few steps: seconds, for tests
    python -m utils.run -p MODEL TinyLlama/TinyLlama-1.1B-Chat-v1.0 -p DATA_PATH data/ecf/Subtask_2_train.json
    python -m utils.run --config my_run.yaml --only 02,03

Each notebook receives the parameters it declares (its `parameters` cell); a parameter that no
notebook declares is an error, so a typo never runs silently with a default. Executed copies go
to ``<TEST_DIR>/executed/`` and a timing summary to ``<TEST_DIR>/run_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from utils.env import ROOT, resolve
from utils.io import write_json_atomic

NOTEBOOK_DIR = ROOT / "notebooks"
# notebook 10 (the experiment log) closes both tracks
TRACKS = {"ecf": ("01", "02", "03", "04", "05", "06", "10"), "empathetic": ("07", "08", "09", "10")}
SMOKE_DEFAULTS = {"SMOKE": True}
RUNNER_PARAMS = {"TEST_DIR"}  # the runner itself uses these (executed copies, summary)


class RunError(RuntimeError):
    """A notebook or a parameter set that cannot run."""


def discover(only: list[str] | None = None, track: str = "all", directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks in order, filtered by track and by number prefixes."""
    books = sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))
    if track != "all":
        books = [p for p in books if p.name[:2] in TRACKS[track]]
    if only:
        books = [p for p in books if p.name[:2] in only or p.stem in only]
        if not books:
            raise RunError(f"--only {only} matches no notebook in {directory}")
    return books


def declared_parameters(notebook: Path) -> dict[str, dict]:
    """The parameters a notebook declares, with papermill's inferred type, default and help."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def parse_value(text: str) -> Any:
    """CLI values are YAML scalars: 3 -> int, 0.5 -> float, true -> bool, anything else -> str."""
    value = yaml.safe_load(text)
    return text if isinstance(value, (dict, list)) or value is None else value


def plan(books: list[Path], params: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Give each notebook the parameters it declares; refuse names that no notebook declares."""
    declared = {book: declared_parameters(book) for book in books}
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(params) - known - set(SMOKE_DEFAULTS) - RUNNER_PARAMS)
    if unknown:
        raise RunError(f"unknown parameter(s) {unknown}: no notebook in the run declares them; "
                       f"declared: {sorted(known)}")
    return [(book, {k: v for k, v in params.items() if k in declared[book]}) for book in books]


def smoke_model(directory: Path) -> Path:
    """Build (once) the tiny random Llama with a tokenizer trained on the bundled samples."""
    from utils.ecf.data import SAMPLE_PATH, EMOTIONS, load_ecf
    from utils.lm.modeling import build_tiny_llama

    if (directory / "config.json").exists():
        return directory
    texts = [u["text"] for c in load_ecf(SAMPLE_PATH) for u in c["conversation"]]
    return build_tiny_llama(directory, texts, words=(*EMOTIONS, "yes", "no"))


def execute(book: Path, params: dict[str, Any], out_dir: Path, kernel: str = "python3") -> float:
    """Execute one notebook with papermill (cwd = repository root); return its wall time."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(book), str(out_dir / book.name), parameters=params,
                                   kernel_name=kernel, cwd=str(ROOT), progress_bar=False)
    except papermill.PapermillExecutionError as e:
        raise RunError(f"{book.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                       f"the executed copy with the traceback is {out_dir / book.name}") from None
    return time.perf_counter() - start


def run(params: dict[str, Any], only: list[str] | None = None, track: str = "ecf",
        smoke: bool = False) -> dict[str, Any]:
    """Run the series and write the summary; the parameters are the run's whole configuration."""
    params = dict(params)
    if smoke:
        params = {**SMOKE_DEFAULTS, **params}
        params.setdefault("MODEL", str(smoke_model(resolve("checkpoints/tiny-llama"))))
    steps = plan(discover(only, track), params)
    test_dir = resolve(params.get("TEST_DIR", "results_test"))
    summary: dict[str, Any] = {"parameters": params, "notebooks": []}
    for book, book_params in steps:
        print(f"[emocause] {book.name} {json.dumps(book_params, ensure_ascii=False)}", flush=True)
        seconds = execute(book, book_params, test_dir / "executed")
        summary["notebooks"].append({"notebook": book.name, "wall_s": round(seconds, 2)})
        print(f"[emocause] {book.name} done in {seconds:.1f} s", flush=True)
    summary["total_wall_s"] = round(sum(n["wall_s"] for n in summary["notebooks"]), 2)
    write_json_atomic(test_dir / "run_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.run", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", help="YAML file of parameters (NAME: value)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter; overrides --config")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,02")
    parser.add_argument("--track", choices=("all", *TRACKS), default="ecf",
                        help="ecf (default: 01-06 and the experiment log), empathetic (07-10) or all")
    parser.add_argument("--smoke", action="store_true", help="tiny random model and a few steps")
    parser.add_argument("--list", action="store_true", help="list notebooks and their parameters")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    if args.list:
        for book in discover(only, args.track):
            print(book.name)
            for name, info in declared_parameters(book).items():
                print(f"  {name} = {info['default']}  # {info['help']}")
        return 0
    params: dict[str, Any] = {}
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            print(f"error: {args.config}: expected a mapping of NAME: value", file=sys.stderr)
            return 2
        params.update(loaded)
    params.update({name: parse_value(value) for name, value in args.param})
    try:
        summary = run(params, only, args.track, args.smoke)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[emocause] series done in {summary['total_wall_s']:.1f} s; "
          f"summary: {resolve(params.get('TEST_DIR', 'results_test')) / 'run_summary.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the kernels: see utils.env.setup
    sys.exit(main())
