"""Experiment log: every training, inference and evaluation run of both tracks in one SQLite file.

    from utils import tracking
    tracking.log_run("emotion_train", params=CFG, metrics=result.metrics, timings={"train_s": 812.4},
                     model=CFG.MODEL, data_path=CFG.DATA_PATH)

Each row keeps the parameters, metrics and timings (JSON), the model id, the sha256 of the data
file and the git commit. The database runs in WAL mode with a busy timeout and writes in
``BEGIN IMMEDIATE`` transactions, so two notebooks logging at once both land; every statement is
parameterised. ``EMOCAUSE_TRACKING_DB`` overrides the default path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from utils.env import ROOT, resolve, resolve_artifact
from utils.io import file_sha256
from utils.params import HostedConfig, param

DEFAULT_DB = "results_train/experiments.sqlite"
DB_ENV = "EMOCAUSE_TRACKING_DB"
BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another's transaction before failing
KINDS_HINT = "e.g. 'emotion_train', 'cause_inference', 'ed_classify_eval', 'ed_generate_eval'"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    timings TEXT NOT NULL,
    data_path TEXT,
    data_sha256 TEXT,
    git_commit TEXT,
    git_dirty INTEGER,
    host TEXT,
    notes TEXT
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind, created_at);
"""


def db_path(db: str | os.PathLike | None = None, train_dir: str | os.PathLike | None = None) -> Path:
    """The database file: ``db``, else $EMOCAUSE_TRACKING_DB, else <train_dir>/experiments.sqlite,
    else results_train/experiments.sqlite (relative paths are under the artifact root: PERSIST_DIR's folder
    or the repository, ``env.resolve_artifact``)."""
    fallback = Path(train_dir) / "experiments.sqlite" if train_dir else DEFAULT_DB
    return resolve_artifact(db or os.environ.get(DB_ENV) or fallback)


def connect(db: str | os.PathLike | None = None) -> sqlite3.Connection:
    """Open (creating) the log with WAL journaling and a busy timeout."""
    path = db_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # an int constant, not user input
    conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; at most the last run is lost
    conn.executescript(_SCHEMA)
    return conn


def _jsonable(value: Any) -> Any:
    """Dataclasses, Paths, numpy numbers and tuples become plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value or {}), ensure_ascii=False, sort_keys=True)


def data_sha256(path: str | os.PathLike | None) -> str | None:
    """sha256 of the data file (of a folder's files in name order); None without a path."""
    if not path:
        return None
    full = resolve(path)
    return file_sha256(full) if full.exists() else None


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes to tracked files); (None, None) outside git or before a commit."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


class Tracked:
    """A notebook config that logs its run (field TRACKING_DB, beside TRAIN_DIR): both tracks' configs mix it in."""

    def tracking_db(self) -> Path:
        """The experiment log this run writes to (the same rule notebook 10 reads with)."""
        return db_path(self.TRACKING_DB or None, self.TRAIN_DIR)


def log_run(kind: str, params: Any = None, metrics: Any = None, timings: Any = None,
            model: str | None = None, data_path: str | os.PathLike | None = None, *,
            notes: str = "", db: str | os.PathLike | None = None) -> int:
    """Record one run and return its id."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"kind must name the run's step, {KINDS_HINT}; got {kind!r}")
    commit, dirty = git_state()
    row = (datetime.now(timezone.utc).isoformat(timespec="seconds"), kind, None if model is None else str(model),
           _dumps(params), _dumps(metrics), _dumps(timings), None if data_path is None else str(data_path),
           data_sha256(data_path), commit, None if dirty is None else int(dirty), socket.gethostname(), notes)
    conn = connect(db)
    try:
        for attempt in range(5):
            try:
                conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no read-then-upgrade deadlock
                cursor = conn.execute(
                    "INSERT INTO runs (created_at, kind, model, params, metrics, timings, data_path, "
                    "data_sha256, git_commit, git_dirty, host, notes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
                conn.execute("COMMIT")
                return int(cursor.lastrowid)
            except sqlite3.OperationalError as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if "locked" not in str(e) and "busy" not in str(e) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))  # the busy timeout already waited; back off once more
        raise AssertionError("unreachable")
    finally:
        conn.close()


def train_metrics(result: Any) -> dict:
    """The headline numbers of a training.TrainResult (steps, losses, tokens, throughput, memory)."""
    keys = ("global_step", "epoch", "train_loss_first", "train_loss_last", "eval_loss", "train_tokens",
            "tokens_per_s", "samples_per_s", "peak_memory_mb")
    return {k: getattr(result, k) for k in keys if hasattr(result, k)}


class Timer:
    """Named wall-clock timings: ``with timer.section("train"): ...`` then ``timer.seconds``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"{name}_s"] = round(self.seconds.get(f"{name}_s", 0.0) + time.perf_counter() - start, 3)


