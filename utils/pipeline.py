"""Pipeline: the steps of notebooks 02-06 (fine-tune, predict, write, score) for both prompt styles.

The notebooks hold the story; each step here is a function the tests reach. Prompt rendering
lives in ``utils.prompts``; model loading, training and batched scoring in ``utils.modeling``,
``utils.training`` and ``utils.inference``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import prompts
from .data import EMOTIONS, SPLITS, emotion_pairs, load_ecf, split_conversations, strip_labels, with_emotions, with_pairs
from .decision import cutoff_for, decide, offsets_vector, tune_cutoffs, tune_offsets
from .env import resolve
from .io import read_json, write_json_atomic
from .scoring import score_subtask2

TASKS = ("emotion", "cause")
CAUSE_EMOTION_SOURCES = ("gold", "predicted")
CUTOFF_RULES = ("one", "per_distance")
TASK_FILE = "task.json"  # beside the adapter: what inference needs to rebuild the same prompts
SMOKE_LIMIT, SMOKE_TEST_LIMIT, SMOKE_STEPS = 8, 4, 8


# ---------------------------------------------------------------- configs (one per notebook)

@dataclass(frozen=True)
class SeriesConfig:
    """Parameters every notebook of the series shares."""

    DATA_PATH: str = "data/ecf_sample.json"
    TRAIN_DIR: str = "results_train"
    TEST_DIR: str = "results_test"
    CHECKPOINT_DIR: str = "checkpoints"
    MODEL: str = "smollm2"
    STYLE: str = "conversation"
    SEED: int = 42
    TEST_FRAC: float = 0.1
    VAL_FRAC: float = 0.1
    SPLIT: str = "block"  # "block": test = the last conversations by id, val the block before; "random"
    TEST_PATH: str = ""  # a separate test file (the official evaluation set): DATA_PATH then gives train and val
    LIMIT: int = 0  # first LIMIT train (and val) conversations; 0 = all
    SMOKE: bool = False

    def __post_init__(self) -> None:
        prompts.check_style(self.STYLE)
        if self.SPLIT not in SPLITS:
            raise ValueError(f"SPLIT={self.SPLIT!r}: use one of {list(SPLITS)}")
        if self.LIMIT < 0:
            raise ValueError(f"LIMIT={self.LIMIT}: use 0 for all conversations or a positive count")


@dataclass(frozen=True)
class LoggedConfig(SeriesConfig):
    """A notebook that records its run in the experiment log (utils.tracking)."""

    TRACKING_DB: str = ""  # "" = $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite

    def tracking_db(self) -> Path:
        """The experiment log this run writes to (the same rule notebook 10 reads with)."""
        from .tracking import db_path

        return db_path(self.TRACKING_DB or None, self.TRAIN_DIR)


@dataclass(frozen=True)
class FinetuneConfig(LoggedConfig):
    """Notebook 02 (emotions); 04 adds the cause fields."""

    VAL_LIMIT: int = 0  # val conversations for the eval loss; 0 = all (LIMIT caps them too)
    EPOCHS: float = 1.0
    MAX_STEPS: int = 0  # > 0: stop after this many optimizer steps (overrides EPOCHS)
    LEARNING_RATE: float = 1e-3
    BATCH_SIZE: int = 4
    GRAD_ACCUM: int = 1
    MAX_LENGTH: int = 1024
    LORA_R: int = 16
    LORA_ALPHA: int = 32
    LORA_DROPOUT: float = 0.05
    LORA_TARGETS: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # attention and MLP: measured in bench/RESULTS.md section 5
    REPORT_TO: str = "none"
    MERGE: bool = False
    RESUME: bool = True
    GRADIENT_CHECKPOINTING: bool = False
    EVAL_STEPS: int = 0  # 0: evaluate at the end of each epoch only
    SAVE_STEPS: int = 50
    LOGGING_STEPS: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        from .training import check_schedule

        check_schedule(self.REPORT_TO, self.EPOCHS, self.MAX_STEPS)


@dataclass(frozen=True)
class CauseFinetuneConfig(FinetuneConfig):
    """Notebook 04."""

    CAUSE_EMOTIONS: str = "predicted"
    CAUSE_WINDOW_BEFORE: int = prompts.WINDOW_BEFORE
    CAUSE_WINDOW_AFTER: int = prompts.WINDOW_AFTER
    CAUSE_CUTOFFS: str = "per_distance"  # P(yes) cut-offs chosen on val: "one", or "per_distance" (0, -1, -2, other)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        if self.CAUSE_CUTOFFS not in CUTOFF_RULES:
            raise ValueError(f"CAUSE_CUTOFFS={self.CAUSE_CUTOFFS!r}: use one of {list(CUTOFF_RULES)}")


@dataclass(frozen=True)
class EmotionInferenceConfig(LoggedConfig):
    """Notebook 03."""

    TEST_LIMIT: int = 0  # first TEST_LIMIT test conversations; 0 = all
    LABEL_TRAIN: bool = True  # also label the train split (04 with CAUSE_EMOTIONS="predicted" reads it)
    USE_VAL_OFFSETS: bool = True  # add the per-emotion offsets 02 chose on val (when recorded) before the argmax
    BATCH_SIZE: int = 8
    MAX_NEW_TOKENS: int = 16  # per_utterance generation only


@dataclass(frozen=True)
class CauseInferenceConfig(LoggedConfig):
    """Notebook 05."""

    CAUSE_EMOTIONS: str = "predicted"
    CAUSE_THRESHOLD: float = 0.5
    USE_VAL_THRESHOLD: bool = True  # the cut-off 04 chose on val wins over CAUSE_THRESHOLD when recorded
    BATCH_SIZE: int = 8
    MAX_NEW_TOKENS: int = 48

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        if not 0.0 < self.CAUSE_THRESHOLD < 1.0:
            raise ValueError(f"CAUSE_THRESHOLD={self.CAUSE_THRESHOLD}: use a probability in (0, 1)")


@dataclass(frozen=True)
class EvaluationConfig(SeriesConfig):
    """Notebook 06."""

    ERROR_ROWS: int = 20  # error-table rows shown inline (the CSV has them all)


def check_emotion_source(source: str) -> str:
    """Return ``source`` or raise naming the valid ones."""
    if source not in CAUSE_EMOTION_SOURCES:
        raise ValueError(f"CAUSE_EMOTIONS={source!r}: use one of {list(CAUSE_EMOTION_SOURCES)}")
    return source


def apply_smoke(cfg: Any) -> Any:
    """SMOKE: few conversations and few steps, whatever the other parameters say."""
    if not cfg.SMOKE:
        return cfg
    changes: dict[str, Any] = {"LIMIT": min(cfg.LIMIT or SMOKE_LIMIT, SMOKE_LIMIT)}
    if hasattr(cfg, "MAX_STEPS"):
        changes["MAX_STEPS"] = min(cfg.MAX_STEPS or SMOKE_STEPS, SMOKE_STEPS)
        changes["VAL_LIMIT"] = min(cfg.VAL_LIMIT or 2, 2)
    if hasattr(cfg, "TEST_LIMIT"):
        changes["TEST_LIMIT"] = min(cfg.TEST_LIMIT or SMOKE_TEST_LIMIT, SMOKE_TEST_LIMIT)
    return dataclasses.replace(cfg, **changes)


# ---------------------------------------------------------------- data and paths

def load_splits(cfg: SeriesConfig) -> dict[str, list[dict]]:
    """The deterministic split of DATA_PATH, with LIMIT (train, val) and TEST_LIMIT applied; with
    TEST_PATH, DATA_PATH is split into train and val only and the test conversations are that file's."""
    convs = load_ecf(resolve(cfg.DATA_PATH))
    splits = split_conversations(convs, 0.0 if cfg.TEST_PATH else cfg.TEST_FRAC, cfg.VAL_FRAC, cfg.SEED, cfg.SPLIT)
    if cfg.TEST_PATH:
        splits["test"] = load_ecf(resolve(cfg.TEST_PATH))
        shared = sorted({c["conversation_ID"] for c in convs} & {c["conversation_ID"] for c in splits["test"]})
        if shared:
            raise ValueError(f"TEST_PATH={cfg.TEST_PATH} shares conversation_ID(s) {shared[:5]} with "
                             f"DATA_PATH={cfg.DATA_PATH}: a test conversation would also be trained on")
    limits = {"train": cfg.LIMIT, "val": _smallest_limit(cfg.LIMIT, getattr(cfg, "VAL_LIMIT", 0)),
              "test": getattr(cfg, "TEST_LIMIT", 0)}
    return {name: convs[: limits[name]] if limits[name] else convs for name, convs in splits.items()}


