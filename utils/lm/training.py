"""LoRA fine-tuning with trl's SFTTrainer on pre-tokenized examples, resumable after a kill.

Examples arrive as {"input_ids", "labels"} lists: the labels decide where the loss falls (answer
tokens only, or label words read at markers), so nothing here rebuilds them from the inputs. Before training
a memory plan (``utils.lm.plan``) splits the asked batch into what fits the device and turns gradient
checkpointing on where needed; it is printed, and the measured peak is printed after training.

Its parts: ``utils.lm.train_data`` (prompt and completion to token ids, the dataset, the collator),
``utils.lm.loss`` (the answers-only loss and the trainer class that uses it), ``utils.lm.resume`` (a run's
identity and which checkpoint it may resume from); this module holds the settings and the run itself.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from utils import env as env_module
from utils.io import folder_lock, notice, write_json_atomic
from utils.lm.batch import ANSWER_WEIGHTINGS
from utils.lm import lora, plan, sources
from utils.lm.loss import answer_weights, trainer_class
from utils.lm.resume import (RUN_FILE, checkpoint_state, make_room, promote, resume_plan, run_identity,
                             workspace)
from utils.lm.modeling import (
    LoadStrategy,
    LoraSettings,
    add_lora,
    choose_strategy,
    load_model,
    load_tokenizer,
    merge_adapter,
    replace_dir,
)
from utils.lm.train_data import collator, make_dataset

LEARNING_RATE = 2e-4  # the shared default (utils.lm.training_params); the ECF track's notebooks take 1e-3
REPORT_TO = ("none", "tensorboard", "wandb")


def check_schedule(report_to: str, epochs: float, max_steps: int) -> None:
    """The checks every training config shares (the notebooks' parameters and TrainConfig)."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to (notebook parameter REPORT_TO) must be one of {list(REPORT_TO)}, "
                         f"got {report_to!r}")
    if max_steps <= 0 and epochs <= 0:
        raise ValueError("set epochs > 0 or max_steps > 0 (notebook parameters EPOCHS, MAX_STEPS)")


@dataclass
class TrainConfig:
    """Training settings (notebook parameters map onto these)."""

    output_dir: str  # checkpoints, adapter/, merged/ and train_summary.json go here
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = LEARNING_RATE
    batch_size: int = 4  # sequences per device and optimizer step (per forward pass when grad_accum > 0)
    grad_accum: int = 1  # 0: the memory plan splits batch_size into passes that fit (effective batch batch_size)
    max_length: int = 1024  # longer examples are an error: shorten the prompt upstream
    seed: int = 42
    eval_steps: int | None = None  # None: evaluate each epoch (or at the end with max_steps)
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 10
    report_to: str = "none"  # none | tensorboard | wandb
    warmup_share: float = 0.03  # linear warm-up over this share of the total steps
    group_by_length: bool = True  # batches of similar length: less padding
    gradient_checkpointing: bool | None = False  # None: on only where the memory plan needs it
    lora: LoraSettings = field(default_factory=LoraSettings)
    merge: bool = False  # also write a merged full model to output_dir/merged
    resume: bool = True  # continue from the last checkpoint in output_dir
    # answer_ids: () -> the usual LM loss over the whole vocabulary at every labelled position; a set of
    # token ids (the seven label words, or yes/no) -> the loss is a softmax over just those ids, and the
    # LM head runs only at the labelled positions: a classification head made of the LM head's rows,
    # trained exactly as inference reads it (label scoring over the same ids)
    answer_ids: tuple[int, ...] = ()
    # with answer_ids: how each answer's loss is weighted by its frequency among the training answers:
    # "none" (every answer alike), "sqrt" (1 / sqrt(share)) or "inverse" (1 / share), rescaled so the
    # average answer keeps weight 1 (the loss scale, and so the learning rate, stay comparable)
    answer_weighting: str = "none"
    # with answer_ids: one factor per answer id multiplying its weight above (0: that answer's positions teach
    # nothing, their tokens stay in the text as context), rescaled the same way; (): every factor 1
    answer_scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_schedule(self.report_to, self.epochs, self.max_steps)
        if self.batch_size < 1 or self.grad_accum < 0:
            raise ValueError(f"batch_size={self.batch_size}, grad_accum={self.grad_accum}: need batch_size >= 1 "
                             "and grad_accum >= 0 (0: the memory plan splits the batch)")
        if not 0 <= self.warmup_share < 1:
            raise ValueError(f"warmup_share must be in [0, 1), got {self.warmup_share}")
        self.answer_ids = tuple(int(t) for t in self.answer_ids)
        if len(set(self.answer_ids)) != len(self.answer_ids) or len(self.answer_ids) == 1:
            raise ValueError(f"answer_ids must be () or at least two distinct token ids, got {self.answer_ids}")
        if self.answer_weighting not in ANSWER_WEIGHTINGS:
            raise ValueError(f"answer_weighting={self.answer_weighting!r}: use one of {list(ANSWER_WEIGHTINGS)}")
        if self.answer_weighting != "none" and not self.answer_ids:
            raise ValueError(f"answer_weighting={self.answer_weighting!r} needs answer_ids (the answers-only loss)")
        self.answer_scales = tuple(float(x) for x in self.answer_scales)
        if self.answer_scales and (len(self.answer_scales) != len(self.answer_ids) or min(self.answer_scales) < 0):
            raise ValueError(f"answer_scales {list(self.answer_scales)}: one factor >= 0 per answer id "
                             f"({len(self.answer_ids)}), or () for none")