def _flatten(prefix: str, values: Mapping[str, Any], out: dict[str, Any]) -> None:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}; lists are kept as JSON text (a report is not a column)."""
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            _flatten(name, value, out)
        else:
            out[name] = json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value


def query_runs(db: str | os.PathLike | None = None, *, kind: str | Sequence[str] | None = None,
               model: str | None = None, since: str | None = None, limit: int | None = None) -> pd.DataFrame:
    """Runs as a DataFrame, newest last, with params/metrics/timings flattened into
    ``param.*``, ``metric.*`` and ``time.*`` columns."""
    clauses, args = [], []
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        clauses.append(f"kind IN ({','.join('?' * len(kinds))})")  # placeholders only, values bound
        args += kinds
    if model is not None:
        clauses.append("model = ?")
        args.append(model)
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
    if limit is not None:
        sql = f"SELECT * FROM ({sql[:-len(' ORDER BY id')]} ORDER BY id DESC LIMIT ?) ORDER BY id"
        args.append(int(limit))
    conn = connect(db)
    try:
        rows = conn.execute(sql, args).fetchall()
        columns = [c[0] for c in conn.execute("SELECT * FROM runs LIMIT 0").description]
    finally:
        conn.close()
    records = []
    for values in rows:
        raw = dict(zip(columns, values))
        record = {k: raw[k] for k in ("id", "created_at", "kind", "model", "data_path", "data_sha256",
                                       "git_commit", "git_dirty", "host", "notes")}
        for column, prefix in (("params", "param"), ("metrics", "metric"), ("timings", "time")):
            _flatten(prefix, json.loads(raw[column]), record)
        records.append(record)
    return pd.DataFrame(records)


def compare_runs(runs: pd.DataFrame, metrics: Sequence[str] = (), *, show_params: str = "varying") -> pd.DataFrame:
    """One row per run: kind, model, the chosen metrics (default: all), timings, and the params
    that differ between the runs (``show_params``: "varying", "all" or "none")."""
    if runs.empty:
        return runs
    metric_cols = [f"metric.{m}" if not m.startswith("metric.") else m for m in metrics] or \
        [c for c in runs.columns if c.startswith("metric.")]
    missing = [c for c in metric_cols if c not in runs.columns]
    if missing:
        known = sorted(c[len("metric."):] for c in runs.columns if c.startswith("metric."))
        raise KeyError(f"no runs have metric(s) {missing}; known metrics: {known}")
    param_cols = [c for c in runs.columns if c.startswith("param.")]
    if show_params == "varying":
        param_cols = [c for c in param_cols if runs[c].astype(str).nunique(dropna=False) > 1]
    elif show_params == "none":
        param_cols = []
    time_cols = [c for c in runs.columns if c.startswith("time.")]
    table = runs[["id", "created_at", "kind", "model", *metric_cols, *time_cols, *param_cols]]
    return table.set_index("id")


def plot_runs(table: pd.DataFrame, metric: str, path: str | os.PathLike, *, show: bool = True) -> Path:
    """Bar chart of one metric per run (labelled 'id kind model'), saved as a PNG."""
    import matplotlib.pyplot as plt

    from utils.plots import save_figure

    column = metric if metric.startswith("metric.") else f"metric.{metric}"
    if column not in table.columns:
        raise KeyError(f"{metric!r} is not a column of the comparison table; pick one of "
                       f"{[c for c in table.columns if c.startswith('metric.')]}")
    data = table[column].dropna()
    labels = [f"#{i} {table.at[i, 'kind']}\n{Path(str(table.at[i, 'model'])).name[:24]}" for i in data.index]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(data) + 2), 4))
    ax.bar(range(len(data)), data.astype(float).to_numpy(), color="C0")
    ax.set_xticks(range(len(data)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(title=f"{column[len('metric.'):]} by run", ylabel=column[len("metric."):])
    return save_figure(fig, path, show)


@dataclasses.dataclass(frozen=True)
class LogConfig(HostedConfig):
    """Parameters of notebooks/10_experiment_log.ipynb."""

    TRAIN_DIR: str = param("results_train", "the default log is TRAIN_DIR/experiments.sqlite")
    TRACKING_DB: str = param("", "experiment log; empty: $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite")
    KINDS: str = param("", "comma-separated kinds to show (e.g. ed_classify_eval,emotion_eval); empty: all")
    PLOT_METRICS: str = param("weighted_f1,accuracy,bleu,rougeL,perplexity",
                              "comma-separated metrics plotted where runs have them")

    @property
    def db(self) -> Path:
        return db_path(self.TRACKING_DB or None, self.TRAIN_DIR)

    @property
    def kinds(self) -> list[str]:
        return [k.strip() for k in self.KINDS.split(",") if k.strip()]

    @property
    def plot_metrics(self) -> list[str]:
        return [m.strip() for m in self.PLOT_METRICS.split(",") if m.strip()]

    @property
    def figures_dir(self) -> Path:
        return resolve_artifact(self.TRAIN_DIR) / "figures"


def plot_metrics(runs: pd.DataFrame, metrics: Sequence[str], out_dir: str | os.PathLike,
                 *, show: bool = True) -> dict[str, Path]:
    """One bar chart per metric over the runs that recorded it (experiments_<metric>.png)."""
    paths = {}
    for metric in metrics:
        column = f"metric.{metric}"
        if column not in runs.columns or runs[column].isna().all():
            continue  # no run of this log measured it
        table = compare_runs(runs[runs[column].notna()], [metric], show_params="none")
        paths[metric] = plot_runs(table, metric, Path(out_dir) / f"experiments_{metric}.png", show=show)
    return paths
