"""Run the notebook series headless with papermill.

    python -m utils.run                      # the embedded offline set-up: sample data + SmolLM2
    python -m utils.run --smoke              # tiny random Llama, a few steps: seconds, for tests
    python -m utils.run -p MODEL TinyLlama/TinyLlama-1.1B-Chat-v1.0 -p DATA_PATH data/ecf/Subtask_2_train.json
    python -m utils.run --config my_run.yaml --only 02,03

Each notebook receives the parameters its dataclass declares (``utils.params.CONFIGS``; its
`parameters` cell is generated from it). Before the first notebook starts, every notebook's
dataclass is built from what it receives, so a parameter that no notebook declares, a value of the
wrong type or an invalid value stops the run at once. Command-line and ``--config`` values are
text, typed by the field they set ("1e-4" is a float for LEARNING_RATE, "010" stays a string for
MODEL). Executed copies go to ``<TEST_DIR>/executed/`` and a summary to ``<TEST_DIR>/run_summary.json``
(under PERSIST_DIR's folder when one is given), one entry per track, each with its timings, headline scores
beside their baselines, where its files are and its rows in the experiment log; the terminal ends with the
same (``utils.run_report``). While a notebook runs, the terminal shows a line per code cell and the cell's
progress bar (``utils.progress``).

Nothing a run made is lost to another: ``--smoke`` writes under ``runs/smoke/`` (its own checkpoints and
results); a run whose parameters differ from the last run of its track first copies that run's results
beside them (``results_test.kept-<run id>``), and a training run of another identity trains beside a finished
adapter and moves it aside only once it has finished (``utils.lm.resume``); ``--replace`` lets a run overwrite both
instead. A run of notebooks 10 and 11 alone changes no results: it copies nothing and leaves the summary's track
entries as they were; ``python -m utils.kept`` lists the kept copies and removes those named. Ctrl-C interrupts the
running cell and ends the run with one line (the notebook and cell, the command that goes on) and exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from utils import params as notebook_params
from utils import env
from utils.env import ROOT, resolve_artifact
from utils.io import write_json_atomic
from utils.text import terminal_safe

NOTEBOOK_DIR = notebook_params.NOTEBOOK_DIR
# notebook 10 (the experiment log) closes both tracks; the ECF track's 11 (your own conversation) runs after it: it
# scores nothing and logs nothing, so the log has every run of the track when 10 reads it
TRACKS = {"ecf": ("01", "02", "03", "04", "05", "06", "10", "11"), "empathetic": ("07", "08", "09", "10")}
# notebooks that read the results earlier runs left and change none (10 draws the experiment log, 11 reads your own
# conversation): a run of these alone keeps no copy and leaves its track's summary entry, and headline, as they were
VIEWS = ("10", "11")
SMOKE_DIR = "runs/smoke"  # --smoke's own folder: the tiny model never touches a real run's adapters or results
SMOKE_DEFAULTS = {"SMOKE": True, "TRAIN_DIR": f"{SMOKE_DIR}/results_train", "TEST_DIR": f"{SMOKE_DIR}/results_test",
                  "CHECKPOINT_DIR": f"{SMOKE_DIR}/checkpoints"}
SUMMARY_FILE = "run_summary.json"
KEPT = ".kept-"  # results_test.kept-<run id>: an earlier run's results, copied before a run with other parameters
# the runner's own parameters (where executed copies and the summary go), accepted even where no
# notebook of the run declares them; a notebook whose dataclass declares one receives it too
RUNNER_PARAMS = {"TEST_DIR": str}


class RunError(RuntimeError):
    """A notebook or a parameter set that cannot run."""


class Interrupted(RunError):
    """Ctrl-C: the notebook and cell where the run stopped; ``hard`` when a second one left the kernel mid-cell."""

    def __init__(self, where: str, hard: bool = False) -> None:
        super().__init__(where)
        self.where, self.hard = where, hard


STOPPED = 130  # the exit status of a run stopped by Ctrl-C, as a shell gives a process killed by SIGINT


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


def config_classes(books: list[Path]) -> dict[Path, type]:
    """Each notebook's parameters dataclass."""
    try:
        return {book: notebook_params.config_class(book) for book in books}
    except notebook_params.ConfigError as e:
        raise RunError(str(e)) from None


