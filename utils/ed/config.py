"""The empathetic notebooks' parameters (07-09): one frozen dataclass per notebook, validated on creation,
and what a notebook derives from them (SMOKE limits, the cleaned data, the splits, the training config)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from utils.ed.data import EMOTIONS_32, CleaningReport, first_turns, load_empathetic, split_by_conversation
from utils.ed.prompts import TEXT_FIELD_CHOICES, label_ids
from utils.env import resolve, resolve_artifact
from utils.lm import plan
from utils.lm.modeling import is_adapter
from utils.lm.training import TrainConfig
from utils.lm.training_params import TrainingParams
from utils.params import HostedConfig, param
from utils.tracking import Tracked

MISSING_POLICIES = ("mode", "drop")
ED_UNITS = ("conversation", "turn")
# CPU_TRAIN_ROWS=-1 on a CPU: what SmolLM2-135M trains in under an hour on 2 cores, so that the whole track
# (07-10, evaluations included) ends within about two hours (bench/RESULTS.md section 11: about 150-200 training
# tokens/s; a classification example ~60 tokens, a reply example ~85; replies are a smaller share because 09's
# evaluation generates)
CLASSIFY_CPU_ROWS, GENERATE_CPU_ROWS = 8000, 2500
CPU_TOKENS_PER_S = 180  # LoRA training of SmolLM2-135M on a 2-core AMD EPYC (bench/RESULTS.md section 11)
MAX_VAL_ROWS = 1000  # a seeded sample of the val split is enough for the eval loss
SMOKE_ROWS, SMOKE_TEST_ROWS, SMOKE_STEPS, SMOKE_NEW_TOKENS = 32, 8, 4, 16


@dataclass(frozen=True)
class EdDataConfig(HostedConfig):
    """Parameters every notebook of the empathetic track shares (names match their parameters cells)."""

    ED_DATA_PATH: str = param("data/empathetic_sample.csv",
                              "Kaggle CSV, original release folder, or one of its csv files")
    ED_FORMAT: str = param("auto", "auto | kaggle | original")
    MISSING: str = param("mode", "blank cells: mode (fill with the column's most frequent value) | "
                                 "drop (drop the row)")
    LOWERCASE: bool = param(False, "lowercase situation, dialogue and response")
    ON_ERROR: str = param("raise", "malformed rows: raise (error names file, row, column) | "
                                   "drop (counted in the report)")
    TRAIN_DIR: str = param("results_train", "outputs go to TRAIN_DIR/empathetic/")
    ED_LIMIT: int = param(0, "first N cleaned rows (07) or training and val rows (08, 09); 0: all")
    SEED: int = param(42, "split and LoRA initialisation")
    SMOKE: bool = param(False, "tiny run for tests: few rows, few steps, short generations")

    @classmethod
    def smoke_corpus(cls) -> tuple[str, list[str], tuple[str, ...]]:
        """The bundled empathetic sample's situations, turns and replies, and its emotion labels."""
        df, _ = load_empathetic(None)
        texts = [str(t) for column in ("situation", "dialogue", "response") for t in df[column]]
        return "tiny-llama-empathetic", texts, EMOTIONS_32

    def __post_init__(self) -> None:
        choices = {"ED_FORMAT": ("auto", "kaggle", "original"), "MISSING": MISSING_POLICIES,
                   "ON_ERROR": ("raise", "drop")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {list(allowed)}")
        if self.ED_LIMIT < 0:
            raise ValueError(f"ED_LIMIT={self.ED_LIMIT}: use 0 for all rows or a positive count")

    @property
    def data_path(self) -> Path:
        return resolve(self.ED_DATA_PATH)

    @property
    def results_dir(self) -> Path:
        return resolve_artifact(self.TRAIN_DIR) / "empathetic"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"


@dataclass(frozen=True)
class EdEdaConfig(EdDataConfig):
    """notebooks/07_empathetic_eda.ipynb."""

    TOP_WORDS: int = param(100, "words per word cloud")
    FONT_PATH: str = param("", "word-cloud font file (empty: DejaVu Sans); give a Bangla or CJK .ttf for those scripts")


@dataclass(frozen=True)
class EdModelConfig(EdDataConfig, Tracked):
    """What 08 (classification) and 09 (generation) share besides training: model, split, tracking."""

    MODEL: str = param("auto", '"auto" (TinyLlama-1.1B-Chat from the hub on a CUDA GPU, 4-bit under 20 GiB; the '
                               'embedded SmolLM2 on a CPU or offline: the resolved model is printed and recorded), '
                               'hub id, local folder, .gguf file, or "smollm2" (embedded, offline)')
    CHECKPOINT_DIR: str = param("checkpoints", "adapters: CHECKPOINT_DIR/empathetic/<task>/adapter")
    ED_TEST_PATH: str = param("", "file or release folder whose rows are the test set, read in place of the split's "
                                  "test part (its conversations leave train and val); empty: the release's test file, "
                                  "else its valid file, else TEST_FRAC of the conversations")
    TEST_FRAC: float = param(0.1, "share of conversations held out for evaluation")
    VAL_FRAC: float = param(0.1, "share of conversations for the eval loss")
    ED_TEST_LIMIT: int = param(0, "a seeded sample of N test rows to evaluate; 0: all")
    TRACKING_DB: str = param("", "experiment log; empty: $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite")

    def __post_init__(self) -> None:
        object.__setattr__(self, "MODEL", plan.resolve_model(self.MODEL))  # "auto" -> this machine's model
        super().__post_init__()
        if not 0 < self.TEST_FRAC < 1 or not 0 <= self.VAL_FRAC < 1 - self.TEST_FRAC:
            raise ValueError(f"TEST_FRAC={self.TEST_FRAC}, VAL_FRAC={self.VAL_FRAC}: need 0 < TEST_FRAC, "
                             "0 <= VAL_FRAC and TEST_FRAC + VAL_FRAC < 1")


@dataclass(frozen=True)
class EdTrainConfig(TrainingParams, EdModelConfig):
    """08 and 09: the model, the split and a LoRA training (the training fields: ``utils.lm.training_params``)."""

    BATCH_SIZE: int = param(8, "sequences per optimizer step in training; per forward pass in inference")
    MAX_LENGTH: int = param(256, "tokens per example; the prompt is cut from the left, never the answer")
    SAVE_STEPS: int = param(200, "checkpoint every SAVE_STEPS steps (what RESUME continues from)")
    LOGGING_STEPS: int = param(10, "log the training loss every LOGGING_STEPS steps")
    EVAL_BASE: bool = param(True, "also evaluate the model before fine-tuning")
    CPU_TRAIN_ROWS: int = param(-1, "on a CPU, train on a seeded sample of this many rows (-1: the notebook's CPU "
                                    "budget, about an hour on 2 cores; 0: all); on a GPU every row")

    cpu_budget_rows = 0  # the notebook's default CPU_TRAIN_ROWS (-1): about an hour of SmolLM2 on 2 cores

    def task_dir(self, task: str) -> Path:
        """CHECKPOINT_DIR/empathetic/<task>: the training output folder (adapter in ./adapter)."""
        return resolve_artifact(self.CHECKPOINT_DIR) / "empathetic" / task


@dataclass(frozen=True)
class EdClassifyConfig(EdTrainConfig):
    """notebooks/08_empathetic_classification.ipynb."""

    TEXT_FIELDS: str = param("situation+dialogue", "classifier input: situation | dialogue | situation+dialogue")
    LEARNING_RATE: float = param(1e-3, "peak learning rate of the LoRA weights (linear decay, 3% warm-up)")
    LORA_TARGETS: str = param("auto", '"auto" (attention and MLP here), "attention", "mlp" or module names: found in '
                                      "the model's own layers")
    ED_UNIT: str = param("conversation", "conversation (one example each: the situation and the first speaker turn, "
                                         "the literature's unit) | turn (every speaker turn)")
    MAX_LENGTH: int = param(160, "tokens per example; a longer text is shortened, never the label")
    ERROR_ROWS: int = param(20, "error-table rows shown inline (the CSV has them all)")

    cpu_budget_rows = CLASSIFY_CPU_ROWS
    LORA_AUTO = ("attention", "mlp")  # as the ECF track's label reads

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ED_UNIT not in ED_UNITS:
            raise ValueError(f"ED_UNIT={self.ED_UNIT!r}: use one of {list(ED_UNITS)}")
        if self.TEXT_FIELDS not in TEXT_FIELD_CHOICES:
            raise ValueError(f"TEXT_FIELDS={self.TEXT_FIELDS!r}: use one of {list(TEXT_FIELD_CHOICES)}")


@dataclass(frozen=True)
class EdGenerateConfig(EdTrainConfig):
    """notebooks/09_empathetic_generation.ipynb."""

    LEARNING_RATE: float = param(5e-4, "peak learning rate of the LoRA weights (linear decay, 3% warm-up)")
    ED_TEST_LIMIT: int = param(250, "a seeded sample of N test rows to evaluate; 0: all")  # generation is the slow part
    MAX_LENGTH: int = param(160, "tokens per example; the prompt is cut from the left, never the answer")
    MAX_NEW_TOKENS: int = param(48, "longest generated reply in tokens")
    RATING_ROWS: int = param(20, "prompts in the rating sheet, each answered before and after fine-tuning")
    RATINGS_PATH: str = param("", "filled rating sheet(s), a file or a folder, read when present; "
                                  "empty: TRAIN_DIR/empathetic/ratings")
    cpu_budget_rows = GENERATE_CPU_ROWS

    CLASSIFIER_ADAPTER: str = param("", "emotion adapter for the chat; empty: notebook 08's when it exists, "
                                        "else the base model")
    CHAT_MESSAGES: str = param("I lost my job today and I don't know what to tell my family."
                               "|My sister just had a baby girl!", "'|'-separated demo turns")
    INTERACTIVE: bool = param(False, "open an input() chat loop below (blocks a headless run)")

    @property
    def ratings_path(self) -> Path:
        return resolve(self.RATINGS_PATH) if self.RATINGS_PATH else self.results_dir / "ratings"

    @property
    def chat_messages(self) -> list[str]:
        """The demo turns of CHAT_MESSAGES, blanks dropped."""
        return [m.strip() for m in self.CHAT_MESSAGES.split("|") if m.strip()]

    def classifier_adapter(self) -> str | None:
        """CLASSIFIER_ADAPTER, else notebook 08's adapter; None (the base model) where neither holds weights."""
        folder = resolve(self.CLASSIFIER_ADAPTER) if self.CLASSIFIER_ADAPTER else self.task_dir("emotion") / "adapter"
        return str(folder) if is_adapter(folder) else None


def apply_smoke(cfg: EdDataConfig) -> EdDataConfig:
    """SMOKE: few rows, few steps and short generations, whatever the other parameters say."""
    if not cfg.SMOKE:
        return cfg
    changes: dict = {"ED_LIMIT": min(cfg.ED_LIMIT or SMOKE_ROWS, SMOKE_ROWS)}
    if isinstance(cfg, EdTrainConfig):
        changes.update(MAX_STEPS=min(cfg.MAX_STEPS or SMOKE_STEPS, SMOKE_STEPS),
                       ED_TEST_LIMIT=min(cfg.ED_TEST_LIMIT or SMOKE_TEST_ROWS, SMOKE_TEST_ROWS),
                       LOGGING_STEPS=1)
    if isinstance(cfg, EdGenerateConfig):
        changes.update(MAX_NEW_TOKENS=min(cfg.MAX_NEW_TOKENS, SMOKE_NEW_TOKENS),
                       RATING_ROWS=min(cfg.RATING_ROWS, 4))
    return replace(cfg, **changes)


def load_for(cfg: EdDataConfig) -> tuple[pd.DataFrame, CleaningReport]:
    """Load and clean ED_DATA_PATH with the notebook's cleaning parameters."""
    return load_empathetic(cfg.data_path, fmt=cfg.ED_FORMAT, missing=cfg.MISSING, lowercase=cfg.LOWERCASE,
                           on_error=cfg.ON_ERROR)


def test_rows_for(cfg: EdModelConfig) -> pd.DataFrame | None:
    """ED_TEST_PATH's rows, cleaned like the data (None when it is empty)."""
    if not cfg.ED_TEST_PATH:
        return None
    test, _ = load_empathetic(resolve(cfg.ED_TEST_PATH), fmt=cfg.ED_FORMAT, missing=cfg.MISSING,
                              lowercase=cfg.LOWERCASE, on_error=cfg.ON_ERROR)
    print(f"test set: {len(test):,} rows of {test['conv_id'].nunique():,} conversations from {cfg.ED_TEST_PATH}")
    return test


def train_rows(cfg: EdTrainConfig, train: pd.DataFrame, device: str) -> pd.DataFrame:
    """The training rows: all on a GPU; on a CPU a seeded sample of CPU_TRAIN_ROWS (-1: the notebook's budget)."""
    rows = cfg.cpu_budget_rows if cfg.CPU_TRAIN_ROWS < 0 else cfg.CPU_TRAIN_ROWS
    if device != "cpu" or not rows or rows >= len(train):
        return train
    print(f"CPU: training on a seeded sample of {rows:,} of the {len(train):,} training rows (CPU_TRAIN_ROWS; "
          "0 trains on all)")
    return train.sample(n=rows, random_state=cfg.SEED).reset_index(drop=True)


def budget_line(examples, epochs: float, device: str) -> str:
    """One line before training: examples, tokens and, on a CPU, the estimated time (``CPU_TOKENS_PER_S``)."""
    tokens = sum(len(ex["input_ids"]) for ex in examples) * epochs
    line = f"training on {len(examples):,} examples, {tokens:,.0f} tokens ({epochs:g} epoch(s))"
    if device != "cpu":
        return line
    return (line + f": about {tokens / CPU_TOKENS_PER_S / 60:.0f} min on a CPU (an estimate at {CPU_TOKENS_PER_S} "
            "tokens/s, measured for SmolLM2-135M on 2 cores; a larger model or fewer cores take longer)")


def splits_for(cfg: EdTrainConfig, df: pd.DataFrame, unit: str = "turn") -> dict[str, pd.DataFrame]:
    """Split by conversation (``split_by_conversation``; ED_TEST_PATH's rows as the test set), keep the ``unit``'s
    rows (conversation: the first turn of each), then cap train/val at ED_LIMIT rows and draw a seeded
    ED_TEST_LIMIT of test; say in one line when the test split is too small for its scores to mean anything."""
    splits = split_by_conversation(df, cfg.TEST_FRAC, cfg.VAL_FRAC, cfg.SEED, test=test_rows_for(cfg))
    if unit == "conversation":
        splits = {name: first_turns(part) for name, part in splits.items()}
    caps = {"train": cfg.ED_LIMIT, "val": cfg.ED_LIMIT}
    splits = {name: part.head(caps[name]) if caps.get(name) else part for name, part in splits.items()}
    if len(splits["val"]) > MAX_VAL_ROWS:  # the eval loss needs no more; more only costs time
        splits["val"] = splits["val"].sample(n=MAX_VAL_ROWS, random_state=cfg.SEED).reset_index(drop=True)
    if cfg.ED_TEST_LIMIT and cfg.ED_TEST_LIMIT < len(splits["test"]):
        splits["test"] = splits["test"].sample(n=cfg.ED_TEST_LIMIT, random_state=cfg.SEED).sort_index()
        splits["test"] = splits["test"].reset_index(drop=True)
    note = small_test_note(len(splits["test"]))
    if note:
        print(note)
    return splits


# about ten test rows per emotion before a 32-class accuracy (or a BLEU over as many replies) says anything
MIN_TEST_ROWS = 10 * len(EMOTIONS_32)


def small_test_note(n_test: int) -> str | None:
    """One line saying why scores on ``n_test`` rows measure nothing; None from MIN_TEST_ROWS rows on."""
    if n_test >= MIN_TEST_ROWS:
        return None
    step = f"one row moves accuracy by {100 / n_test:.0f} points" if n_test else "there is nothing to score"
    return (f"Only {n_test} test rows ({step}, and {len(EMOTIONS_32)} emotions cannot each appear even once): "
            f"the scores below measure nothing, before or after training. The bundled sample is ours, synthetic and "
            f"small so the track runs in minutes on a CPU; for scores, set ED_DATA_PATH to the Empathetic Dialogues "
            f"release (from {MIN_TEST_ROWS} test rows on this line goes away).")


def train_config(cfg: EdTrainConfig, task: str, tokenizer=None) -> TrainConfig:
    """utils.lm.training.TrainConfig for task 'emotion' (the loss a softmax over the 32 label tokens: pass the
    tokenizer) or 'response' (the usual LM loss on the reply) from the notebook's parameters."""
    ids = label_ids(tokenizer) if task == "emotion" else None
    extra = {"answer_ids": tuple(ids)} if ids else {}
    return cfg.train_config(str(cfg.task_dir(task)), **extra)
