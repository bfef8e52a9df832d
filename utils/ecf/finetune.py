"""Notebooks 02 and 04 (and ``utils.ecf.launch``): train an adapter, then choose its decision rule on val."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.ecf.artifacts import (LOGPROBS_FILE, TASK_FILE, adapter_dir, read_logprobs, task_dir, write_logprobs,
                                 write_task)
from utils.ecf.config import CauseFinetuneConfig, FinetuneConfig, TrainingNotebookConfig
from utils.ecf.data import strip_labels, with_pairs
from utils.ecf.decision import below_floor, choose_cutoffs, choose_end_to_end, tune_offsets
from utils.ecf import prompts, prompts_fused
from utils.ecf.examples import answer_words
from utils.ecf.predict import emotion_logprobs, predict_causes, predict_emotions
from utils.io import read_json, write_json_atomic
from utils.lm.modeling import label_token_ids, load_model, load_tokenizer
from utils.lm.training import TrainConfig, TrainResult, train


def answer_ids(cfg: TrainingNotebookConfig, task: str) -> tuple[int, ...]:
    """Token ids of ``answer_words`` under the tokenizer of ``task``'s model."""
    words = answer_words(cfg.STYLE, task)
    return tuple(label_token_ids(load_tokenizer(cfg.model_of(task)), words)) if words else ()


def answer_scales(cfg: TrainingNotebookConfig, task: str) -> tuple[float, ...]:
    """One loss factor per answer word of ``task``: NEUTRAL_WEIGHT for "neutral", 1 for the rest; () where every
    factor is 1 (the run's identity is then the one it had before NEUTRAL_WEIGHT)."""
    weight = getattr(cfg, "NEUTRAL_WEIGHT", 1.0)
    if weight == 1.0 or task != "emotion":
        return ()
    return tuple(weight if word == "neutral" else 1.0 for word in answer_words(cfg.STYLE, task))


def train_config(cfg: TrainingNotebookConfig, task: str, out: str | Path | None = None) -> TrainConfig:
    """training.TrainConfig for ``task`` from the notebook's parameters (output in ``out``, default ``task_dir``)."""
    ids = answer_ids(cfg, task)
    neutral = task == "emotion" and getattr(cfg, "NEUTRAL_WEIGHT", 1.0) != 1.0
    for name, on in (("CLASS_WEIGHTING", cfg.CLASS_WEIGHTING != "none"), ("NEUTRAL_WEIGHT", neutral)):
        if on and not ids:
            raise ValueError(f"{name}={getattr(cfg, name)!r} needs STYLE='conversation' (the answers-only loss); "
                             f"STYLE={cfg.STYLE!r} trains on generated text")
    return cfg.train_config(str(out or task_dir(cfg, task)), answer_ids=ids,
                            answer_weighting=cfg.CLASS_WEIGHTING if ids else "none",
                            answer_scales=answer_scales(cfg, task))


def finetune(cfg: TrainingNotebookConfig, task: str, train_examples: list[dict], val_examples: list[dict] | None,
             extra: dict | None = None, *, out: str | Path | None = None, strategy: Any = None,
             callbacks: Sequence[Any] = (), main_process: bool = True) -> TrainResult:
    """LoRA-train MODEL on the examples (resuming when RESUME), then record the task beside the adapter
    (``main_process`` only: under a launcher the other ranks train and leave the files to rank 0). The cause task
    of STYLE="fused" trains nothing: ``fused_cause_run``."""
    folder = Path(out or task_dir(cfg, task))
    if not trains(cfg, task):
        return fused_cause_run(cfg, folder if main_process else None)
    result = train(cfg.model_of(task), train_examples, val_examples or None, train_config(cfg, task, folder),
                   strategy=strategy, callbacks=list(callbacks))
    if main_process:
        write_task(cfg, task, {"fingerprint": result.fingerprint, "train_tokens": result.train_tokens,
                               "train_wall_s": result.wall_s,
                               "global_step": result.global_step, **provenance(cfg), **(extra or {})}, folder)
    return result


PROVENANCE = ("data_path", "limit", "smoke", "trained_at")  # what the tools that use an adapter say it saw