def _smallest_limit(*limits: int) -> int:
    """The tightest of several limits where 0 means none."""
    positive = [x for x in limits if x > 0]
    return min(positive) if positive else 0


def task_dir(cfg: SeriesConfig, task: str) -> Path:
    """checkpoints/<task>/<style>: the training output folder (adapter in ./adapter)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {list(TASKS)}")
    return resolve(cfg.CHECKPOINT_DIR) / task / cfg.STYLE


def adapter_dir(cfg: SeriesConfig, task: str) -> Path:
    """Where notebook 02/04 saves the adapter that 03/05 loads."""
    return task_dir(cfg, task) / "adapter"


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
    """Training conversations for the cause model: gold emotions, or 03's predicted train emotions."""
    if cfg.CAUSE_EMOTIONS == "gold":
        return train
    path = resolve(cfg.TRAIN_DIR) / "emotion_labelled_data.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 03 first, or set CAUSE_EMOTIONS='gold'")
    convs = with_predicted_emotions(train, read_json(path))
    if not convs:
        raise ValueError(f"{path} shares no conversation with the train split: same DATA_PATH/SEED/fractions?")
    if not any(prompts.emotional_utterances(c) for c in convs):
        raise ValueError(f"{path}: the emotion model labelled every train utterance neutral, so there is no "
                         "emotional utterance to find causes for; train it longer or set CAUSE_EMOTIONS='gold'")
    return convs