def typed(texts: dict[str, str], books: list[Path]) -> dict[str, Any]:
    """Command-line and YAML values (text) converted by the type of the field they set; a name
    that no notebook of the run declares stays text (``plan`` refuses it)."""
    declared: dict[str, dict[str, Any]] = {}  # name -> notebook number (or "runner") -> annotation
    for book, cls in config_classes(books).items():
        for name, annotation in notebook_params.field_types(cls).items():
            declared.setdefault(name, {})[book.name[:2]] = annotation
    for name, annotation in RUNNER_PARAMS.items():
        declared.setdefault(name, {})["runner"] = annotation
    values = {}
    for name, text in texts.items():
        kinds = {notebook_params.type_name(a): a for a in declared.get(name, {}).values()}
        if len(kinds) > 1:
            raise RunError(f"parameter {name!r} has different types in the notebooks of this run "
                           f"({declared[name]}): run them separately with --only")
        try:
            values[name] = notebook_params.from_text(name, text, *kinds.values()) if kinds else text
        except notebook_params.ConfigError as e:
            raise RunError(f"{e} (declared by notebooks {', '.join(declared[name])})") from None
    return values


def plan(books: list[Path], params: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """Give each notebook the parameters its dataclass declares, after building that dataclass from
    them (names, types and values checked before anything runs); refuse names no notebook declares."""
    classes = config_classes(books)
    fields = {book: {f.name for f in dataclasses.fields(cls)} for book, cls in classes.items()}
    known = set().union(*fields.values())
    unknown = sorted(set(params) - known - set(SMOKE_DEFAULTS) - set(RUNNER_PARAMS))
    if unknown:
        raise RunError(notebook_params.unknown_names(unknown, known | set(RUNNER_PARAMS),
                                                     "not declared by any notebook of this run"))
    steps, built = [], []
    for book, cls in classes.items():
        given = {k: v for k, v in params.items() if k in fields[book]}
        try:
            built.append(notebook_params.build(cls, given))
        except ValueError as e:  # ConfigError (name, type) or the dataclass's own checks (value)
            raise RunError(f"{book.name}: {e}") from None
        steps.append((book, given))
    try:
        for cfg in built:  # settings that would fail only after earlier notebooks had run
            cfg.check_series(built)
    except ValueError as e:
        raise RunError(str(e)) from None
    return steps


def read_config(path: str | os.PathLike) -> dict[str, str]:
    """A YAML file of ``NAME: value`` lines, every value read as text (``typed`` converts it, so YAML 1.1
    never turns "yes" or "010" into something else)."""
    try:
        loaded = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    except OSError as e:
        raise RunError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise RunError(f"--config {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise RunError(f"--config {path}: not valid YAML{line}: {getattr(e, 'problem', None) or e}") from None
    loaded = {} if loaded in (None, "") else loaded
    if not isinstance(loaded, dict):
        raise RunError(f"--config {path}: expected a mapping of NAME: value lines")
    nested = sorted(k for k, v in loaded.items() if not isinstance(v, str))
    if nested:
        raise RunError(f"--config {path}: {nested}: a parameter's value is one scalar, not a list or mapping")
    return loaded


def smoke_model(books: list[Path], folder: Path) -> Path | None:
    """Build (once) the tiny random Llama of the first notebook whose track names a corpus for it
    (``smoke_corpus``: a tokenizer trained on the track's bundled sample) in ``folder``/<its name>;
    None where no notebook of the run loads a model."""
    from utils.lm.tiny import build_tiny_llama

    corpus = next((c for c in (cls.smoke_corpus() for cls in config_classes(books).values()) if c), None)
    if corpus is None:
        return None
    name, texts, words = corpus
    directory = folder / name
    if (directory / "config.json").exists():
        return directory
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" of a model saved in a second says nothing
    try:
        return build_tiny_llama(directory, texts, words=words)
    finally:
        hf_logging.enable_progress_bar()


def execute(book: Path, params: dict[str, Any], out_dir: Path, kernel: str = "python3") -> float:
    """Execute one notebook with papermill (cwd = repository root), a line per cell on the terminal;
    return its wall time."""
    import papermill  # deferred with utils.progress, which imports it: --list and refused runs start at once

    from utils import progress

    out_dir.mkdir(parents=True, exist_ok=True)
    start, feedback = time.perf_counter(), progress.Feedback(book.name)
    try:
        with progress.ctrl_c(feedback):
            papermill.execute_notebook(str(book), str(out_dir / book.name), parameters=params, kernel_name=kernel,
                                       cwd=str(ROOT), progress_bar=False, engine_name=progress.ENGINE,
                                       feedback=feedback, kernel_manager_class=progress.kernel_manager())
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the handler: the kernel may still be busy
        progress.signal_kernels(signal.SIGKILL)
        raise Interrupted(f"{book.name} {feedback.where}", hard=True) from None
    except Exception as e:
        if feedback.stopped:  # the cell Ctrl-C interrupted, or the kernel it caught starting
            raise Interrupted(f"{book.name} {feedback.where}") from None
        if isinstance(e, papermill.PapermillExecutionError):
            raise RunError(f"{book.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                           f"the executed copy with the traceback is {out_dir / book.name}") from None
        raise
    return time.perf_counter() - start


def artifact_dir(params: dict[str, Any], name: str, default: str) -> Path:
    """An artifact folder parameter (TRAIN_DIR, TEST_DIR, CHECKPOINT_DIR) as the notebooks resolve it."""
    persist = env.persist_root(params["PERSIST_DIR"]) if params.get("PERSIST_DIR") else None
    return resolve_artifact(params.get(name, default), persist)


def output_dir(params: dict[str, Any]) -> Path:
    """TEST_DIR, where the executed copies and the summary go (under PERSIST_DIR's folder when given)."""
    return artifact_dir(params, "TEST_DIR", "results_test")


def read_summary(test_dir: Path) -> dict[str, Any]:
    """``run_summary.json`` as {"tracks": {track: entry}}; a summary of an older version (one run, no tracks) is
    read as the ECF track's; {} where there is none or it cannot be read."""
    try:
        found = json.loads((test_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(found, dict) and "tracks" not in found and "parameters" in found:
        return {"tracks": {"ecf": {**found, "run_id": "earlier"}}}
    return found if isinstance(found, dict) else {}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def keep_earlier_results(params: dict[str, Any], track: str) -> list[str]:
    """Before a run whose parameters differ from the last run of ``track``: copy that run's TEST_DIR and TRAIN_DIR
    (not the experiment log, which every run adds to) beside them as ``<folder>.kept-<its run id>``; the lines that
    say so. Nothing to keep where the last run had these parameters (a rerun) or none ran."""
    test_dir, train_dir = output_dir(params), artifact_dir(params, "TRAIN_DIR", "results_train")
    entries = read_summary(test_dir).get("tracks", {})
    # the newest run that wrote into these folders for any track this run covers ("all" covers both)
    previous = max((entries[t] for t in covered(track) if t in entries), key=lambda e: str(e.get("run_id")),
                   default=None)
    if not previous or _same(previous.get("parameters"), params):
        return []
    old = previous.get("parameters") or {}
    differ = ", ".join(f"{k}: {old.get(k, '(default)')} -> {params.get(k, '(default)')}"
                       for k in sorted(set(old) | set(params)) if not _same(old.get(k), params.get(k)))
    kept = []
    for folder in dict.fromkeys((test_dir, train_dir)):  # once where both name one folder
        if folder.is_dir() and any(p.name != ".gitkeep" for p in folder.iterdir()):
            target, n = folder.with_name(f"{folder.name}{KEPT}{previous.get('run_id', 'earlier')}"), 1
            while target.exists():
                n += 1
                target = folder.with_name(f"{folder.name}{KEPT}{previous.get('run_id', 'earlier')}-{n}")
            partial = target.with_name(f".{target.name}.partial")  # a copy cut short never looks like a kept run
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial, ignore=shutil.ignore_patterns("*.sqlite", "*.sqlite-*", ".lock"))
            os.replace(partial, target)
            kept.append(str(target))
    if not kept:
        return []
    return [f"[emocause] this {track} run's parameters differ from the last one's ({differ}): its results are kept, "
            f"copied to {' and '.join(kept)} (--replace: no copy; python -m utils.kept lists kept runs and removes "
            "them)"]


def covered(track: str) -> tuple[str, ...]:
    """The summary entries a run of ``track`` speaks for: itself, and each track for "all"."""
    return (track, *TRACKS) if track == "all" else (track,)


def run_series(params: dict[str, Any], only: list[str] | None = None, track: str = "ecf",
        smoke: bool = False, replace: bool = False) -> dict[str, Any]:
    """Run the series and write the summary; the parameters are the run's whole configuration. Returns this
    track's entry of the summary (parameters, notebooks with their timings, headline, where things are)."""
    params = dict(params)
    books = discover(only, track)
    if smoke:
        params = {**SMOKE_DEFAULTS, **params}
        if "MODEL" not in params:
            with contextlib.redirect_stdout(io.StringIO()):  # not "MODEL=auto -> ...": the tiny model replaces it
                plan(books, params)  # a bad parameter stops the run before the tiny model is built
            model = smoke_model(books, artifact_dir(params, "CHECKPOINT_DIR", "checkpoints"))
            if model is not None:
                params["MODEL"] = str(model)
    steps = plan(books, params)
    test_dir = output_dir(params)
    if smoke:
        print(f"[emocause] --smoke writes under its own folders: {artifact_dir(params, 'CHECKPOINT_DIR', 'checkpoints')}, "
              f"{artifact_dir(params, 'TRAIN_DIR', 'results_train')}, {test_dir}; a real run's files stay as they are",
              flush=True)
    views = all(book.name[:2] in VIEWS for book in books)
    if not replace and not views:
        for line in keep_earlier_results(params, track):
            print(terminal_safe(line), flush=True)  # it quotes parameter values
    with _replacing(replace):
        entry = _run_books(params, steps, only, test_dir)
    summary = read_summary(test_dir)
    if views:  # the tracks' entries describe the results in these folders, which this run left as they were
        summary.setdefault("views", {})[track] = entry
    else:
        for name in covered(track):  # another track's entry stays
            summary.setdefault("tracks", {})[name] = entry
        summary["last"] = track
    write_json_atomic(test_dir / SUMMARY_FILE, summary)
    return entry


@contextlib.contextmanager
def _replacing(replace: bool):
    """$EMOCAUSE_REPLACE=1 for this run's kernels only (training may then replace a finished adapter)."""
    before = os.environ.get(env.REPLACE_ENV)
    if replace:
        os.environ[env.REPLACE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(env.REPLACE_ENV, None)
        else:
            os.environ[env.REPLACE_ENV] = before


def _run_books(params: dict[str, Any], steps: list, only: list[str] | None, test_dir: Path) -> dict[str, Any]:
    """Execute the planned notebooks in order; the run's summary entry with its answer (``run_report``)."""
    from utils import run_report

    started = time.time()
    entry: dict[str, Any] = {"run_id": time.strftime("%Y%m%d-%H%M%S", time.localtime(started)),
                             "started_at": run_report.utc(started), "parameters": params, "only": only,
                             "notebooks": []}
    for book, book_params in steps:
        print(terminal_safe(f"[emocause] {book.name} {json.dumps(book_params, ensure_ascii=False)}"), flush=True)
        seconds = execute(book, book_params, test_dir / "executed")
        entry["notebooks"].append({"notebook": book.name, "wall_s": round(seconds, 2)})
        print(f"[emocause] {book.name} done in {seconds:.1f} s", flush=True)
    entry["total_wall_s"] = round(sum(n["wall_s"] for n in entry["notebooks"]), 2)
    entry.update(run_report.answer(params, [book for book, _ in steps], started, test_dir))
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.run", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", help="YAML file of parameters (NAME: value)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter; overrides --config")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,02")
    parser.add_argument("--track", choices=("all", *TRACKS), default="ecf",
                        help="ecf (default: 01-06, the experiment log and 11, your own conversation), "
                             "empathetic (07-10) or all")
    parser.add_argument("--smoke", action="store_true", help="tiny random model and a few steps")
    parser.add_argument("--replace", action="store_true",
                        help="let this run overwrite a finished adapter and the results of a run with other parameters "
                             "(without it they are kept beside, *.kept-<id>)")
    parser.add_argument("--list", action="store_true", help="list notebooks and their parameters")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        books = discover(only, args.track)
        if args.list:
            for book, cls in config_classes(books).items():
                print(book.name)
                for f in dataclasses.fields(cls):
                    print(f"  {f.name} = {notebook_params.literal(f.default)}  # {notebook_params.help_of(f)}")
            return 0
        try:
            texts = read_config(args.config) if args.config else {}
        except RunError as e:  # a usage error: the file named on the command line
            print(f"error: {terminal_safe(str(e))}", file=sys.stderr)
            return 2
        texts.update(dict(args.param))
        params = typed(texts, books)
        entry = run_series(params, only, args.track, args.smoke, args.replace)
    except Interrupted as e:
        print(stopped_line(e.where, sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return STOPPED
    except KeyboardInterrupt:  # before or after the notebooks
        print(stopped_line("between notebooks", sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return STOPPED
    except RunError as e:
        print(f"error: {terminal_safe(str(e))}", file=sys.stderr)
        return 1
    from utils import run_report

    print("\n".join(run_report.closing_lines(entry, output_dir(entry["parameters"]) / SUMMARY_FILE)))
    return 0


def stopped_line(where: str, argv: list[str]) -> str:
    """The one line a run stopped by Ctrl-C ends with: where it stopped, and the command that goes on from there."""
    command = " ".join(["python -m utils.run", *(shlex.quote(a) for a in argv)])
    return (f"[emocause] stopped by Ctrl-C in {where}; to go on, run the same command again: {command} "
            "(training resumes from its last checkpoint; a finished adapter stays where it was)")


def cli() -> None:
    """``python -m utils.run``: ``main``, and after Ctrl-C its one line and exit status 130, with nothing after it
    (os._exit: no interpreter teardown to print the tracebacks of the event loop papermill was in)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the kernels: see utils.env.setup
    code = main()
    if code == STOPPED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    cli()
