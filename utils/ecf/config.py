"""The ECF notebooks' parameters: one frozen dataclass per notebook (02-06, 11), validated on creation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from utils.ecf import prompts
from utils.ecf.data import SPLITS
from utils.lm import plan
from utils.lm.batch import ANSWER_WEIGHTINGS
from utils.lm.training_params import TARGETS_HELP, TrainingParams
from utils.params import HostedConfig, param
from utils.tracking import Tracked


TASKS = ("emotion", "cause")

CAUSE_EMOTION_SOURCES = ("gold", "predicted")

CUTOFF_RULES = ("one", "per_distance")

DECISION_RULES = ("end_to_end", "stage_wise")

SMOKE_LIMIT, SMOKE_TEST_LIMIT, SMOKE_STEPS = 8, 4, 8


def ecf_smoke_corpus() -> tuple[str, list[str], tuple[str, ...]]:
    """The bundled ECF sample's utterances, the seven emotions and the cause answers: the ECF track's tiny model."""
    from utils.ecf.data import SAMPLE_PATH, EMOTIONS, load_ecf

    texts = [u["text"] for c in load_ecf(SAMPLE_PATH) for u in c["conversation"]]
    return "tiny-llama", texts, (*EMOTIONS, *prompts.ANSWERS)


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
    EMOTION_MODEL: str = param("", 'the emotion stage\'s model (notebooks 02 and 03), as MODEL; "": MODEL')
    CAUSE_MODEL: str = param("", 'the cause stage\'s model (notebooks 04 and 05), as MODEL; "": MODEL')
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

    STAGE = None  # the task whose model this notebook loads ("emotion", "cause"): MODEL is set to it

    @classmethod
    def smoke_corpus(cls) -> tuple[str, list[str], tuple[str, ...]]:
        return ecf_smoke_corpus()

    def __post_init__(self) -> None:
        for name, value in zip(("MODEL", "EMOTION_MODEL", "CAUSE_MODEL"), stage_models(self)):
            object.__setattr__(self, name, value)
        prompts.check_style(self.STYLE)
        if self.STYLE == "fused" and self.model_of("emotion") != self.model_of("cause"):
            raise ValueError(f"STYLE='fused' trains one adapter for both stages: EMOTION_MODEL="
                             f"{self.model_of('emotion')!r} and CAUSE_MODEL={self.model_of('cause')!r} must be "
                             "one model")
        if self.SPLIT not in SPLITS:
            raise ValueError(f"SPLIT={self.SPLIT!r}: use one of {list(SPLITS)}")
        if self.LIMIT < 0:
            raise ValueError(f"LIMIT={self.LIMIT}: use 0 for all conversations or a positive count")

    def model_of(self, task: str) -> str:
        """The model of ``task``'s stage ("emotion": 02 and 03, "cause": 04 and 05), resolved."""
        return {"emotion": self.EMOTION_MODEL, "cause": self.CAUSE_MODEL}[task] or self.MODEL


def stage_models(cfg: SeriesConfig) -> tuple[str, str, str]:
    """(MODEL, EMOTION_MODEL, CAUSE_MODEL) resolved ("auto" -> this machine's model): MODEL becomes the model of the
    notebook's STAGE, what its code loads; a stage left "" that now differs from MODEL is pinned to the model it
    had, so that building the config again (``dataclasses.replace``) gives the same three."""
    base = plan.resolve_model(cfg.MODEL)
    stages = {"emotion": plan.resolve_model(cfg.EMOTION_MODEL or base),
              "cause": plan.resolve_model(cfg.CAUSE_MODEL or base)}
    model = stages.get(cfg.STAGE, base)
    given = {"emotion": cfg.EMOTION_MODEL, "cause": cfg.CAUSE_MODEL}
    kept = [stages[t] if given[t] or stages[t] != model else "" for t in ("emotion", "cause")]
    return model, kept[0], kept[1]


@dataclass(frozen=True)
class LoggedConfig(SeriesConfig, Tracked):
    """A notebook that records its run in the experiment log (utils.tracking)."""
    TRACKING_DB: str = param("", "experiment log; empty: $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite")


