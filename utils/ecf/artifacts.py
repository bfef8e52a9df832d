"""What the ECF notebooks pass each other: the data splits, the adapter folders with their task
record (``task.json``), and result files written atomically beside a resumable checkpoint."""

from __future__ import annotations

from pathlib import Path

from utils.ecf import prompts
from utils.ecf.config import TASKS, CauseFinetuneConfig, CauseInferenceConfig, FinetuneConfig, SeriesConfig
from utils.ecf.data import EMOTIONS, load_ecf, split_conversations, with_emotions, with_pairs
from utils.env import missing_artifact, resolve, resolve_artifact
from utils.io import read_json, write_json_atomic


TASK_FILE = "task.json"  # beside the adapter: what inference needs to rebuild the same prompts


def load_splits(cfg: SeriesConfig) -> dict[str, list[dict]]:
    """The deterministic split of DATA_PATH, with LIMIT (train, val) and TEST_LIMIT applied; with
    TEST_PATH, DATA_PATH is split into train and val only and the test conversations are that file's."""
    convs = load_ecf(resolve(cfg.DATA_PATH))
    splits = split_conversations(convs, 0.0 if cfg.TEST_PATH else cfg.TEST_FRAC, cfg.VAL_FRAC, cfg.SEED, cfg.SPLIT)
    if cfg.TEST_PATH:  # the official evaluation file, with or without its annotations
        splits["test"] = load_ecf(resolve(cfg.TEST_PATH), require_labels=False)
        shared = sorted({c["conversation_ID"] for c in convs} & {c["conversation_ID"] for c in splits["test"]})
        if shared:
            raise ValueError(f"TEST_PATH={cfg.TEST_PATH} shares conversation_ID(s) {shared[:5]} with "
                             f"DATA_PATH={cfg.DATA_PATH}: a test conversation would also be trained on")
    limits = {"train": cfg.LIMIT, "val": _smallest_limit(cfg.LIMIT, getattr(cfg, "VAL_LIMIT", 0)),
              "test": getattr(cfg, "TEST_LIMIT", 0)}
    return {name: convs[: limits[name]] if limits[name] else convs for name, convs in splits.items()}


def annotated(convs: list[dict]) -> bool:
    """Whether conversations carry gold labels to score against (every utterance has its emotion)."""
    return bool(convs) and all("emotion" in u for c in convs for u in c["conversation"])


def test_set(cfg: SeriesConfig, test: list[dict]) -> dict:
    """What the test side of this run is: which file or split, how big, and whether it can be scored."""
    source = cfg.TEST_PATH or f"{cfg.SPLIT} split of {cfg.DATA_PATH} (TEST_FRAC={cfg.TEST_FRAC})"
    return {"source": source, "conversations": len(test), "annotated": annotated(test),
            "spans": any(c.get("cause_spans") for c in test)}


def unscored(what: str, test: dict) -> dict:
    """The metrics record of a test file without annotations, and the line that says so."""
    print(f"[emocause] {test['source']} has no annotations: {what} written, nothing to score")
    return {"scored": False, "test_set": test}


def _smallest_limit(*limits: int) -> int:
    """The tightest of several limits where 0 means none."""
    positive = [x for x in limits if x > 0]
    return min(positive) if positive else 0