def cause_inputs(cfg: CauseInferenceConfig, test: list[dict]) -> list[dict]:
    """Test conversations to find causes in: 03's predicted emotions or gold ones; no pairs."""
    path = resolve(cfg.TEST_DIR) / "emotion_labelled_data.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebook 03 first")
    labelled = read_json(path)
    if cfg.CAUSE_EMOTIONS == "gold":
        labelled = gold_subset(test, labelled)
    return [with_pairs(c, []) for c in labelled]


# ---------------------------------------------------------------- training examples

def emotion_examples(convs: Sequence[dict], tokenizer: Any, style: str, max_length: int) -> list[dict]:
    """Pre-tokenized {"input_ids", "labels"} examples for the emotion model."""
    from .modeling import label_token_ids

    if prompts.check_style(style) == "conversation":
        label_ids = label_token_ids(tokenizer, EMOTIONS)
        return [prompts.training_labels(q, prompts.emotion_answers(conv, q, label_ids))
                for conv in convs for q in prompts.emotion_queries(conv, tokenizer, max_length)]
    from .training import tokenize_prompt_completion

    return [tokenize_prompt_completion(tokenizer, prompts.completion_prompt(tokenizer, user),
                                       prompts.per_utterance_emotion_answer(i, conv["conversation"][i - 1]["emotion"]),
                                       max_length, loss_on="all")  # the original recipe: loss on every token
            for conv in convs for i, user in prompts.per_utterance_emotion_prompts(conv)]


def cause_examples(convs: Sequence[dict], tokenizer: Any, style: str, max_length: int,
                   before: int = prompts.WINDOW_BEFORE, after: int = prompts.WINDOW_AFTER) -> list[dict]:
    """Pre-tokenized examples for the cause model (emotions as the conversations carry them)."""
    from .modeling import label_token_ids

    if prompts.check_style(style) == "conversation":
        yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
        return [prompts.training_labels(q, prompts.cause_answers(conv, q, yes_no))
                for conv in convs for q in prompts.cause_queries(conv, tokenizer, max_length, before, after)]
    from .training import tokenize_prompt_completion

    return [tokenize_prompt_completion(tokenizer, prompts.completion_prompt(tokenizer, user),
                                       prompts.per_utterance_cause_answer(i, prompts.gold_causes(conv, i)),
                                       max_length, loss_on="all")
            for conv in convs for i, _, user in prompts.per_utterance_cause_prompts(conv)]


def example_stats(examples: Sequence[dict]) -> dict[str, int]:
    """How many sequences, tokens and answer (loss) tokens a training set has."""
    return {"examples": len(examples),
            "tokens": sum(len(e["input_ids"]) for e in examples),
            "answer_tokens": sum(sum(1 for x in e["labels"] if x != prompts.IGNORE) for e in examples)}


def preview(tokenizer: Any, example: dict, limit: int = 1500) -> str:
    """An example as text with each answer token shown in [brackets] where it is scored."""
    pieces = []
    for t, (tok, lab) in enumerate(zip(example["input_ids"], example["labels"])):
        if lab != prompts.IGNORE and lab != tok:
            pieces.append(f"[{tokenizer.decode([lab])}]")
        pieces.append(tokenizer.decode([tok]))
    text = "".join(pieces)
    return text if len(text) <= limit else text[:limit] + " ..."


# ---------------------------------------------------------------- training

def lora_settings(cfg: FinetuneConfig) -> Any:
    """LoRA hyper-parameters from the notebook's parameters."""
    from .modeling import LoraSettings

    targets = tuple(t.strip() for t in cfg.LORA_TARGETS.split(",") if t.strip())
    return LoraSettings(r=cfg.LORA_R, alpha=cfg.LORA_ALPHA, dropout=cfg.LORA_DROPOUT, target_modules=targets)


def answer_words(style: str, task: str) -> tuple[str, ...]:
    """The conversation style's answer vocabulary (the seven label words, or yes/no): its loss is a
    softmax over these only, exactly what inference reads; () for per_utterance (the recipe's LM loss)."""
    if prompts.check_style(style) != "conversation":
        return ()
    return tuple(EMOTIONS) if task == "emotion" else prompts.ANSWERS


def answer_ids(cfg: FinetuneConfig, task: str) -> tuple[int, ...]:
    """Token ids of ``answer_words`` under MODEL's tokenizer."""
    from .modeling import label_token_ids, load_tokenizer

    words = answer_words(cfg.STYLE, task)
    return tuple(label_token_ids(load_tokenizer(cfg.MODEL), words)) if words else ()


