"""The notebook parameters of a LoRA training run, declared once for both tracks, and their one mapping onto
``utils.lm.training.TrainConfig``.

A track's training config lists ``TrainingParams`` first among its bases (its fields then follow the track's
own) and overrides a default by declaring the field again: the ECF notebooks the learning rate, the LoRA
targets and the checkpoint cadence; the empathetic ones the batch, the length and the cadence. The class
expects the track's ``SEED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from utils.lm import lora, plan
from utils.lm.lora import LoraSettings
from utils.lm.training import LEARNING_RATE, REPORT_TO, TrainConfig, check_schedule
from utils.params import param

TARGETS_HELP = '"auto" ({auto} here), "attention", "mlp" or module names: found in the model\'s own layers'


@dataclass(frozen=True)
class TrainingParams:
    """EPOCHS ... MERGE: what every training notebook sets for the trainer."""

    LORA_AUTO = ("attention",)  # what LORA_TARGETS="auto" adapts (a class constant, not a parameter)

    EPOCHS: float = param(1.0, "passes over the training examples (ignored when MAX_STEPS > 0)")
    MAX_STEPS: int = param(0, "> 0: stop after this many optimizer steps (overrides EPOCHS)")
    LEARNING_RATE: float = param(LEARNING_RATE, "peak learning rate of the LoRA weights (linear decay, 3% warm-up)")
    BATCH_SIZE: int = param(4, "sequences per device and optimizer step")
    GRAD_ACCUM: int = param(0, "0: the memory plan splits each BATCH_SIZE batch into the fewest passes that fit "
                               "the device (the effective batch stays BATCH_SIZE x GPUs, whatever the GPU); "
                               "> 0: BATCH_SIZE sequences per pass and this many accumulation steps "
                               "(effective batch BATCH_SIZE x GRAD_ACCUM x GPUs)")
    MAX_LENGTH: int = param(1024, "tokens per sequence")
    LORA_R: int = param(16, "LoRA rank")
    LORA_ALPHA: int = param(32, "LoRA scaling numerator (scale: alpha / r)")
    LORA_DROPOUT: float = param(0.05, "dropout on the LoRA path")
    LORA_TARGETS: str = param("auto", TARGETS_HELP.format(auto="attention"))
    REPORT_TO: str = param("none", " | ".join(f'"{r}"' for r in REPORT_TO) + ": where the losses are logged too")
    RESUME: bool = param(True, "continue from the last checkpoint in the task dir after a disconnect")
    GRADIENT_CHECKPOINTING: str = param("auto", '"auto" (on only where the memory plan needs it), "on" or "off": '
                                                "trades a third more compute for much less activation memory")
    EVAL_STEPS: int = param(0, "evaluate every EVAL_STEPS steps (0: at the end of each epoch only)")
    SAVE_STEPS: int = param(50, "checkpoint every SAVE_STEPS steps (what RESUME continues from)")
    LOGGING_STEPS: int = param(5, "log the training loss every LOGGING_STEPS steps")
    MERGE: bool = param(False, "also save the adapter merged into full base weights (<task dir>/merged)")

    def __post_init__(self) -> None:
        later = getattr(super(), "__post_init__", None)  # the track's config checks its own fields
        if later is not None:
            later()
        check_schedule(self.REPORT_TO, self.EPOCHS, self.MAX_STEPS)
        plan.checkpointing(self.GRADIENT_CHECKPOINTING)
        lora.check_numbers(self.LORA_R, self.LORA_ALPHA, self.LORA_DROPOUT)
        lora.parse_targets(self.LORA_TARGETS, self.LORA_AUTO)
        if self.BATCH_SIZE < 1 or self.GRAD_ACCUM < 0:
            raise ValueError(f"BATCH_SIZE={self.BATCH_SIZE}, GRAD_ACCUM={self.GRAD_ACCUM}: need BATCH_SIZE >= 1 and "
                             "GRAD_ACCUM >= 0 (0: the memory plan splits the batch)")

    def train_config(self, output_dir: str, **task: Any) -> TrainConfig:
        """The trainer's settings from these parameters; ``task``: what the track adds (answer_ids, ...)."""
        return TrainConfig(
            output_dir=str(output_dir), epochs=self.EPOCHS, max_steps=self.MAX_STEPS if self.MAX_STEPS > 0 else -1,
            learning_rate=self.LEARNING_RATE, batch_size=self.BATCH_SIZE, grad_accum=self.GRAD_ACCUM,
            max_length=self.MAX_LENGTH, seed=self.SEED, eval_steps=self.EVAL_STEPS or None,  # type: ignore[attr-defined]
            save_steps=self.SAVE_STEPS, logging_steps=self.LOGGING_STEPS, report_to=self.REPORT_TO,
            lora=LoraSettings.from_config(self), merge=self.MERGE, resume=self.RESUME,
            gradient_checkpointing=plan.checkpointing(self.GRADIENT_CHECKPOINTING), **task)