def task_dir(cfg: SeriesConfig, task: str) -> Path:
    """checkpoints/<task>/<style>: the training output folder (adapter in ./adapter)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {list(TASKS)}")
    return resolve_artifact(cfg.CHECKPOINT_DIR) / task / cfg.STYLE


def adapter_dir(cfg: SeriesConfig, task: str) -> Path:
    """Where notebook 02/04 saves the adapter that 03/05 loads (STYLE="fused": 02's, for both tasks)."""
    return task_dir(cfg, "emotion" if cfg.STYLE == "fused" else task) / "adapter"


def write_task(cfg: FinetuneConfig, task: str, extra: dict | None = None, folder: str | Path | None = None) -> Path:
    """Record beside the adapter (in ``folder``, default ``task_dir``) what inference must rebuild:
    style, model, lengths, window."""
    record = {"task": task, "style": cfg.STYLE, "model": cfg.model_of(task), "max_length": cfg.MAX_LENGTH,
              "labels": list(EMOTIONS) if task == "emotion" else list(prompts.ANSWERS)}
    if task == "cause":
        record.update(window_before=cfg.CAUSE_WINDOW_BEFORE, window_after=cfg.CAUSE_WINDOW_AFTER,
                      cause_emotions=cfg.CAUSE_EMOTIONS, cause_layout=cfg.CAUSE_LAYOUT)
    elif task == "emotion":
        record.update(emotion_format=cfg.EMOTION_FORMAT)
    record.update(extra or {})
    return write_json_atomic(Path(folder or task_dir(cfg, task)) / TASK_FILE, record)


def read_task(cfg: SeriesConfig, task: str) -> dict:
    """The task record of a trained adapter; checks it matches this notebook's STYLE and the model of ``task``'s
    stage (``model_of``: the config holds MODEL="auto" as the model it resolved to on this machine, as training
    recorded it)."""
    path = task_dir(cfg, task) / TASK_FILE
    if not path.is_file():
        number = "02" if task == "emotion" else "04"
        raise missing_artifact(path, f"run notebook {number} with STYLE={cfg.STYLE!r} first")
    record = read_json(path)
    if record["model"] != cfg.model_of(task):
        name = f"{task.upper()}_MODEL"
        raise ValueError(f"{path}: the adapter was trained on {record['model']!r}, this run's {task} stage has "
                         f"{cfg.model_of(task)!r}; give the notebooks of a series the same MODEL (or {name}; "
                         f"MODEL=\"auto\" picks by the hardware and the hub): set {name}={record['model']!r} to "
                         "load this adapter")
    return record


def rule_mismatch(emotion: dict, cause: dict) -> str | None:
    """Why the end-to-end rule in 04's task record ``cause`` does not fit the emotion adapter whose record is
    ``emotion``: 04 chose it for another emotion adapter (its offsets come from that one's val log-probs); None
    where it fits, or where the records do not say (written before 04 recorded it)."""
    e2e = cause.get("end_to_end") or {}
    chosen, current = e2e.get("emotion_fingerprint"), emotion.get("fingerprint")
    if not (chosen and current) or chosen == current:
        return None
    when = f", trained {emotion['trained_at'][:16].replace('T', ' ')} UTC" if emotion.get("trained_at") else ""
    return f"notebook 04 chose its end-to-end rule for the emotion adapter {chosen}, not this one ({current}{when})"


def gold_subset(gold: list[dict], convs: list[dict]) -> list[dict]:
    """The gold conversations with the ids of ``convs``, in ``convs``' order."""
    by_id = {c["conversation_ID"]: c for c in gold}
    missing = [c["conversation_ID"] for c in convs if c["conversation_ID"] not in by_id]
    if missing:
        raise ValueError(f"conversation_ID(s) {missing[:5]} are not in the gold split: were the predictions "
                         "made with the same DATA_PATH, SEED, TEST_FRAC and VAL_FRAC?")
    return [by_id[c["conversation_ID"]] for c in convs]


def with_predicted_emotions(gold: list[dict], labelled: list[dict]) -> list[dict]:
    """Gold conversations (pairs kept) carrying the predicted emotions of ``labelled``."""
    by_id = {c["conversation_ID"]: c for c in labelled}
    out = []
    for conv in gold:
        if conv["conversation_ID"] in by_id:
            out.append(with_emotions(conv, [u["emotion"] for u in by_id[conv["conversation_ID"]]["conversation"]]))
    return out


def cause_training_convs(cfg: CauseFinetuneConfig, train: list[dict]) -> list[dict]:
    """Training conversations for the cause model: gold emotions, or 03's predicted train emotions (STYLE="fused":
    02 trained the one adapter on gold emotions; these are what 04 shows)."""
    if cfg.CAUSE_EMOTIONS == "gold" or cfg.STYLE == "fused":
        return train
    path = resolve_artifact(cfg.TRAIN_DIR) / "emotion_labelled_data.json"
    if not path.is_file():
        raise missing_artifact(path, "run notebook 03 with LABEL_TRAIN=True first, or set CAUSE_EMOTIONS='gold'")
    convs = with_predicted_emotions(train, read_json(path))
    if not convs:
        raise ValueError(f"{path} shares no conversation with the train split: same DATA_PATH/SEED/fractions?")
    if not any(prompts.emotional_utterances(c) for c in convs):
        raise ValueError(f"{path}: the emotion model labelled every train utterance neutral, so there is no "
                         "emotional utterance to find causes for; train it longer or set CAUSE_EMOTIONS='gold'")
    return convs


def cause_inputs(cfg: CauseInferenceConfig, test: list[dict]) -> list[dict]:
    """Test conversations to find causes in: 03's predicted emotions or gold ones; no pairs."""
    path = resolve_artifact(cfg.TEST_DIR) / "emotion_labelled_data.json"
    if not path.is_file():
        raise missing_artifact(path, "run notebook 03 first")
    labelled = read_json(path)
    if cfg.CAUSE_EMOTIONS == "gold":
        if not annotated(test):
            raise ValueError("CAUSE_EMOTIONS='gold' needs gold emotions, but the test file has no annotations: "
                             "use CAUSE_EMOTIONS='predicted'")
        labelled = gold_subset(test, labelled)
    return [with_pairs(c, []) for c in labelled]


LOGPROBS_FILE = "emotion_logprobs.json"  # beside emotion_labelled_data.json (03), and the val split's in 02's task dir


def write_logprobs(path: str | Path, convs: list[dict], logprobs: list[list[list[float]]]) -> Path:
    """The emotion label log-probs each utterance's label was decided from, per conversation (EMOTIONS order):
    what the end-to-end rule (04, 05) decides again with its own offsets."""
    if len(convs) != len(logprobs):
        raise ValueError(f"{path}: {len(logprobs)} rows of log-probs for {len(convs)} conversations")
    return write_json_atomic(path, {"labels": list(EMOTIONS),
                                    "conversations": [{"conversation_ID": c["conversation_ID"], "logprobs": rows}
                                                      for c, rows in zip(convs, logprobs)]})


def read_logprobs(path: str | Path) -> dict | None:
    """conversation_ID -> per-utterance log-probs from ``write_logprobs``'s file; None where there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("labels") != list(EMOTIONS):
        raise ValueError(f"{path}: labels {record.get('labels')} are not {list(EMOTIONS)}")
    return {c["conversation_ID"]: c["logprobs"] for c in record["conversations"]}


def checkpoint_for(output: str | Path) -> Path:
    """The JSONL checkpoint of a resumable run, beside its output file."""
    output = Path(output)
    return output.with_name(f".{output.stem}.partial.jsonl")


def finish(output: str | Path, convs: list[dict]) -> Path:
    """Write the output atomically, then drop its checkpoint (a rerun starts from scratch)."""
    path = write_json_atomic(output, convs)
    checkpoint_for(output).unlink(missing_ok=True)
    return path