def train_config(cfg: FinetuneConfig, task: str) -> Any:
    """training.TrainConfig for ``task`` from the notebook's parameters."""
    from .training import TrainConfig

    return TrainConfig(
        output_dir=str(task_dir(cfg, task)), epochs=cfg.EPOCHS, max_steps=cfg.MAX_STEPS if cfg.MAX_STEPS > 0 else -1,
        learning_rate=cfg.LEARNING_RATE, batch_size=cfg.BATCH_SIZE, grad_accum=cfg.GRAD_ACCUM,
        max_length=cfg.MAX_LENGTH, seed=cfg.SEED, eval_steps=cfg.EVAL_STEPS or None, save_steps=cfg.SAVE_STEPS,
        logging_steps=cfg.LOGGING_STEPS, report_to=cfg.REPORT_TO, lora=lora_settings(cfg), merge=cfg.MERGE,
        resume=cfg.RESUME, gradient_checkpointing=cfg.GRADIENT_CHECKPOINTING, answer_ids=answer_ids(cfg, task),
    )


def write_task(cfg: FinetuneConfig, task: str, extra: dict | None = None) -> Path:
    """Record beside the adapter what inference must rebuild: style, model, lengths, window."""
    record = {"task": task, "style": cfg.STYLE, "model": cfg.MODEL, "max_length": cfg.MAX_LENGTH,
              "labels": list(EMOTIONS) if task == "emotion" else list(prompts.ANSWERS)}
    if task == "cause":
        record.update(window_before=cfg.CAUSE_WINDOW_BEFORE, window_after=cfg.CAUSE_WINDOW_AFTER,
                      cause_emotions=cfg.CAUSE_EMOTIONS)
    record.update(extra or {})
    return write_json_atomic(task_dir(cfg, task) / TASK_FILE, record)


def finetune(cfg: FinetuneConfig, task: str, train_examples: list[dict], val_examples: list[dict] | None,
             extra: dict | None = None) -> Any:
    """LoRA-train MODEL on the examples (resuming when RESUME), then record the task beside the adapter."""
    from .training import train

    result = train(cfg.MODEL, train_examples, val_examples or None, train_config(cfg, task))
    write_task(cfg, task, {"train_tokens": result.train_tokens, "train_wall_s": result.wall_s,
                           "global_step": result.global_step, **(extra or {})})
    return result


def plot_losses(history: list[dict], path: str | Path, title: str, show: bool = True) -> Path:
    """Training (and eval) loss against the optimizer step, saved as a PNG."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("loss", "-o"), ("eval_loss", "--s")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=3)
    ax.set(title=title, xlabel="optimizer step", ylabel="loss (answer tokens)")
    ax.legend()
    return save_figure(fig, path, show)


def read_task(cfg: SeriesConfig, task: str) -> dict:
    """The task record of a trained adapter; checks it matches this notebook's STYLE and MODEL."""
    path = task_dir(cfg, task) / TASK_FILE
    if not path.is_file():
        number = "02" if task == "emotion" else "04"
        raise FileNotFoundError(f"{path} is missing: run notebook {number} with STYLE={cfg.STYLE!r} first")
    record = read_json(path)
    if record["model"] != cfg.MODEL:
        raise ValueError(f"{path}: the adapter was trained on MODEL={record['model']!r}, this run has "
                         f"MODEL={cfg.MODEL!r}; use the same MODEL in every notebook")
    return record


# ---------------------------------------------------------------- inference

def _resumable(convs: list[dict], fn: Callable[[list[dict]], list[dict]], checkpoint_path: str | Path | None,
               batch_size: int, desc: str) -> list[dict]:
    """fn over conversations in batches, checkpointed per conversation when a path is given."""
    from .inference import resumable_map

    if checkpoint_path is None:
        return [r for k in range(0, len(convs), batch_size) for r in fn(convs[k:k + batch_size])]
    return resumable_map(convs, key=lambda c: str(c["conversation_ID"]), fn=fn,
                         checkpoint_path=checkpoint_path, batch_size=batch_size, desc=desc)


def _stats(convs: list[dict], results: list[dict], wall_s: float) -> dict[str, Any]:
    """Throughput and validity of one inference run (wall_s: this call only, a resumed run is faster)."""
    n_utt = sum(len(c["conversation"]) for c in convs)
    n_out = sum(r["n_outputs"] for r in results)
    invalid = sum(r["invalid"] for r in results)
    return {"conversations": len(convs), "utterances": n_utt, "wall_s": round(wall_s, 3),
            "utterances_per_s": round(n_utt / wall_s, 3) if wall_s > 0 else None,
            "n_prompts": sum(r["n_prompts"] for r in results),
            "prompt_tokens": sum(r["prompt_tokens"] for r in results),
            "n_outputs": n_out, "invalid_outputs": invalid,
            "invalid_output_share": invalid / n_out if n_out else 0.0}