@dataclass
class TrainResult:
    """What a training run did; also written to output_dir/train_summary.json."""

    model: str
    strategy: str
    output_dir: str
    adapter_dir: str
    merged_dir: str | None
    resumed_from: str | None
    global_step: int
    epoch: float
    train_loss_first: float | None
    train_loss_last: float | None
    eval_loss: float | None
    train_tokens: int  # non-pad tokens over the whole run, resumed parts included
    session_tokens: int  # non-pad tokens trained in this call (the throughput numerator)
    session_samples: int
    wall_s: float
    tokens_per_s: float
    samples_per_s: float
    peak_memory_mb: float
    peak_memory_kind: str  # "cuda_max_allocated" or "cpu_max_rss"
    world_size: int = 1  # processes that trained together (DDP/FSDP)
    fingerprint: str = ""  # the run's identity (run.json): model, settings and examples
    planned_memory_mb: float | None = None  # the memory plan's estimated peak (MiB), beside the measured one
    memory_plan: dict = field(default_factory=dict)  # plan.MemoryPlan: the split, checkpointing, the estimate
    lora_targets: list[str] = field(default_factory=list)  # the layers that got adapters (utils.lm.lora)
    trainable_parameters: int = 0  # LoRA weights trained
    total_parameters: int = 0  # the whole model's
    log_history: list[dict] = field(default_factory=list)



def _eval_schedule(cfg: TrainConfig, has_eval: bool) -> dict[str, Any]:
    """Evaluation every eval_steps, else each epoch, else at the last step of a max_steps run."""
    if not has_eval:
        return {"eval_strategy": "no"}
    if cfg.eval_steps:
        return {"eval_strategy": "steps", "eval_steps": cfg.eval_steps}
    if cfg.max_steps > 0:
        return {"eval_strategy": "steps", "eval_steps": cfg.max_steps}
    return {"eval_strategy": "epoch"}


def sft_config(cfg: TrainConfig, strategy: LoadStrategy, has_eval: bool):
    """Map TrainConfig onto trl's SFTConfig (data arrives tokenized: trl's preparation is skipped)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(cfg.output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=float(cfg.warmup_share),  # transformers 5: a float in [0, 1) is a share of the total steps
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,  # the first loss is the "before" of the learning curve
        report_to=cfg.report_to,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        bf16=strategy.precision == "bf16",
        fp16=strategy.precision == "fp16",
        use_cpu=strategy.device == "cpu",
        max_length=cfg.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        prediction_loss_only=True,  # eval reports its loss; gathering full-vocabulary logits only costs memory
        ddp_find_unused_parameters=False,  # every LoRA weight is used each step: skip DDP's extra graph walk
        disable_tqdm=False,
        **_eval_schedule(cfg, has_eval),
    )



def _barrier() -> None:
    """Wait for the other processes of a launched run (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def total_steps(cfg: TrainConfig, n_examples: int, world_size: int = 1) -> int:
    """Optimizer steps of the whole run, counted the way transformers' Trainer counts them."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(n_examples / (cfg.batch_size * world_size))
    per_epoch = max(batches // cfg.grad_accum + int(batches % cfg.grad_accum > 0), 1)
    return math.ceil(cfg.epochs * per_epoch)


def _restore_finished(trainer, checkpoint: str) -> None:
    """Load a finished run's adapter and state instead of training again (Trainer would add a step)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    set_peft_model_state_dict(trainer.model, load_file(str(Path(checkpoint) / "adapter_model.safetensors")))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))


def _logged_runtime(history: list[dict], wall: float, tokens_per_s: float) -> tuple[float, float]:
    """(training seconds, tokens per second) of a finished run from the last log entry that has them (the
    trainer logs its session's running time with each loss); ``wall``, ``tokens_per_s`` where none does."""
    for entry in reversed(history):
        if "train_runtime" in entry:
            return float(entry["train_runtime"]), float(entry.get("train_tokens_per_second", tokens_per_s))
    return wall, tokens_per_s


def _peak_memory(device: str) -> tuple[float, str]:
    """Peak CUDA allocation, or the process's max RSS on the CPU, in MiB."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"  # bytes on macOS, KiB on Linux


def _losses(history: list[dict], key: str) -> list[float]:
    """Values of ``key`` in the trainer's log history, in step order."""
    return [float(h[key]) for h in history if key in h]


def _save_adapter(trainer, out: Path, fingerprint: str) -> Path:
    """Save the adapter (+ tokenizer) to out/adapter atomically; all ranks call, rank 0 moves it."""
    tmp = out / f".adapter.tmp-{fingerprint}"  # the same name on every rank of this run, no other run's
    if trainer.is_fsdp_enabled:  # a sharded state dict would save no adapter weights
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(tmp))  # handles DDP/FSDP gathering; writes the tokenizer too
    final = out / "adapter"
    if trainer.is_world_process_zero():
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle nobody needs beside the adapter
        replace_dir(tmp, final)
    trainer.accelerator.wait_for_everyone()
    return final


