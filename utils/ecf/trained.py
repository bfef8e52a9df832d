"""What a finished run left in the checkpoint folder, read by the tools that use it outside the notebooks
(``utils.ecf.analyse``, ``utils.ecf.export``): each task's adapter and its task record, and the scores
notebooks 03 and 05 recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from utils.ecf.artifacts import TASK_FILE
from utils.env import resolve_artifact
from utils.io import read_json
from utils.lm.modeling import ADAPTER_WEIGHTS

NOTEBOOK = {"emotion": "02_emotion_finetuning", "cause": "04_cause_finetuning"}
RUN_HINT = "python -m utils.run"


class NoFinishedRun(FileNotFoundError):
    """The checkpoint folder holds no finished run of a task; the message says which notebook to run."""


@dataclass(frozen=True)
class Trained:
    """One task's adapter folder and the record its training notebook wrote beside it."""

    task: str
    folder: Path  # <checkpoint dir>/<task>/<style>
    record: dict  # task.json

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def model(self) -> str:
        return self.record["model"]


def trained(checkpoint_dir: str | Path, task: str, style: str = "conversation") -> Trained:
    """The finished ``task`` run in ``checkpoint_dir`` (STYLE="fused": 02's adapter serves both tasks)."""
    if task not in NOTEBOOK:
        raise ValueError(f"task {task!r}: use one of {list(NOTEBOOK)}")
    root = resolve_artifact(str(checkpoint_dir))
    folder = root / task / style
    record_path = folder / TASK_FILE
    adapter_folder = (root / "emotion" / style if style == "fused" else folder) / "adapter"
    if not record_path.is_file() or not (adapter_folder / ADAPTER_WEIGHTS).is_file():
        found = sorted(p.parent.name for p in root.glob(f"{task}/*/{TASK_FILE}")) if root.is_dir() else []
        other = f" (it has STYLE {', '.join(found)}: pass --style)" if found else ""
        raise NoFinishedRun(f"{root}: no finished {task} run with STYLE={style!r}{other}; run notebook "
                            f"{NOTEBOOK[task]} ({RUN_HINT} runs the series) or pass --checkpoint-dir")
    try:
        record = read_json(record_path)
    except (OSError, json.JSONDecodeError) as e:
        raise NoFinishedRun(f"{record_path}: unreadable task record ({e}); rerun notebook {NOTEBOOK[task]}") from None
    return Trained(task, folder if style != "fused" else root / "emotion" / style, record)


def recorded_scores(test_dir: str | Path, task: str) -> list[tuple[str, float | None, float | None]]:
    """(metric, the model, its baseline) from the scores 03 (emotion) or 05 (cause) wrote; [] where none."""
    folder = resolve_artifact(str(test_dir))
    name = "emotion_metrics.json" if task == "emotion" else "subtask2_scores.json"
    path = folder / name
    if not path.is_file():
        return []
    scores = read_json(path)
    if scores.get("scored") is False:
        return []
    baselines = scores.get("baselines") or {}
    base = next(iter(baselines.values()), {}) if baselines else {}
    base_name = next(iter(baselines), "baseline")
    keys = ("weighted_f1", "macro_f1", "accuracy") if task == "emotion" else ("weighted_f1", "weighted_precision",
                                                                             "weighted_recall")
    return [(f"{k} (baseline: {base_name})", scores.get(k), base.get(k) if isinstance(base, dict) else None)
            for k in keys if k in scores]