def _emotion_rows(model: Any, tokenizer: Any, batch: list[dict], max_length: int,
                  batch_size: int) -> tuple[list[list[list[float]]], list[tuple[int, int]]]:
    """Per conversation of ``batch``: the seven label log-probs of each utterance (utterance order),
    and (sequences, prompt tokens) read for it."""
    from .inference import label_logprobs
    from .modeling import label_token_ids

    label_ids = label_token_ids(tokenizer, EMOTIONS)
    queries = [prompts.emotion_queries(conv, tokenizer, max_length) for conv in batch]
    flat = [q for qs in queries for q in qs]
    scores = iter(label_logprobs(model, [q.input_ids for q in flat], [q.positions for q in flat],
                                 label_ids, batch_size))
    rows, cost = [], []
    for conv, qs in zip(batch, queries):
        by_id = {}
        for q in qs:
            for key, row in zip(q.keys, next(scores)):
                by_id[key] = [round(float(x), 4) for x in row]
        rows.append([by_id[u["utterance_ID"]] for u in conv["conversation"]])
        cost.append((len(qs), sum(len(q.input_ids) for q in qs)))
    return rows, cost


def emotion_logprobs(model: Any, tokenizer: Any, convs: list[dict], max_length: int = 1024,
                     batch_size: int = 8) -> list[list[list[float]]]:
    """Per conversation, per utterance: the log-probs of the seven labels (EMOTIONS order)."""
    out = []
    for k in range(0, len(convs), batch_size):
        out += _emotion_rows(model, tokenizer, convs[k:k + batch_size], max_length, batch_size)[0]
    return out


def _emotions_by_scoring(model: Any, tokenizer: Any, max_length: int, batch_size: int,
                         offsets: dict[str, float] | None = None):
    """fn(conversations) -> one record each: every utterance labelled in one pass (conversation style),
    the best of the seven labels after the val-chosen ``offsets`` (always a valid label)."""
    vec = offsets_vector(offsets)

    def fn(batch: list[dict]) -> list[dict]:
        rows, cost = _emotion_rows(model, tokenizer, batch, max_length, batch_size)
        return [{"emotions": decide(np.array(r), vec), "logprobs": r, "invalid": 0, "n_outputs": len(r),
                 "n_prompts": n, "prompt_tokens": t} for r, (n, t) in zip(rows, cost)]
    return fn


def _emotions_by_generation(model: Any, tokenizer: Any, max_length: int, max_new_tokens: int, batch_size: int):
    """fn(conversations) -> one record each: one generated answer per utterance (per_utterance style)."""
    from .inference import generate

    def fn(batch: list[dict]) -> list[dict]:
        items = [(conv, i, prompts.generation_ids(tokenizer, user, max_length - max_new_tokens))
                 for conv in batch for i, user in prompts.per_utterance_emotion_prompts(conv)]
        texts = iter(generate(model, tokenizer, [ids for _, _, ids in items], max_new_tokens, batch_size))
        out = []
        for conv in batch:
            labels, invalid, raw = [], 0, []
            for utt in conv["conversation"]:
                text = next(texts)
                label = prompts.parse_emotion_answer(text, utt["utterance_ID"])
                invalid += label is None
                labels.append(label or "neutral")  # the recipe's fallback, counted as invalid above
                raw.append(text)
            tokens = sum(len(ids) for c, _, ids in items if c is conv)
            out.append({"emotions": labels, "invalid": invalid, "n_outputs": len(labels), "raw": raw,
                        "n_prompts": len(labels), "prompt_tokens": tokens})
        return out
    return fn


def predict_emotions(model: Any, tokenizer: Any, convs: list[dict], style: str, batch_size: int = 8,
                     checkpoint_path: str | Path | None = None, max_length: int = 1024,
                     max_new_tokens: int = 16, offsets: dict[str, float] | None = None) -> tuple[list[dict], dict]:
    """Label every utterance of ``convs``; returns (labelled conversations, stats). ``offsets``: the
    per-emotion log-prob offsets chosen on val (conversation style; None: the plain argmax)."""
    if prompts.check_style(style) == "conversation":
        fn = _emotions_by_scoring(model, tokenizer, max_length, batch_size, offsets)
    else:
        fn = _emotions_by_generation(model, tokenizer, max_length, max_new_tokens, batch_size)
    start = time.perf_counter()
    results = _resumable(convs, fn, checkpoint_path, batch_size, desc="emotions")
    stats = _stats(convs, results, time.perf_counter() - start)
    labelled = [with_pairs(with_emotions(conv, r["emotions"]), []) for conv, r in zip(convs, results)]
    return labelled, {"style": style, **stats}