def memory_plan(model: str, cfg: TrainConfig, strategy: LoadStrategy, train_examples: Sequence[dict],
                hardware: plan.Hardware | None = None) -> plan.MemoryPlan:
    """How ``cfg``'s batch fits ``strategy``'s device (``utils.lm.plan.plan_training``): sequences per pass,
    accumulation and gradient checkpointing for the longest training example."""
    longest = max((len(ex["input_ids"]) for ex in train_examples), default=cfg.max_length)
    return plan.plan_training(
        hardware or plan.hardware(strategy.device), sources.model_shape(model), batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum, gradient_checkpointing=cfg.gradient_checkpointing, longest=longest,
        max_length=cfg.max_length, lora=cfg.lora, lm_loss=not cfg.answer_ids,
        precision=plan.precision_of(strategy.device, strategy.quantization_config is not None, strategy.cpu_autocast))


def train(
    model: str,
    train_examples: list[dict],
    eval_examples: list[dict] | None,
    cfg: TrainConfig,
    *,
    strategy: LoadStrategy | None = None,
    callbacks: list | None = None,
) -> TrainResult:
    """LoRA-train ``model`` ("auto": this machine's model) on pre-tokenized examples with the split of the batch
    the memory plan chooses; resume from output_dir's last checkpoint if asked (only one this run wrote: the
    model, the settings and the examples must match, see ``run_identity``)."""
    model = plan.resolve_model(model)
    strategy = strategy or choose_strategy(model=model)
    cfg = replace(cfg, lora=lora.resolve(cfg.lora, model))  # "attention"/"mlp" -> this model's layer names
    memory = memory_plan(model, cfg, strategy, train_examples)
    cfg = replace(cfg, batch_size=memory.batch_size, grad_accum=memory.grad_accum,
                  gradient_checkpointing=memory.gradient_checkpointing)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    identity = run_identity(model, {**asdict(cfg), "cpu_autocast": strategy.cpu_autocast}, train_examples,
                            eval_examples)
    work = workspace(out, identity)  # beside a finished run of another identity, which stays usable till the end
    cfg = replace(cfg, output_dir=str(work))
    main_process = os.environ.get("RANK", "0") == "0"  # under a launcher every rank trains in ``work``
    if main_process:
        print(memory.describe(), flush=True)
        warning = env_module.ephemeral_warning(out)
        if warning:
            print(warning, flush=True)
    with folder_lock(out, "training run") if main_process else contextlib.nullcontext():
        return _train(model, train_examples, eval_examples, cfg, strategy, callbacks, out, identity, main_process,
                      memory)


