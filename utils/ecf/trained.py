"""What a finished run left in the checkpoint folder, read by the tools that use it outside the notebooks
(``utils.ecf.analyse``, ``utils.ecf.export``): each task's adapter and its task record, and the scores
notebooks 03 and 05 recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from utils.ecf.artifacts import TASK_FILE, rule_mismatch
from utils.ecf.data import SAMPLE_PATH
from utils.env import ROOT, SCHEMES, resolve_artifact
from utils.io import read_json
from utils.lm.modeling import ADAPTER_WEIGHTS
from utils.lm.resume import KEPT

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
        other = f" (it has {' or '.join(f'--style {name}' for name in found)}: pass one)" if found else ""
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


def base_style(style: str) -> str:
    """The STYLE of a run's folder name: ``conversation.kept-<fingerprint>`` (a run kept aside) is ``conversation``."""
    return style.split(KEPT)[0]


def _when(run: Trained) -> str:
    """When ``run`` was trained: its record's time, else its adapter's file time (records before it)."""
    weights = run.adapter / ADAPTER_WEIGHTS
    try:
        when = datetime.fromisoformat(run.record["trained_at"]).astimezone(timezone.utc)
    except (KeyError, TypeError, ValueError):
        if not weights.is_file():
            return "at an unrecorded time"
        when = datetime.fromtimestamp(weights.stat().st_mtime, timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _steps(run: Trained) -> object:
    summary = run.folder / "train_summary.json"
    if "global_step" in run.record:
        return run.record["global_step"]
    return read_json(summary).get("global_step", "?") if summary.is_file() else "?"


def is_sample(data_path: str | None) -> bool:
    """Whether ``data_path`` is the bundled synthetic sample (data/ecf_sample.json)."""
    if not data_path or data_path.partition(":")[0] in SCHEMES:  # "ecf:<name>": an official file, not fetched here
        return False
    path = Path(data_path).expanduser()
    return (path if path.is_absolute() else ROOT / path).resolve() == SAMPLE_PATH.resolve()


def provenance(run: Trained) -> str:
    """One line: what ``run``'s adapter was trained on (data file, conversations, steps) and when."""
    rec, where = run.record, run.folder.relative_to(ROOT) if run.folder.is_relative_to(ROOT) else run.folder
    data = rec.get("data_path") or "a data file not recorded (a run from before it was)"
    limit = f", LIMIT={rec['limit']}" if rec.get("limit") else ""
    smoke = ", SMOKE" if rec.get("smoke") else ""
    return (f"{run.task} adapter ({where}): {_steps(run)} steps on {rec.get('train_conversations', '?')} "
            f"conversations of {data}{limit}{smoke}, trained {_when(run)}, model {rec.get('model', '?')}")


def demo_warning(runs: list[Trained]) -> str | None:
    """One line where an adapter was trained on the bundled sample or in a smoke run: what it shows is the
    pipeline at work, not a trained reader; None otherwise."""
    sample = [r.task for r in runs if is_sample(r.record.get("data_path"))]
    smoke = [r.task for r in runs if r.record.get("smoke")]
    if not sample and not smoke:
        return None
    what = []
    if sample:
        what.append(f"the bundled synthetic sample ({SAMPLE_PATH.relative_to(ROOT)}, {' and '.join(sample)})")
    if smoke:
        what.append(f"a smoke run ({' and '.join(smoke)}: a few conversations and steps)")
    return (f"warning: trained on {' and in '.join(what)}: these labels show the pipeline working, not a model "
            f"of emotions; train on ECF 2.0 for that ({RUN_HINT} -p DATA_PATH <Subtask_2_train.json>)")


def stale_rule(emotion: Trained, cause: Trained) -> str | None:
    """Why 04's end-to-end rule does not fit the emotion adapter in place: chosen for another one (the records
    say), or, records from before that, older than the emotion adapter; None where it fits or there is none."""
    if not cause.record.get("end_to_end"):
        return None  # the stage-wise rule: 04's cut-offs on gold emotions do not depend on the emotion adapter
    mismatch = rule_mismatch(emotion.record, cause.record)
    if mismatch or cause.record["end_to_end"].get("emotion_fingerprint"):
        return mismatch
    weights, rule = emotion.adapter / ADAPTER_WEIGHTS, cause.folder / TASK_FILE
    if weights.is_file() and rule.is_file() and weights.stat().st_mtime > rule.stat().st_mtime:
        return (f"the emotion adapter (trained {_when(emotion)}) is newer than the end-to-end rule notebook 04 "
                "chose for the emotion adapter before it")
    return None