def _causes_by_scoring(model: Any, tokenizer: Any, max_length: int, batch_size: int, before: int, after: int):
    """fn(conversations) -> P(yes) / (P(yes) + P(no)) of every (emotion utterance, candidate) query."""
    import math

    from .inference import label_logprobs
    from .modeling import label_token_ids

    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)

    def fn(batch: list[dict]) -> list[dict]:
        queries = [prompts.cause_queries(conv, tokenizer, max_length, before, after) for conv in batch]
        flat = [q for qs in queries for q in qs]
        scores = iter(label_logprobs(model, [q.input_ids for q in flat], [q.positions for q in flat],
                                     yes_no, batch_size) if flat else [])
        out = []
        for qs in queries:
            probs = [[i, j, round(1.0 / (1.0 + math.exp(float(row[1]) - float(row[0]))), 6)]  # softmax of yes, no
                     for q in qs for (i, j), row in zip(q.keys, next(scores))]
            out.append({"probs": probs, "invalid": 0, "n_outputs": len(probs), "n_prompts": len(qs),
                        "prompt_tokens": sum(len(q.input_ids) for q in qs)})
        return out
    return fn


def pairs_above(conv: dict, probs: list[list], threshold: float | dict[str, float]) -> list[tuple[int, str, int]]:
    """(i, emotion of i, j) for every query whose P(yes) exceeds ``threshold`` (one cut-off, or one per
    distance bucket as ``decision.tune_cutoffs`` chooses them)."""
    emotion = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
    return [(int(i), emotion[int(i)], int(j)) for i, j, p in probs if p > cutoff_for(threshold, i, j)]


def _causes_by_generation(model: Any, tokenizer: Any, max_length: int, max_new_tokens: int, batch_size: int):
    """fn(conversations) -> pairs parsed from one generated answer per emotional utterance."""
    from .inference import generate

    def fn(batch: list[dict]) -> list[dict]:
        items = [(conv, i, emo, prompts.generation_ids(tokenizer, user, max_length - max_new_tokens))
                 for conv in batch for i, emo, user in prompts.per_utterance_cause_prompts(conv)]
        texts = generate(model, tokenizer, [x[3] for x in items], max_new_tokens, batch_size) if items else []
        records = {id(conv): {"pairs": [], "invalid": 0, "n_outputs": 0, "raw": [], "n_prompts": 0,
                              "prompt_tokens": 0} for conv in batch}
        for (conv, i, emo, ids), text in zip(items, texts):
            causes, valid = prompts.parse_cause_answer(text, i, len(conv["conversation"]))
            rec = records[id(conv)]
            rec["pairs"] += [[i, emo, j] for j in causes]
            rec["invalid"] += not valid
            rec["n_outputs"] += 1
            rec["n_prompts"] += 1
            rec["prompt_tokens"] += len(ids)
            rec["raw"].append(text)
        return [records[id(conv)] for conv in batch]
    return fn


def predict_causes(model: Any, tokenizer: Any, convs: list[dict], style: str, batch_size: int = 8,
                   checkpoint_path: str | Path | None = None, max_length: int = 1024,
                   threshold: float | dict[str, float] = 0.5,
                   before: int = prompts.WINDOW_BEFORE, after: int = prompts.WINDOW_AFTER,
                   max_new_tokens: int = 48, return_probabilities: bool = False) -> tuple:
    """Find the cause utterances of every emotional utterance; returns (conversations with pairs, stats)
    and, when asked (conversation style), the per-query probabilities [[conversation, i, j, P(yes)], ...]."""
    if prompts.check_style(style) == "conversation":
        fn = _causes_by_scoring(model, tokenizer, max_length, batch_size, before, after)
    else:
        fn = _causes_by_generation(model, tokenizer, max_length, max_new_tokens, batch_size)
    start = time.perf_counter()
    results = _resumable(convs, fn, checkpoint_path, batch_size, desc="causes")
    stats = _stats(convs, results, time.perf_counter() - start)
    stats["threshold"] = threshold if style == "conversation" else None
    pred = [with_pairs(conv, pairs_above(conv, r["probs"], threshold) if "probs" in r else [tuple(x) for x in r["pairs"]])
            for conv, r in zip(convs, results)]
    if not return_probabilities:
        return pred, {"style": style, **stats}
    probs = [[conv["conversation_ID"], *x] for conv, r in zip(convs, results) for x in r.get("probs", [])]
    return pred, {"style": style, **stats}, probs


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


def _probs_by_conversation(probs: list[list]) -> dict[Any, list]:
    by_conv: dict[Any, list] = {}
    for cid, i, j, p in probs:
        by_conv.setdefault(cid, []).append([i, j, p])
    return by_conv


def pair_scores(inputs: list[dict], probs: list[list], gold: list[dict],
                threshold: float | dict[str, float]) -> dict:
    """Official Subtask 2 scores of the pairs above ``threshold`` (probs as predict_causes returns them)."""
    by_conv = _probs_by_conversation(probs)
    pred = [with_pairs(c, pairs_above(c, by_conv.get(c["conversation_ID"], []), threshold)) for c in inputs]
    return score_subtask2(pred, gold)