def _train(model, train_examples, eval_examples, cfg, strategy, callbacks, final: Path, identity: dict,
           main_process: bool, memory: plan.MemoryPlan) -> TrainResult:
    """The run in ``cfg.output_dir``, moved into ``final`` when it finishes (``resume.promote``) where they differ."""
    import torch
    from transformers import set_seed

    set_seed(cfg.seed)  # the LoRA initialisation is random
    tokenizer = load_tokenizer(model)
    base = load_model(model, strategy=strategy, for_training=True, gradient_checkpointing=cfg.gradient_checkpointing)
    lm = add_lora(base, cfg.lora, strategy, cfg.gradient_checkpointing)
    trainable, total = lora.trainable_parameters(lm)
    if main_process:
        print(f"[emocause] LoRA r={cfg.lora.r} on {', '.join(cfg.lora.target_modules)} of {type(base).__name__}: "
              f"{plan.count(trainable)} trainable parameters of {plan.count(total)} ({trainable / total:.2%})",
              flush=True)
    train_ds = make_dataset(train_examples, cfg.max_length, "train")
    eval_ds = make_dataset(eval_examples, cfg.max_length, "eval") if eval_examples else None
    weights = answer_weights(train_examples, cfg.answer_ids, cfg.answer_weighting, cfg.answer_scales)
    if weights and main_process:
        scaled = f" x {list(cfg.answer_scales)}" if cfg.answer_scales else ""
        print(f"[emocause] answer loss weights ({cfg.answer_weighting}{scaled}): "
              + ", ".join(f"{tokenizer.decode([t]).strip()} {w:.2f}" for t, w in zip(cfg.answer_ids, weights)), flush=True)
    trainer = trainer_class(cfg.answer_ids, weights)(
        model=lm,
        args=sft_config(cfg, strategy, eval_ds is not None),
        data_collator=collator(tokenizer.pad_token_id),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if strategy.precision == "fp16":  # trl makes QLoRA adapters bf16; fp16 AMP (T4) wants fp32 masters
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    out, replacing = Path(cfg.output_dir), os.environ.get(env_module.REPLACE_ENV) == "1"
    resumed_from, stale, why = resume_plan(out, identity, cfg.resume)  # every rank decides before anyone writes
    _barrier()
    if main_process:  # a finished run of another identity is moved aside when this one ends, never deleted
        if out != final:
            notice(f"{final} holds a finished run of another identity: this run trains in {out} and takes its "
                   "place only when it finishes (until then the finished adapter stays in place and usable)")
        for line in make_room(out, identity, stale, why, replace=replacing):
            notice(line)
        write_json_atomic(out / RUN_FILE, identity)
    _barrier()
    saved = checkpoint_state(resumed_from)
    tokens_before = int(saved.get("num_input_tokens_seen", 0))
    if strategy.device == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    restored = bool(resumed_from) and saved["global_step"] >= total_steps(cfg, len(train_ds), trainer.args.world_size)
    if restored:
        _restore_finished(trainer, resumed_from)  # a rerun of a finished run: nothing left to train
    else:
        trainer.train(resume_from_checkpoint=resumed_from)
    wall = time.perf_counter() - start
    adapter_dir = _save_adapter(trainer, out, identity["fingerprint"])
    if trainer.is_world_process_zero():
        sources.write_notice(adapter_dir, model)  # Gemma's terms travel with what is made from it
    merged_dir = None
    if cfg.merge and trainer.is_world_process_zero():
        merged_dir = str(merge_adapter(model, adapter_dir, out / "merged"))
    history = [dict(h) for h in trainer.state.log_history]
    losses = _losses(history, "loss")
    eval_losses = _losses(history, "eval_loss")
    tokens = int(trainer.state.num_input_tokens_seen)
    session_tokens = tokens - tokens_before
    peak, kind = _peak_memory(strategy.device)
    planned = None if memory.estimate_gib is None else round(memory.estimate_gib * 1024, 1)
    tokens_per_s = round(session_tokens / wall, 2) if wall > 0 else 0.0
    if restored:  # this session trained nothing: report the run's own time, as the trainer logged it
        wall, tokens_per_s = _logged_runtime(history, wall, tokens_per_s)
        kind += ", restore only"  # the peak of loading the run back, not of training it
        if main_process:
            print(f"[emocause] restored the finished run from {Path(resumed_from).name}: nothing trained in this "
                  f"session ({tokens:,} tokens in {wall:,.0f} s of training, as the run logged it)", flush=True)
    elif main_process:
        against = f" vs {planned / 1024:.2f} GiB planned" if planned is not None else ""
        print(f"[emocause] peak memory {peak / 1024:.2f} GiB measured ({kind}){against}", flush=True)
    result = TrainResult(
        model=model,
        strategy=strategy.name,
        output_dir=str(final),
        adapter_dir=str(final / adapter_dir.name),
        merged_dir=merged_dir and str(final / Path(merged_dir).name),
        resumed_from=resumed_from,
        global_step=int(trainer.state.global_step),
        epoch=float(trainer.state.epoch or 0.0),
        train_loss_first=losses[0] if losses else None,
        train_loss_last=losses[-1] if losses else None,
        eval_loss=eval_losses[-1] if eval_losses else None,
        train_tokens=tokens,
        session_tokens=session_tokens,
        session_samples=trainer.session_samples,
        wall_s=round(wall, 3),
        tokens_per_s=tokens_per_s,
        samples_per_s=round(trainer.session_samples / wall, 4) if wall > 0 else 0.0,
        peak_memory_mb=round(peak, 1),
        peak_memory_kind=kind,
        world_size=int(trainer.args.world_size),
        fingerprint=identity["fingerprint"],
        planned_memory_mb=planned,
        memory_plan=memory.as_dict(),
        lora_targets=list(cfg.lora.target_modules),
        trainable_parameters=trainable,
        total_parameters=total,
        log_history=history,
    )
    if trainer.is_world_process_zero():
        write_json_atomic(out / "train_summary.json", asdict(result))
        if out != final:
            for line in promote(out, final, identity, replace=replacing):
                notice(line)
    _barrier()
    return result