@dataclass(frozen=True)
class TrainingNotebookConfig(TrainingParams, LoggedConfig):
    """What notebooks 02 and 04 share: the training fields (``utils.lm.training_params``) and the ECF ones."""
    LEARNING_RATE: float = param(1e-3, "peak learning rate of the LoRA weights (linear decay, 3% warm-up)")
    MAX_LENGTH: int = param(1024, "tokens per sequence; longer conversations are split into chunks")
    LORA_AUTO = ("attention", "mlp")  # measured against attention alone in bench/RESULTS.md section 5
    LORA_TARGETS: str = param("auto", TARGETS_HELP.format(auto="attention and MLP"))
    VAL_LIMIT: int = param(0, "use only the first VAL_LIMIT val conversations for the eval loss "
                              "(0: all; LIMIT caps them too)")
    CLASS_WEIGHTING: str = param("none", 'loss weight of each label by its training frequency: "none", "sqrt" '
                                         '(1/sqrt(share)) or "inverse" (1/share); conversation style only')
    SHOW_TEXT: bool = param(True, "print a training example with its text; False: the same format built from the "
                                  "bundled synthetic sample (the rendered pages of the ECF corpus use it)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.CLASS_WEIGHTING not in ANSWER_WEIGHTINGS:
            raise ValueError(f"CLASS_WEIGHTING={self.CLASS_WEIGHTING!r}: use one of {list(ANSWER_WEIGHTINGS)}")


@dataclass(frozen=True)
class FinetuneConfig(TrainingNotebookConfig):
    """Notebook 02."""
    STAGE = "emotion"
    EMOTION_FORMAT: str = param(prompts.EMOTION_FORMAT, 'the emotion lines: "compact" (`` Speaker: text emotion:``) '
                                                        'or "marked" (a header, `` -> emotion:`` and a newline; '
                                                        "0.484 against 0.483 after an epoch: bench/RESULTS.md E6)")
    NEUTRAL_WEIGHT: float = param(1.0, "loss weight of the neutral answers against the other labels' (0: neutral "
                                       "utterances stay in the text as context but teach nothing; 1: like every "
                                       "other), with CLASS_WEIGHTING's and rescaled the same way; conversation and "
                                       "fused styles; compare values by the val weighted F1")

    def __post_init__(self) -> None:
        super().__post_init__()
        prompts.check_emotion_format(self.EMOTION_FORMAT)
        if not self.NEUTRAL_WEIGHT >= 0:
            raise ValueError(f"NEUTRAL_WEIGHT={self.NEUTRAL_WEIGHT}: use a weight >= 0 (1: as every other label)")


@dataclass(frozen=True)
class CauseFinetuneConfig(TrainingNotebookConfig):
    """Notebook 04."""
    STAGE = "cause"
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
    CAUSE_LAYOUT: str = param(prompts.CAUSE_LAYOUT, 'where the cause lines go: "inline" (below the utterance each '
                                                    'asks about) or "after" the conversation (bench/RESULTS.md '
                                                    "section 5, C1 and C2)")

    def check_series(self, configs: list) -> None:
        """On predicted emotions 04 reads the train labels that 03 writes with LABEL_TRAIN only."""
        labels_train = [c.LABEL_TRAIN for c in configs if isinstance(c, EmotionInferenceConfig)]
        if self.STYLE != "fused" and self.CAUSE_EMOTIONS == "predicted" and labels_train and not any(labels_train):
            raise ValueError("CAUSE_EMOTIONS='predicted': notebook 04 trains on the train split's labels that notebook "
                             "03 writes only with LABEL_TRAIN=True; set it too, or use CAUSE_EMOTIONS='gold'")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        prompts.check_layout(self.CAUSE_LAYOUT)
        if self.CAUSE_CUTOFFS not in CUTOFF_RULES:
            raise ValueError(f"CAUSE_CUTOFFS={self.CAUSE_CUTOFFS!r}: use one of {list(CUTOFF_RULES)}")


@dataclass(frozen=True)
class EmotionInferenceConfig(LoggedConfig):
    """Notebook 03."""
    STAGE = "emotion"
    TEST_LIMIT: int = param(0, "label only the first TEST_LIMIT test conversations (0: all)")
    LABEL_TRAIN: bool = param(False, "also label the train split (what 04 trains on when its CAUSE_EMOTIONS is \"predicted\")")
    USE_VAL_OFFSETS: bool = param(True, "add the per-emotion offsets notebook 02 chose on val (when recorded) "
                                        "before the argmax (corrects the label prior)")
    BATCH_SIZE: int = param(8, "sequences per forward pass")
    MAX_NEW_TOKENS: int = param(16, "generation budget per answer (per_utterance style only)")


@dataclass(frozen=True)
class CauseInferenceConfig(LoggedConfig):
    """Notebook 05."""
    STAGE = "cause"
    CAUSE_EMOTIONS: str = param("predicted", 'emotions of the test conversations: "predicted" (03\'s file) '
                                             'or "gold"')
    CAUSE_THRESHOLD: float = param(0.5, "a pair is predicted when P(yes) / (P(yes) + P(no)) exceeds this")
    USE_VAL_THRESHOLD: bool = param(True, "use the cut-off notebook 04 chose on the val split instead, "
                                          "when it recorded one")
    GOLD_EMOTION_RUN: bool = param(True, "with predicted emotions and an annotated test file, also run the cause "
                                         "model on the gold emotions (one more inference pass): the cause model "
                                         "alone, beside self + previous on the same gold emotions")
    DECISION_RULE: str = param("end_to_end", '"end_to_end": the emotions the cause model reads, its cut-offs and a '
                                             "fallback pair, chosen together on val in 04 for the pair score (03's "
                                             'log-probs relabelled); "stage_wise": 03\'s emotions, 04\'s cut-offs on gold '
                                             "emotions")
    STAGE_WISE_RUN: bool = param(True, "with the end-to-end DECISION_RULE, also run the stage-wise rule on the same "
                                       "test conversations (one more inference pass): both rules side by side")
    BATCH_SIZE: int = param(8, "sequences per forward pass")
    MAX_NEW_TOKENS: int = param(48, "generation budget per answer (per_utterance style only)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_emotion_source(self.CAUSE_EMOTIONS)
        if self.DECISION_RULE not in DECISION_RULES:
            raise ValueError(f"DECISION_RULE={self.DECISION_RULE!r}: use one of {list(DECISION_RULES)}")
        if not 0.0 < self.CAUSE_THRESHOLD < 1.0:
            raise ValueError(f"CAUSE_THRESHOLD={self.CAUSE_THRESHOLD}: use a probability in (0, 1)")


@dataclass(frozen=True)
class EvaluationConfig(SeriesConfig):
    """Notebook 06."""
    ERROR_ROWS: int = param(20, "error-table rows shown inline (the CSV files hold them all)")


# written for notebook 11, not taken from data/ecf_sample.json or the corpus: a page or test that shows it quotes no one
MY_CONVERSATION = ("Mira: I finally handed in my thesis this morning .\n"
                   "Tom: Congratulations ! How does it feel ?\n"
                   "Mira: Strange . I keep thinking I forgot a page .\n"
                   "Tom: You read it five times last night , relax .\n"
                   "Mira: You are right . I am just so relieved it is over !")


@dataclass(frozen=True)
class ConversationConfig(HostedConfig):
    """Notebook 11: the adapters of a finished run (02, 04) on a conversation of one's own (``utils.ecf.analyse``)."""
    TEST_DIR: str = param("results_test", "test-side artifacts: here your_conversation.json (Subtask 2 format with "
                                          "probabilities) and your_conversation.html (the view)")
    CHECKPOINT_DIR: str = param("checkpoints", "adapters live in <CHECKPOINT_DIR>/<task>/<STYLE>/adapter")
    STYLE: str = param("conversation", 'the STYLE notebooks 02 and 04 trained with; analyse reads the "conversation" '
                                       "style's adapters only (another style: the notebook says so and shows nothing)")
    MY_CONVERSATION: str = param(MY_CONVERSATION, 'the conversation to read: one "Speaker: utterance" per line '
                                                  "(blank lines ignored)")

    def __post_init__(self) -> None:
        prompts.check_style(self.STYLE)
        if not self.MY_CONVERSATION.strip():
            raise ValueError('MY_CONVERSATION is empty: write one "Speaker: utterance" per line')


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
