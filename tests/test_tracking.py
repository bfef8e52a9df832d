"""Experiment log: records, queries, comparison, and two processes writing at once."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from utils import env, tracking
from utils.ed.data import SAMPLE_PATH
from utils.io import file_sha256


@dataclasses.dataclass
class Params:
    MODEL: str = "tiny"
    LR: float = 1e-3
    OUT: object = env.ROOT / "x"


def test_log_and_query_round_trip(tmp_path):
    db = tmp_path / "log.sqlite"
    first = tracking.log_run("ed_train", Params(), {"loss": 1.5, "per_label": {"sad": {"f1": 0.5}}},
                             {"train_s": 2.0}, "tiny", SAMPLE_PATH, db=db)
    second = tracking.log_run("ed_train", Params(LR=2e-3), {"loss": 1.1}, {"train_s": 3.0}, "tiny", SAMPLE_PATH, db=db)
    tracking.log_run("emotion_eval", {"split": "test"}, {"weighted_f1": 0.4}, {}, "smollm2", None, db=db)
    runs = tracking.query_runs(db, kind="ed_train")
    assert list(runs["id"]) == [first, second]
    assert runs.loc[0, "data_sha256"] == file_sha256(SAMPLE_PATH)
    assert runs.loc[0, "metric.per_label.sad.f1"] == 0.5 and runs.loc[1, "param.LR"] == 2e-3
    assert runs.loc[0, "param.OUT"] == str(env.ROOT / "x")
    table = tracking.compare_runs(runs, ["loss"])
    assert list(table.columns) == ["created_at", "kind", "model", "metric.loss", "time.train_s", "param.LR"]
    assert len(tracking.query_runs(db, kind=["ed_train", "emotion_eval"])) == 3
    assert tracking.query_runs(db, limit=1)["kind"].tolist() == ["emotion_eval"]
    with pytest.raises(KeyError, match="known metrics"):
        tracking.compare_runs(runs, ["bleu"])
    png = tracking.plot_runs(table, "loss", tmp_path / "runs.png", show=False)
    assert png.stat().st_size > 1000


def test_wal_mode_and_parameterised_text(tmp_path):
    db = tmp_path / "log.sqlite"
    tricky = "x'); DROP TABLE runs; --"
    tracking.log_run(tricky, {"q": tricky}, model=tricky, db=db)
    assert tracking.query_runs(db, kind=tricky)["param.q"].tolist() == [tricky]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_env_variable_selects_the_database(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.DB_ENV, str(tmp_path / "env.sqlite"))
    tracking.log_run("ed_eval", {}, {"bleu": 1.0})
    assert (tmp_path / "env.sqlite").is_file() and len(tracking.query_runs()) == 1


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from utils import tracking
    open(sys.argv[2] + "." + sys.argv[1] + ".ready", "w").close()
    while not os.path.exists(sys.argv[2] + ".go"):  # start together: the writes must overlap
        time.sleep(0.005)
    for i in range({n}):
        tracking.log_run("concurrent", {{"writer": sys.argv[1], "i": i}}, {{"x": i}}, db=sys.argv[2])
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    db, n = tmp_path / "shared.sqlite", 40
    tracking.connect(db).close()  # create the schema once so both start writing immediately
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(env.ROOT), n=n), encoding="utf-8")
    procs = [subprocess.Popen([sys.executable, str(script), name, str(db)], stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    ready = [tmp_path / f"shared.sqlite.{name}.ready" for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "shared.sqlite.go").touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    runs = tracking.query_runs(db, kind="concurrent")
    assert len(runs) == 2 * n
    for name in ("a", "b"):
        assert sorted(runs.loc[runs["param.writer"] == name, "param.i"]) == list(range(n))
