"""What ``python -m utils.run`` ends with: the run's answer, read back from the files its notebooks wrote.

The headline scores beside their baselines (ECF: emotion weighted F1 against the majority class, pairs against
"self + previous utterance" on the same emotions; empathetic: 32-class accuracy before and after training, the
replies' BLEU / ROUGE-L / perplexity before and after), where the artifacts and the executed notebooks are, and
the rows this run added to the experiment log. Only files written during this run count: a run of other
notebooks (``--only``) shows no older run's scores as its own. Reads only; no track's code is imported.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from utils.env import resolve_artifact, persist_root

DB_ENV = "EMOCAUSE_TRACKING_DB"  # utils.tracking.DB_ENV (not imported: it brings pandas to every run)


def utc(seconds: float) -> str:
    """A time as the experiment log writes ``created_at`` (ISO, UTC, whole seconds), so the two compare."""
    return datetime.fromtimestamp(int(seconds), timezone.utc).isoformat(timespec="seconds")


def _folder(params: dict[str, Any], name: str, default: str) -> Path:
    persist = persist_root(params["PERSIST_DIR"]) if params.get("PERSIST_DIR") else None
    return resolve_artifact(params.get(name, default), persist)


def _fresh(path: Path, started: float) -> dict | None:
    """The JSON at ``path`` if this run wrote it (modified since ``started``), else None."""
    try:
        if path.stat().st_mtime < int(started):
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _get(record: Any, *keys: str) -> Any:
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def ecf_headline(test_dir: Path, started: float) -> list[dict]:
    """Rows {"what", "score", "beside": {baseline: its score}} of notebooks 03 and 05's score files."""
    rows = []
    emotions = _fresh(test_dir / "emotion_metrics.json", started)
    if emotions and "weighted_f1" in emotions:
        rows.append({"what": "emotion, weighted F1", "score": emotions["weighted_f1"],
                     "beside": {"majority class": _get(emotions, "baselines", "majority", "weighted_f1")}})
    pairs = _fresh(test_dir / "subtask2_scores.json", started)
    if pairs and "weighted_f1" in pairs:
        rows.append({"what": "pairs end to end, weighted F1", "score": pairs["weighted_f1"], "beside": {
            "self + previous utterance": _get(pairs, "baselines", "self_and_previous_predicted_emotions", "weighted_f1")}})
        if _get(pairs, "model_gold_emotions", "weighted_f1") is not None:
            rows.append({"what": "pairs on gold emotions, weighted F1", "score": pairs["model_gold_emotions"]["weighted_f1"],
                         "beside": {"self + previous utterance":
                                    _get(pairs, "baselines", "self_and_previous_gold_emotions", "weighted_f1")}})
    for record in (emotions, pairs):
        if record and _get(record, "test_set", "annotated") is False:
            rows.append({"what": "no scores: the test file has no annotations (predictions only)", "score": None,
                         "beside": {}})
            break
    return rows


def ed_headline(ed_dir: Path, started: float) -> list[dict]:
    """Rows of notebooks 08 and 09's metric files: after training beside before it (and the majority class)."""
    rows = []
    classes = _fresh(ed_dir / "classification_metrics.json", started)
    for key, name in (("weighted_f1", "weighted F1"), ("accuracy", "accuracy")):
        if classes and _get(classes, "tuned", key) is not None:
            beside = {what: _get(classes, stage, key) for stage, what in
                      (("base", "before training"), ("tfidf_logreg", "TF-IDF + logistic regression"),
                       ("majority", "majority class")) if _get(classes, stage, key) is not None}
            rows.append({"what": f"32-class {name} ({_get(classes, 'tuned', 'n') or '?'} test rows)",
                         "score": classes["tuned"][key], "beside": beside})
    replies = _fresh(ed_dir / "generation_metrics.json", started)
    for key, name in (("bleu", "replies, BLEU"), ("rougeL", "replies, ROUGE-L"), ("distinct_2", "replies, distinct-2"),
                      ("perplexity", "replies, perplexity")):
        if _get(replies, "after", key) is not None:
            rows.append({"what": name, "score": replies["after"][key],
                         "beside": {"before training": _get(replies, "before", key)}})
    return rows


def logged_runs(db: Path, started: float) -> list[int]:
    """Ids of the experiment log's rows created since ``started``."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [int(r[0]) for r in conn.execute("SELECT id FROM runs WHERE created_at >= ? ORDER BY id",
                                                     (utc(started),))]
    except sqlite3.Error:
        return []


def answer(params: dict[str, Any], books: Sequence[Path], started: float, test_dir: Path) -> dict[str, Any]:
    """The run's answer for ``run_summary.json``: headline rows, where its files are, its experiment-log rows."""
    numbers = {b.name[:2] for b in books}
    train_dir = _folder(params, "TRAIN_DIR", "results_train")
    checkpoints = _folder(params, "CHECKPOINT_DIR", "checkpoints")
    headline, artifacts = [], {}
    if numbers & {"01", "02", "03", "04", "05", "06"}:
        headline += ecf_headline(test_dir, started)
        artifacts["ecf results"] = str(test_dir)
        artifacts["ecf adapters"] = str(checkpoints)
    if numbers & {"07", "08", "09"}:
        headline += ed_headline(train_dir / "empathetic", started)
        artifacts["empathetic results"] = str(train_dir / "empathetic")
        artifacts["empathetic adapters"] = str(checkpoints / "empathetic")
    explicit = params.get("TRACKING_DB") or os.environ.get(DB_ENV)
    db = _folder({**params, "TRACKING_DB": explicit}, "TRACKING_DB", "") if explicit else train_dir / "experiments.sqlite"
    return {"headline": headline, "artifacts": artifacts, "executed": str(test_dir / "executed"),
            "experiment_log": {"db": str(db), "ids": logged_runs(db, started)}}


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _ids(ids: Sequence[int]) -> str:
    if not ids:
        return "no rows"
    if len(ids) == 1:
        return f"run {ids[0]}"
    contiguous = list(ids) == list(range(ids[0], ids[-1] + 1))
    return f"runs {ids[0]}-{ids[-1]}" if contiguous else "runs " + ", ".join(map(str, ids))


def closing_lines(entry: dict[str, Any], summary: Path) -> list[str]:
    """The block the terminal ends with: scores beside baselines, where the files are, the log's rows."""
    lines = [f"[emocause] done in {entry['total_wall_s']:.1f} s (run {entry['run_id']})"]
    rows = entry.get("headline") or []
    width = max((len(r["what"]) for r in rows), default=0)
    for row in rows:
        beside = "".join(f"   {name} {_number(score)}" for name, score in row["beside"].items())
        lines.append(f"    {row['what']:<{width}}  {_number(row['score']):>6}{beside}".rstrip())
    if not rows:
        lines.append("    no scores: no notebook of this run writes them")
    for name, where in entry.get("artifacts", {}).items():
        lines.append(f"  {name}: {where}")
    lines.append(f"  executed notebooks: {entry['executed']}")
    log = entry.get("experiment_log", {})
    lines.append(f"  experiment log: {log.get('db')}, {_ids(log.get('ids', []))} of this run (notebook 10 compares them)")
    lines.append(f"  summary: {summary}")
    return lines