def provenance(cfg: TrainingNotebookConfig) -> dict:
    """What the adapter was trained on and when, for the task record (``utils.ecf.trained.provenance`` reads it)."""
    from datetime import datetime, timezone

    return {"data_path": cfg.DATA_PATH, "limit": cfg.LIMIT, "smoke": cfg.SMOKE,
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _record(folder: Path, **fields: Any) -> None:
    """Add ``fields`` to the task record in ``folder``."""
    write_json_atomic(folder / TASK_FILE, {**read_json(folder / TASK_FILE), **fields})


def too_small(cfg: TrainingNotebookConfig, val: list[dict], what: str, instead: str) -> str | None:
    """Why ``what`` is not chosen on ``val`` (``decision.below_floor``), said in a line with what is used
    ``instead``; None to choose it. SMOKE chooses it anyway, so that the tests run the code, and says so."""
    why = below_floor(val, what)
    if why and cfg.SMOKE:
        print(f"[emocause] SMOKE: {what} chosen anyway ({why}) so that the code runs; not a rule to trust")
        return None
    if why:
        print(f"[emocause] no {what} chosen: {why}; {instead}")
    return why


def tune_threshold(model: Any, tokenizer: Any, gold: list[dict], max_length: int, before: int, after: int,
                   batch_size: int = 8, per_distance: bool = True, layout: str = prompts.CAUSE_LAYOUT,
                   style: str = "conversation") -> dict:
    """``choose_cutoffs`` on the model's P(yes) for ``gold`` (val conversations, gold emotions)."""
    found = predict_causes(model, tokenizer, [with_pairs(c, []) for c in gold], style, batch_size,
                           None, max_length, 0.5, before, after, layout=layout)
    return choose_cutoffs(gold, found.probs, per_distance)


def tune_cause_threshold(cfg: CauseFinetuneConfig, tokenizer: Any, val: list[dict], batch_size: int = 8,
                         out: str | Path | None = None) -> dict | None:
    """Choose the cut-off(s) on the val split with the new adapter (gold emotions: the stage-wise rule) and,
    where notebook 02 saved its val log-probs, the end-to-end rule (``tune_end_to_end``); both are recorded in
    task.json (conversation style only: the original recipe generates its answers, it has no cut-off)."""
    if cfg.STYLE == "per_utterance" or not val:
        return None
    folder = Path(out or task_dir(cfg, "cause"))
    why = too_small(cfg, val, "cut-offs", "05 and analyse use the 0.5 cut-off and the stage-wise rule")
    if why:
        _record(folder, threshold_tuning={"skipped": why}, end_to_end_tuning={"skipped": why})
        return None
    adapter = adapter_dir(cfg, "cause") if cfg.STYLE == "fused" else folder / "adapter"
    model = load_model(cfg.model_of("cause"), adapter=adapter)
    tuning = tune_threshold(model, tokenizer, val, cfg.MAX_LENGTH, *windows(cfg), batch_size,
                            per_distance=cfg.CAUSE_CUTOFFS == "per_distance", layout=cfg.CAUSE_LAYOUT, style=cfg.STYLE)
    _record(folder, threshold=tuning["threshold"], threshold_tuning=tuning)
    tuning["end_to_end"] = tune_end_to_end(cfg, model, tokenizer, val, tuning["threshold"], batch_size, folder)
    return tuning


def emotion_val_record(cfg: TrainingNotebookConfig, val: list[dict]) -> tuple[dict | None, str]:
    """(02's task record with its val log-probs under "val_logprobs", "") where 02 saved them for these val
    conversations with this MODEL, else (None, why not)."""
    folder = task_dir(cfg, "emotion")
    path = folder / LOGPROBS_FILE
    logprobs = read_logprobs(path)
    if logprobs is None:
        return None, f"no {path}: run notebook 02 (conversation style) first"
    task = read_json(folder / TASK_FILE)
    if task.get("model") != cfg.model_of("emotion"):
        return None, f"{path} is from {task.get('model')!r}, this run's emotion stage has {cfg.model_of('emotion')!r}"
    missing = [c["conversation_ID"] for c in val if c["conversation_ID"] not in logprobs]
    if missing:
        return None, (f"{path} has no log-probs for val conversation(s) {missing[:5]}: notebook 02 ran with another "
                      "DATA_PATH, SEED, VAL_FRAC or LIMIT")
    return {**task, "val_logprobs": logprobs}, ""


def tune_end_to_end(cfg: CauseFinetuneConfig, model: Any, tokenizer: Any, val: list[dict],
                    stage_cutoffs: float | dict[str, float], batch_size: int = 8,
                    out: str | Path | None = None) -> dict | None:
    """The end-to-end rule (``decision.choose_end_to_end``) on the val split: 02's val log-probs and offsets,
    this cause adapter's P(yes) on the emotions each neutral shift gives; recorded in task.json as
    "end_to_end". None (with the reason printed) where 02's val log-probs are missing or do not match."""
    floor = too_small(cfg, val, "the end-to-end rule", "notebook 05 uses the stage-wise rule")
    if floor:
        _record(Path(out or task_dir(cfg, "cause")), end_to_end_tuning={"skipped": floor})
        return None
    emotion_task, why = emotion_val_record(cfg, val)
    if emotion_task is None:
        print(f"[emocause] no end-to-end rule: {why}; notebook 05 uses the stage-wise rule")
        return None

    def cause_probs(labelled: list[dict]) -> list[list]:
        return predict_causes(model, tokenizer, labelled, "conversation", batch_size, None, cfg.MAX_LENGTH, 0.5,
                              cfg.CAUSE_WINDOW_BEFORE, cfg.CAUSE_WINDOW_AFTER, layout=cfg.CAUSE_LAYOUT).probs

    def one_read(offsets: dict[str, float]) -> tuple[list[dict], list[list]]:  # fused: the emotions its read decides
        found = predict_causes(model, tokenizer, strip_labels(val), "fused", batch_size, None, cfg.MAX_LENGTH, 0.5,
                               decide_offsets=offsets)
        return found.convs, found.probs

    rule = choose_end_to_end(val, emotion_task["val_logprobs"], emotion_task.get("offsets"), cause_probs,
                             per_distance=cfg.CAUSE_CUTOFFS == "per_distance", stage_cutoffs=stage_cutoffs,
                             read=one_read if cfg.STYLE == "fused" else None)
    rule["emotion_fingerprint"] = emotion_task.get("fingerprint")  # the emotion adapter this rule was chosen for
    _record(Path(out or task_dir(cfg, "cause")), end_to_end=rule)
    return rule


def windows(cfg: CauseFinetuneConfig) -> tuple[int, int]:
    """The candidate window (before, after) of the cause reads: CAUSE_WINDOW_* or, fused, the one read's (up to
    five before, none after: ``prompts_fused.fused_candidates``)."""
    if cfg.STYLE == "fused":
        return prompts.WINDOW_BEFORE, 0
    return cfg.CAUSE_WINDOW_BEFORE, cfg.CAUSE_WINDOW_AFTER


def trains(cfg: TrainingNotebookConfig, task: str) -> bool:
    """Whether ``task`` trains an adapter of its own: not the cause task of STYLE="fused" (02's adapter reads the
    causes in the same pass as the emotions)."""
    return not (cfg.STYLE == "fused" and task == "cause")


def fused_cause_run(cfg: CauseFinetuneConfig, out: str | Path | None) -> TrainResult:
    """STYLE="fused", notebook 04: nothing to train, 02's adapter reads the causes in the same pass as the emotions.
    Says so, records the cause task in ``out`` (None: not this process's to write) beside 02's adapter for 05 (the
    adapter, its training counts, the one read's window), and returns 02's run (its loss curve is the one adapter's);
    raises naming 02 when 02 has not trained the fused adapter."""
    from utils.ecf.artifacts import read_task
    from utils.env import missing_artifact

    emotion = read_task(cfg, "emotion")
    summary = task_dir(cfg, "emotion") / "train_summary.json"
    if not summary.is_file():
        raise missing_artifact(summary, "run notebook 02 with STYLE='fused' first: it trains the one adapter")
    print("STYLE='fused': notebook 02 trained one adapter that reads each utterance's emotion and its causes in the "
          "same pass, so there is nothing to train here; the run shown is 02's. This notebook chooses the cut-offs "
          "and the end-to-end rule on val with that adapter.")
    if out is not None:
        before, after = windows(cfg)
        record = {key: emotion[key] for key in ("fingerprint", "train_tokens", "train_wall_s", "global_step",
                                                "train_conversations", *PROVENANCE) if key in emotion}
        write_task(cfg, "cause", {**record, "trained_by": "02 (STYLE='fused': one adapter for both stages)",
                                  "adapter": str(adapter_dir(cfg, "cause")), "window_before": before,
                                  "window_after": after, "cause_layout": "fused", "cause_emotions": "gold"}, out)
    return TrainResult(**read_json(summary))


def tune_emotion_offsets(cfg: FinetuneConfig, tokenizer: Any, val: list[dict], batch_size: int = 8,
                         out: str | Path | None = None) -> dict | None:
    """Choose per-emotion log-prob offsets on the val split with the new adapter (weighted F1, the
    headline metric) and record them in task.json (conversation style only: the recipe generates)."""
    if cfg.STYLE not in ("conversation", "fused") or not val:
        return None
    folder = Path(out or task_dir(cfg, "emotion"))
    why = too_small(cfg, val, "offsets", "03 and analyse decide by the plain argmax")
    if why:
        _record(folder, offset_tuning={"skipped": why})
        return None
    model = load_model(cfg.model_of("emotion"), adapter=folder / "adapter")
    if cfg.STYLE == "fused":  # the one read with no offsets: each marker sees the emotions the model chose before it
        rows = predict_emotions(model, tokenizer, strip_labels(val), "fused", batch_size, max_length=cfg.MAX_LENGTH).logprobs
    else:
        rows = emotion_logprobs(model, tokenizer, strip_labels(val), cfg.MAX_LENGTH, batch_size, fmt=cfg.EMOTION_FORMAT)
    write_logprobs(folder / LOGPROBS_FILE, val, rows)  # what 04 chooses the end-to-end rule from
    tuning = tune_offsets(np.array([r for conv in rows for r in conv]),
                          [u["emotion"] for conv in val for u in conv["conversation"]])
    tuning["conversations"] = len(val)
    _record(folder, offsets=tuning["offsets"], offset_tuning=tuning)
    return tuning


def tune_rule(cfg: TrainingNotebookConfig, task: str, tokenizer: Any, val: list[dict], batch_size: int = 8,
              out: str | Path | None = None) -> dict | None:
    """The decision rule notebook 02 (offsets) or 04 (cut-offs) chooses on val after training."""
    tune = tune_emotion_offsets if task == "emotion" else tune_cause_threshold
    return tune(cfg, tokenizer, val, batch_size, out)
