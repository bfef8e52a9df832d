"""The ECF notebooks' parameters: one frozen dataclass per notebook (02-06), validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from utils.ecf import prompts
from utils.ecf.data import SPLITS
from utils.lm import plan
from utils.lm.batch import ANSWER_WEIGHTINGS
from utils.params import HostedConfig, check_training, param
from utils.tracking import Tracked


TASKS = ("emotion", "cause")

CAUSE_EMOTION_SOURCES = ("gold", "predicted")

CUTOFF_RULES = ("one", "per_distance")

SMOKE_LIMIT, SMOKE_TEST_LIMIT, SMOKE_STEPS = 8, 4, 8


@dataclass(frozen=True)
class SeriesConfig(HostedConfig):
    """Parameters every notebook of the series shares."""
    DATA_PATH: str = param("data/ecf_sample.json", "ECF file (Subtask 1 or 2 format), relative to the repo root")
    TRAIN_DIR: str = param("results_train", "train-side artifacts: labelled train split, figures, experiment log")
    TEST_DIR: str = param("results_test", "test-side artifacts: predictions, scores, figures")
    CHECKPOINT_DIR: str = param("checkpoints", "adapters live in <CHECKPOINT_DIR>/<task>/<STYLE>/adapter")
    MODEL: str = param("auto", '"auto" (TinyLlama-1.1B-Chat from the hub on a CUDA GPU, 4-bit under 20 GiB; the '
                               'bundled SmolLM2 on a CPU or offline: the resolved model is printed and recorded), '
                               '"smollm2" (bundled GGUF), a .gguf file, a local folder or a hub id')
    STYLE: str = param("conversation", '"conversation" (one pass per conversation) or "per_utterance" '
                                       "(original MECPE recipe)")
    SEED: int = param(42, "split and training seed")
    TEST_FRAC: float = param(0.1, "share of conversations held out as the test split")
    VAL_FRAC: float = param(0.1, "share of the remaining conversations held out for validation")
    SPLIT: str = param("block", '"block": the test split is the last conversations by id (later episodes, like '
                                'the official test set) and val the block before it; "random": a seeded shuffle')
    TEST_PATH: str = param("", "a separate test file, e.g. the official Subtask_2_test.json: DATA_PATH then "
                               "gives train and val only")
    LIMIT: int = param(0, "use only the first LIMIT train (and val) conversations (0: all)")
    SMOKE: bool = param(False, "tiny run for tests/CI: at most 8 train, 2 val and 4 test conversations "
                               "and 8 optimizer steps (config.apply_smoke)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "MODEL", plan.resolve_model(self.MODEL))  # "auto" -> this machine's model
        prompts.check_style(self.STYLE)
        if self.SPLIT not in SPLITS:
            raise ValueError(f"SPLIT={self.SPLIT!r}: use one of {list(SPLITS)}")
        if self.LIMIT < 0:
            raise ValueError(f"LIMIT={self.LIMIT}: use 0 for all conversations or a positive count")


@dataclass(frozen=True)
class LoggedConfig(SeriesConfig, Tracked):
    """A notebook that records its run in the experiment log (utils.tracking)."""
    TRACKING_DB: str = param("", "experiment log; empty: $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite")


@dataclass(frozen=True)
class FinetuneConfig(LoggedConfig):
    """Notebook 02 (emotions); 04 adds the cause fields."""
    VAL_LIMIT: int = param(0, "use only the first VAL_LIMIT val conversations for the eval loss "
                              "(0: all; LIMIT caps them too)")
    EPOCHS: float = param(1.0, "passes over the training examples (ignored when MAX_STEPS > 0)")
    MAX_STEPS: int = param(0, "> 0: stop after this many optimizer steps (overrides EPOCHS)")
    LEARNING_RATE: float = param(1e-3, "peak learning rate of the LoRA weights (linear decay, 3% warm-up)")
    BATCH_SIZE: int = param(4, "sequences per device and optimizer step")
    GRAD_ACCUM: int = param(0, "0: the memory plan splits each BATCH_SIZE batch into the fewest passes that fit "
                               "the device (the effective batch stays BATCH_SIZE x GPUs, whatever the GPU); "
                               "> 0: BATCH_SIZE sequences per pass and this many accumulation steps "
                               "(effective batch BATCH_SIZE x GRAD_ACCUM x GPUs)")
    MAX_LENGTH: int = param(1024, "tokens per sequence; longer conversations are split into chunks")
    LORA_R: int = param(16, "LoRA rank")
    LORA_ALPHA: int = param(32, "LoRA scaling numerator (scale: alpha / r)")
    LORA_DROPOUT: float = param(0.05, "dropout on the LoRA path")
    LORA_TARGETS: str = param("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                              "comma-separated module names that get adapters (attention and MLP: "
                              "measured in bench/RESULTS.md section 5)")
    CLASS_WEIGHTING: str = param("none", 'loss weight of each label by its training frequency: "none", "sqrt" '
                                         '(1/sqrt(share)) or "inverse" (1/share); conversation style only')
    REPORT_TO: str = param("none", '"none", "tensorboard" or "wandb"')
    MERGE: bool = param(False, "also save the adapter merged into full base weights (<task dir>/merged)")
    RESUME: bool = param(True, "continue from the last checkpoint in the task dir after a disconnect")
    GRADIENT_CHECKPOINTING: str = param("auto", '"auto" (on only where the memory plan needs it), "on" or "off": '
                                                "trades a third more compute for much less activation memory")
    EVAL_STEPS: int = param(0, "evaluate every EVAL_STEPS steps (0: at the end of each epoch only)")
    SAVE_STEPS: int = param(50, "checkpoint every SAVE_STEPS steps (what RESUME continues from)")
    LOGGING_STEPS: int = param(5, "log the training loss every LOGGING_STEPS steps")
    SHOW_TEXT: bool = param(True, "print a training example with its text; False: the same format built from the "
                                  "bundled synthetic sample (the rendered pages of the ECF corpus use it)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_training(self)
        if self.CLASS_WEIGHTING not in ANSWER_WEIGHTINGS:
            raise ValueError(f"CLASS_WEIGHTING={self.CLASS_WEIGHTING!r}: use one of {list(ANSWER_WEIGHTINGS)}")


@dataclass(frozen=True)
class CauseFinetuneConfig(FinetuneConfig):
    """Notebook 04."""
    CAUSE_EMOTIONS: str = param("gold", 'emotions shown to the cause model in training: "gold", or "predicted" '
                                        "(03's labels of the train split: turn on its LABEL_TRAIN; on real data 0.010 "
                                        "below gold end to end: bench/RESULTS.md section 5, C4)")
    CAUSE_WINDOW_BEFORE: int = param(prompts.WINDOW_BEFORE, "candidate causes start this many utterances before "
                                                            "the emotion (98% of ECF pairs lie in -5..+2)")
    CAUSE_WINDOW_AFTER: int = param(prompts.WINDOW_AFTER, "... and end this many after it")
    CAUSE_CUTOFFS: str = param("per_distance", 'P(yes) cut-offs chosen on val: "one", or "per_distance" '
                                               "(one each for offsets 0, -1, -2 and the rest)")
    CAUSE_SPANS: bool = param(False, "also teach the cause adapter to pick each cause's span (Subtask 1) when the "
                                     "training file has spans; off: the span rule chosen on val (trained alone for an "
                                     "epoch the reads beat the longest-clause rule by 0.01 strict F1 on real data, "
                                     "at about twice the cause training: bench/RESULTS.md section 5)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        if self.CAUSE_CUTOFFS not in CUTOFF_RULES:
            raise ValueError(f"CAUSE_CUTOFFS={self.CAUSE_CUTOFFS!r}: use one of {list(CUTOFF_RULES)}")


@dataclass(frozen=True)
class EmotionInferenceConfig(LoggedConfig):
    """Notebook 03."""
    TEST_LIMIT: int = param(0, "label only the first TEST_LIMIT test conversations (0: all)")
    LABEL_TRAIN: bool = param(False, "also label the train split (what 04 trains on when its CAUSE_EMOTIONS is \"predicted\")")
    USE_VAL_OFFSETS: bool = param(True, "add the per-emotion offsets notebook 02 chose on val (when recorded) "
                                        "before the argmax (corrects the label prior)")
    BATCH_SIZE: int = param(8, "sequences per forward pass")
    MAX_NEW_TOKENS: int = param(16, "generation budget per answer (per_utterance style only)")


@dataclass(frozen=True)
class CauseInferenceConfig(LoggedConfig):
    """Notebook 05."""
    CAUSE_EMOTIONS: str = param("predicted", 'emotions of the test conversations: "predicted" (03\'s file) '
                                             'or "gold"')
    CAUSE_THRESHOLD: float = param(0.5, "a pair is predicted when P(yes) / (P(yes) + P(no)) exceeds this")
    USE_VAL_THRESHOLD: bool = param(True, "use the cut-off notebook 04 chose on the val split instead, "
                                          "when it recorded one")
    GOLD_EMOTION_RUN: bool = param(True, "with predicted emotions and an annotated test file, also run the cause "
                                         "model on the gold emotions (one more inference pass): the cause model "
                                         "alone, beside self + previous on the same gold emotions")
    BATCH_SIZE: int = param(8, "sequences per forward pass")
    MAX_NEW_TOKENS: int = param(48, "generation budget per answer (per_utterance style only)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        if not 0.0 < self.CAUSE_THRESHOLD < 1.0:
            raise ValueError(f"CAUSE_THRESHOLD={self.CAUSE_THRESHOLD}: use a probability in (0, 1)")


@dataclass(frozen=True)
class EvaluationConfig(SeriesConfig):
    """Notebook 06."""
    ERROR_ROWS: int = param(20, "error-table rows shown inline (the CSV files hold them all)")


def check_series(configs: list) -> None:
    """Refuse settings of notebooks run together that would fail only later in the run: 04 on predicted
    emotions reads the train labels 03 writes with LABEL_TRAIN only."""
    labels_train = [c.LABEL_TRAIN for c in configs if isinstance(c, EmotionInferenceConfig)]
    wants_labels = any(isinstance(c, CauseFinetuneConfig) and c.CAUSE_EMOTIONS == "predicted" for c in configs)
    if wants_labels and labels_train and not any(labels_train):
        raise ValueError("CAUSE_EMOTIONS='predicted': notebook 04 trains on the train split's labels that notebook 03 "
                         "writes only with LABEL_TRAIN=True; set it too, or use CAUSE_EMOTIONS='gold'")


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
