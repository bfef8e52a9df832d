"""The ECF notebooks' parameters: one frozen dataclass per notebook (02-06), validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.ecf import prompts
from utils.ecf.data import SPLITS
from utils.lm.training import check_schedule
from utils.tracking import db_path


TASKS = ("emotion", "cause")

CAUSE_EMOTION_SOURCES = ("gold", "predicted")

CUTOFF_RULES = ("one", "per_distance")

SMOKE_LIMIT, SMOKE_TEST_LIMIT, SMOKE_STEPS = 8, 4, 8


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