def threshold_sweep(inputs: list[dict], probs: list[list], gold: list[dict],
                    grid: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Weighted pair P/R/F1 of the pairs above each single cut-off."""
    table = []
    for t in grid:
        s = pair_scores(inputs, probs, gold, t)
        table.append({"threshold": t, **{k: s[k] for k in ("weighted_f1", "weighted_precision", "weighted_recall")},
                      "n_pred_pairs": s["n_pred_pairs"]})
    return table


def choose_cutoffs(gold: list[dict], probs: list[list], per_distance: bool = True) -> dict:
    """From P(yes) of ``gold``'s candidates (probs as predict_causes returns them): the single cut-off
    with the best weighted pair F1 (ties: nearer 0.5) and, with ``per_distance``, one cut-off per
    distance bucket chosen from it (``decision.tune_cutoffs``)."""
    inputs = [with_pairs(c, []) for c in gold]
    table = threshold_sweep(inputs, probs, gold)
    best = max(table, key=lambda row: (row["weighted_f1"], -abs(row["threshold"] - 0.5)))
    out = {"threshold": best["threshold"], "weighted_f1": best["weighted_f1"], "conversations": len(gold),
           "table": table}
    if per_distance:
        by_conv = _probs_by_conversation(probs)  # grouped once: the ascent scores ~170 rules

        def score(cut: float | dict[str, float]) -> float:
            pred = [with_pairs(c, pairs_above(c, by_conv.get(c["conversation_ID"], []), cut)) for c in inputs]
            return score_subtask2(pred, gold)["weighted_f1"]

        cutoffs = tune_cutoffs(score, best["threshold"])
        out.update(threshold=cutoffs, single_threshold=best["threshold"], weighted_f1=score(cutoffs))
    return out


def tune_threshold(model: Any, tokenizer: Any, gold: list[dict], max_length: int, before: int, after: int,
                   batch_size: int = 8, per_distance: bool = True) -> dict:
    """``choose_cutoffs`` on the model's P(yes) for ``gold`` (val conversations, gold emotions)."""
    _, _, probs = predict_causes(model, tokenizer, [with_pairs(c, []) for c in gold], "conversation", batch_size,
                                 None, max_length, 0.5, before, after, return_probabilities=True)
    return choose_cutoffs(gold, probs, per_distance)


def tune_cause_threshold(cfg: CauseFinetuneConfig, tokenizer: Any, val: list[dict], batch_size: int = 8) -> dict | None:
    """Choose the cut-off(s) on the val split with the new adapter and record them in task.json
    (conversation style only: the original recipe generates its answers, it has no cut-off)."""
    if cfg.STYLE != "conversation" or not val:
        return None
    from .modeling import load_model

    model = load_model(cfg.MODEL, adapter=adapter_dir(cfg, "cause"))
    tuning = tune_threshold(model, tokenizer, val, cfg.MAX_LENGTH, cfg.CAUSE_WINDOW_BEFORE, cfg.CAUSE_WINDOW_AFTER,
                            batch_size, per_distance=cfg.CAUSE_CUTOFFS == "per_distance")
    record = read_json(task_dir(cfg, "cause") / TASK_FILE)
    write_json_atomic(task_dir(cfg, "cause") / TASK_FILE, {**record, "threshold": tuning["threshold"],
                                                           "threshold_tuning": tuning})
    return tuning


def tune_emotion_offsets(cfg: FinetuneConfig, tokenizer: Any, val: list[dict], batch_size: int = 8) -> dict | None:
    """Choose per-emotion log-prob offsets on the val split with the new adapter (weighted F1, the
    headline metric) and record them in task.json (conversation style only: the recipe generates)."""
    if cfg.STYLE != "conversation" or not val:
        return None
    from .modeling import load_model

    model = load_model(cfg.MODEL, adapter=adapter_dir(cfg, "emotion"))
    rows = emotion_logprobs(model, tokenizer, strip_labels(val), cfg.MAX_LENGTH, batch_size)
    tuning = tune_offsets(np.array([r for conv in rows for r in conv]),
                          [u["emotion"] for conv in val for u in conv["conversation"]])
    tuning["conversations"] = len(val)
    record = read_json(task_dir(cfg, "emotion") / TASK_FILE)
    write_json_atomic(task_dir(cfg, "emotion") / TASK_FILE, {**record, "offsets": tuning["offsets"],
                                                             "offset_tuning": tuning})
    return tuning


def emotion_offsets(cfg: EmotionInferenceConfig, task: dict) -> dict[str, float] | None:
    """The offsets 02 chose on val when USE_VAL_OFFSETS and recorded, else None (the plain argmax)."""
    return task.get("offsets") if cfg.USE_VAL_OFFSETS else None


def cause_threshold(cfg: CauseInferenceConfig, task: dict) -> float | dict[str, float]:
    """The cut-off(s) 04 chose on val when USE_VAL_THRESHOLD and recorded, else CAUSE_THRESHOLD."""
    if cfg.USE_VAL_THRESHOLD and "threshold" in task:
        t = task["threshold"]
        return {k: float(v) for k, v in t.items()} if isinstance(t, dict) else float(t)
    return cfg.CAUSE_THRESHOLD


def plot_thresholds(table: list[dict], path: str | Path, title: str, chosen: float | dict[str, float] | None = None,
                    show: bool = True) -> Path:
    """Weighted pair precision, recall and F1 against the P(yes) cut-off."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [row["threshold"] for row in table]
    for key in ("weighted_precision", "weighted_recall", "weighted_f1"):
        ax.plot(x, [row[key] for row in table], "-o", markersize=3, label=key.replace("weighted_", ""))
    if isinstance(chosen, dict):  # one cut-off per distance bucket: a line per bucket
        for k, (bucket, value) in enumerate(chosen.items()):
            ax.axvline(value, color=f"C{k + 3}", linestyle=":", label=f"cut-off, offset {bucket}: {value:g}")
    elif chosen is not None:
        ax.axvline(chosen, color="grey", linestyle="--", label=f"cut-off {chosen:g}")
    ax.set(title=title, xlabel="P(yes) cut-off", ylabel="weighted pair score", ylim=(0, 1))
    ax.legend(fontsize="small")
    return save_figure(fig, path, show)


def checkpoint_for(output: str | Path) -> Path:
    """The JSONL checkpoint of a resumable run, beside its output file."""
    output = Path(output)
    return output.with_name(f".{output.stem}.partial.jsonl")


def finish(output: str | Path, convs: list[dict]) -> Path:
    """Write the output atomically, then drop its checkpoint (a rerun starts from scratch)."""
    path = write_json_atomic(output, convs)
    checkpoint_for(output).unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------- evaluation helpers

def error_rows(pred: list[dict], gold: list[dict]) -> list[dict]:
    """One row per misclassified utterance: conversation, utterance, speaker, text, gold, predicted."""
    rows = []
    for p, g in zip(pred, gold_subset(gold, pred)):
        for pu, gu in zip(p["conversation"], g["conversation"]):
            if pu["emotion"] != gu["emotion"]:
                rows.append({"conversation": g["conversation_ID"], "utterance": gu["utterance_ID"],
                             "speaker": gu["speaker"], "text": gu["text"], "gold": gu["emotion"],
                             "predicted": pu["emotion"]})
    return rows


def pair_error_rows(pred: list[dict], gold: list[dict]) -> list[dict]:
    """Pairs the model missed (false negatives) or invented (false positives), per conversation."""
    rows = []
    for p, g in zip(pred, gold_subset(gold, pred)):
        gold_pairs, pred_pairs = set(emotion_pairs(g)), set(emotion_pairs(p))
        text = {u["utterance_ID"]: u["text"] for u in g["conversation"]}
        for kind, pairs in (("missed", gold_pairs - pred_pairs), ("invented", pred_pairs - gold_pairs)):
            for i, emotion, j in sorted(pairs):
                rows.append({"conversation": g["conversation_ID"], "kind": kind, "emotion_utterance": i,
                             "emotion": emotion, "cause_utterance": j, "emotion_text": text[i], "cause_text": text[j]})
    return rows


def emotion_metrics(pred: list[dict], gold_split: list[dict], train: list[dict],
                    inference_stats: dict | None = None) -> dict:
    """The model's emotion scores (top level) and the majority baseline's, on the same conversations."""
    from .baselines import majority_emotion
    from .scoring import emotion_scores_convs

    gold = gold_subset(gold_split, pred)
    out = emotion_scores_convs(pred, gold)
    out["baselines"] = {"majority": emotion_scores_convs(majority_emotion(train, strip_labels(gold)), gold)}
    out["inference"] = inference_stats or {}
    return out


def cause_metrics(pred: list[dict], inputs: list[dict], gold_split: list[dict], cause_emotions: str,
                  inference_stats: dict | None = None) -> dict:
    """Official Subtask 2 scores of the model (top level) and of the self+previous baseline, both with
    the emotions the model saw and with gold emotions."""
    from .baselines import self_and_previous_causes

    gold = gold_subset(gold_split, pred)
    out = score_subtask2(pred, gold)
    out["baselines"] = {
        f"self_and_previous_{cause_emotions}_emotions": score_subtask2(self_and_previous_causes(inputs), gold),
        "self_and_previous_gold_emotions": score_subtask2(self_and_previous_causes(gold), gold),
    }
    out["cause_emotions"] = cause_emotions
    out["inference"] = inference_stats or {}
    return out


def score_table(named_scores: dict[str, dict], keys: Sequence[str]) -> list[dict]:
    """Rows {system, key...} for a side-by-side table of several systems' scores."""
    return [{"system": name, **{k: round(float(s[k]), 4) for k in keys if k in s}}
            for name, s in named_scores.items()]


def strip_for_inference(convs: list[dict]) -> list[dict]:
    """The unlabelled copies a model is run on."""
    return strip_labels(convs)
