"""Training entry point that runs unchanged on one process or several (DDP, FSDP) through accelerate.

    python -m utils.ecf.launch --task emotion --model smollm2 --data data/ecf_sample.json --max-steps 20
    accelerate launch --config_file configs/accelerate/ddp.yaml -m utils.ecf.launch --task emotion ...

The flags are the parameters of notebooks 02/04 (``config.FinetuneConfig`` and
``CauseFinetuneConfig``: type, default and help come from the dataclass) in lower case with dashes
(``MAX_STEPS`` -> ``--max-steps``; booleans take ``--merge``, ``--merge false`` or ``--no-resume``), plus
``--task``, ``--output-dir`` and ``--data`` for ``DATA_PATH``. Under a launcher every process builds the same examples, the HF Trainer reads
RANK / WORLD_SIZE / LOCAL_RANK, shards the batches and all-reduces the gradients; only rank 0
writes files. From a notebook use ``notebook_launch`` (accelerate's fork launcher) or
``subprocess_launch`` (``accelerate launch`` in a child process, which also works after the
notebook touched the GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from utils import params
from utils.ecf import artifacts, config, examples, finetune
from utils.ecf.data import DataError
from utils.env import ROOT, resolve, use_persist_dir
from utils.io import Busy, read_json, write_json_atomic
from utils.lm.modeling import weights_digest

TASKS = config.TASKS
CONFIG_DIR = ROOT / "configs" / "accelerate"
DDP_CONFIG = CONFIG_DIR / "ddp.yaml"
SUMMARY_FILE = "launch_summary.json"
ALIASES = {"DATA_PATH": ("--data",)}  # the short names the README uses
LOG_PREFIX = "emocause.launch"


# ---------------------------------------------------------------- command line <-> notebook parameters

def config_class(task: str) -> type:
    """The notebook config of ``task``: 02's FinetuneConfig or 04's CauseFinetuneConfig."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}: use one of {list(TASKS)}")
    return config.FinetuneConfig if task == "emotion" else config.CauseFinetuneConfig


def flag(name: str) -> str:
    """``MAX_STEPS`` -> ``--max-steps``."""
    return "--" + name.lower().replace("_", "-")


def _boolean(text: str) -> bool:
    return params.from_text("flag", text, bool)


_boolean.__name__ = "bool"  # argparse names the type in its error: "invalid bool value: 'maybe'"


def build_parser(task: str | None = None) -> argparse.ArgumentParser:
    """One flag per parameter of ``task``'s notebook config (every cause one when ``task`` is None, as
    ``--help`` shows them): its type, default and help from the dataclass; booleans also take ``--no-<flag>``
    and a bare ``--<flag>`` for true. Plus ``--task`` and ``--output-dir``."""
    cls = config_class(task or "cause")
    parser = argparse.ArgumentParser(prog="python -m utils.ecf.launch", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)  # no silent prefix typos
    parser.add_argument("--task", required=True, choices=TASKS, help="emotion (notebook 02) or cause (04)")
    parser.add_argument("--output-dir", default=None, help="default: CHECKPOINT_DIR/<task>/<style>")
    kinds = params.field_types(cls)
    for field in dataclasses.fields(cls):
        kind = kinds[field.name]
        names = [flag(field.name), *ALIASES.get(field.name, ())]
        text = f"{params.help_of(field)} (default: {field.default})".replace("%", "%%")  # argparse %-formats help
        if kind is bool:
            parser.add_argument(*names, dest=field.name, type=_boolean, nargs="?", const=True, default=field.default,
                                metavar="{true,false}", help=text)
            parser.add_argument("--no-" + flag(field.name)[2:], dest=field.name, action="store_false",
                                help=f"{flag(field.name)} false")
        else:
            parser.add_argument(*names, dest=field.name, type=kind, default=field.default, metavar=field.name,
                                help=text)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, Any, Path | None]:
    """(task, validated notebook config, output dir or None); a cause flag on the emotion task is an error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    task = build_parser().parse_known_args(argv)[0].task  # exits naming a missing or unknown --task
    parser = build_parser(task)
    parsed, unknown = parser.parse_known_args(argv)
    given = {option.split("=")[0] for option in unknown}
    emotion_fields = config_class("emotion").__dataclass_fields__
    cause_only = [f.name for f in dataclasses.fields(config.CauseFinetuneConfig)
                  if f.name not in emotion_fields and flag(f.name) in given]
    if cause_only:
        raise params.ConfigError(f"{', '.join(cause_only)} ({', '.join(map(flag, cause_only))}): "
                                 f"a parameter of the cause task only, not of --task {task}")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    cls = config_class(task)
    cfg = cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(cls)})
    return task, cfg, resolve(parsed.output_dir) if parsed.output_dir else None


def to_argv(task: str, cfg: Any, output_dir: str | os.PathLike | None = None) -> list[str]:
    """The command-line flags that ``parse_args`` turns back into ``task`` and ``cfg``."""
    argv = ["--task", task]
    if output_dir is not None:
        argv += ["--output-dir", str(resolve(output_dir))]
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, bool):
            argv += [flag(field.name), str(value).lower()]
        else:
            argv += [flag(field.name), repr(value) if isinstance(value, float) else str(value)]
    return argv


# ---------------------------------------------------------------- one process of a (possibly) distributed run

def fsdp_enabled() -> bool:
    """accelerate's FSDP launcher sets ACCELERATE_USE_FSDP in every process."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def log(message: str) -> None:
    """One line to stdout, tagged with this process's rank (launchers interleave the processes' output)."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    print(f"{LOG_PREFIX} [rank {rank}/{world}] {message}", flush=True)


def build_examples(task: str, cfg: Any, tokenizer: Any,
                   splits: dict[str, list[dict]] | None = None) -> tuple[list[dict], list[dict], dict]:
    """Training and eval examples of ``task`` from DATA_PATH's split, as notebooks 02/04 build them."""
    splits = splits or artifacts.load_splits(cfg)
    span_train: list[dict] = []
    if task == "emotion":
        train = examples.task_examples(cfg, task, splits["train"], tokenizer)
        val = examples.task_examples(cfg, task, splits["val"], tokenizer)
    else:
        convs = artifacts.cause_training_convs(cfg, splits["train"])
        span_train, span_val = examples.span_training(cfg, splits, tokenizer)  # Subtask 1, same adapter
        train = examples.task_examples(cfg, task, convs, tokenizer) + span_train
        val = examples.task_examples(cfg, task, splits["val"], tokenizer) + span_val
    stats = {"train": examples.example_stats(train), "eval": examples.example_stats(val),
             "span_examples": len(span_train) if task == "cause" else 0}
    return train, val, stats


def _replica_probe():
    """A callback that hashes the trainable weights at the end of training (DDP replicas must agree)."""
    from transformers import TrainerCallback

    class ReplicaProbe(TrainerCallback):
        digest: str | None = None

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None and not fsdp_enabled():  # FSDP ranks hold different shards
                self.digest = weights_digest(model)

    return ReplicaProbe()


def _process_group(state: Any, strategy: Any) -> dict:
    """How this run was spread: processes, accelerate's distributed type, backend and precision."""
    return {"world_size": state.num_processes, "distributed_type": str(state.distributed_type),
            "backend": state.backend, "strategy": strategy.name, "precision": strategy.precision}


def train_process(task: str, cfg: Any, output_dir: str | os.PathLike | None = None) -> dict:
    """Train ``task`` in this process (one of several under a launcher); rank 0 writes the summary."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from utils.lm.modeling import choose_strategy, load_tokenizer

    cfg = config.apply_smoke(cfg)
    splits = artifacts.load_splits(cfg)  # bad data stops here, before any process group or model
    out = resolve(output_dir) if output_dir else artifacts.task_dir(cfg, task)
    # FSDP shards float weights; 4-bit QLoRA under FSDP needs a packed storage dtype modeling does not set;
    # otherwise 4-bit or 16-bit as the notebooks load it (by the GPU's memory and the model's size)
    strategy = choose_strategy(quantize=False if fsdp_enabled() else None, model=cfg.MODEL)
    # joining the process group now (the Trainer reuses it) lets rank 0 convert a GGUF model first
    state = PartialState(cpu=strategy.device == "cpu")
    log(f"{state.distributed_type} backend={state.backend} device={state.device} strategy={strategy.name}")
    with state.main_process_first():
        tokenizer = load_tokenizer(cfg.MODEL)
    train_examples, eval_examples, stats = build_examples(task, cfg, tokenizer, splits)
    probe = _replica_probe()
    start = time.perf_counter()
    result = finetune.finetune(cfg, task, train_examples, eval_examples, {"spans": stats["span_examples"] > 0},
                               out=out, strategy=strategy, callbacks=[probe],
                               main_process=PartialState().is_main_process)
    wall = time.perf_counter() - start
    state = PartialState()  # the Trainer rebuilt the shared state on the same process group
    digests = gather_object([{"rank": state.process_index, "lora_sha256": probe.digest}])
    summary = {"task": task, "style": cfg.STYLE, "model": cfg.MODEL, "data": str(cfg.DATA_PATH),
               "output_dir": str(out), "adapter_dir": result.adapter_dir, **_process_group(state, strategy),
               "examples": stats, "replicas": digests,
               "replicas_in_sync": None if fsdp_enabled() else len({d["lora_sha256"] for d in digests}) == 1,
               "wall_s": round(wall, 3),
               "train": {k: v for k, v in dataclasses.asdict(result).items() if k != "log_history"}}
    if state.is_main_process:  # one writer: the other ranks would race on the same files
        # the decision rule on val, as notebooks 02/04 choose it: 05 reads the cut-offs from task.json
        tuning = finetune.tune_rule(cfg, task, tokenizer, splits["val"], out=out)
        summary["decision_rule"] = None if tuning is None else \
            {k: tuning[k] for k in ("offsets", "threshold", "weighted_f1") if k in tuning}
        write_json_atomic(out / SUMMARY_FILE, summary)
        log(f"wrote {out / SUMMARY_FILE}")
    state.wait_for_everyone()  # nobody leaves (and tears the group down) before rank 0 has written
    log(f"done: step {result.global_step}, lora_sha256={probe.digest}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m utils.ecf.launch`` or ``accelerate launch -m utils.ecf.launch``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        task, cfg, output_dir = parse_args(argv)
    except ValueError as e:  # a value the notebook config refuses (ConfigError included): no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    use_persist_dir(cfg.PERSIST_DIR)  # --persist-dir, else the folder the launching notebook chose
    try:
        train_process(task, cfg, output_dir)
    except (DataError, FileNotFoundError, Busy) as e:  # bad data or model path, a busy folder: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------- launching several processes

def free_port() -> int:
    """A TCP port nobody listens on now (the rendezvous of this run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(task: str, cfg: Any, output_dir: str | os.PathLike | None) -> dict:
    """The summary rank 0 wrote (a launcher returns nothing of its own)."""
    out = resolve(output_dir) if output_dir else artifacts.task_dir(config.apply_smoke(cfg), task)
    path = out / SUMMARY_FILE
    if not path.is_file():
        raise RuntimeError(f"the launched run wrote no {path}: read the processes' output above")
    return read_json(path)


def _check_no_cuda_yet() -> None:
    """accelerate forks the workers: a CUDA context made in this kernel before cannot cross a fork."""
    import torch

    if torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA is already initialised in this kernel (env.setup() or a model load did it), so "
            "notebook_launch cannot fork GPU workers: restart the kernel and call it before anything "
            "touches the GPU, or use launch.subprocess_launch(...) which starts fresh processes"
        )


def notebook_launch(task: str, cfg: Any, output_dir: str | os.PathLike | None = None, *,
                    num_processes: int = 2, port: int | None = None) -> dict:
    """Train with ``num_processes`` forked workers from inside a notebook (Kaggle 2xT4); returns rank 0's summary.

    Each worker loads its own copy of the model on GPU LOCAL_RANK (modeling.load_model maps the
    whole model there: device_map={"": LOCAL_RANK}), which is what 4-bit QLoRA under DDP needs.
    """
    from accelerate import notebook_launcher

    _check_no_cuda_yet()
    port = port or free_port()
    notebook_launcher(train_process, args=(task, cfg, output_dir), num_processes=num_processes, use_port=str(port))
    return _summary(task, cfg, output_dir)


@dataclass
class Launched:
    """What ``subprocess_launch`` ran and saw."""

    command: list[str]
    returncode: int
    log: str  # every process's output, interleaved as printed
    wall_s: float
    summary: dict | None  # rank 0's launch_summary.json (None when the run failed)


def launch_command(argv: Sequence[str], *, num_processes: int = 2, config_file: str | os.PathLike = DDP_CONFIG,
                   port: int | None = None) -> list[str]:
    """``accelerate launch --config_file ... -m utils.ecf.launch ARGV`` with this interpreter and a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(resolve(config_file)),
            "--num_processes", str(num_processes), "--main_process_port", str(port or free_port()),
            "-m", "utils.ecf.launch", *argv]


def subprocess_launch(task: str, cfg: Any, output_dir: str | os.PathLike | None = None, *, num_processes: int = 2,
                      config_file: str | os.PathLike = DDP_CONFIG, port: int | None = None,
                      env: dict[str, str] | None = None, echo: bool = True, check: bool = True) -> Launched:
    """Run ``accelerate launch`` in a child process (works whatever this kernel did), streaming its output."""
    command = launch_command(to_argv(task, cfg, output_dir), num_processes=num_processes,
                             config_file=config_file, port=port)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p)
    lines: list[str] = []
    start = time.perf_counter()
    with subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, encoding="utf-8", errors="replace") as proc:
        for line in proc.stdout:  # a notebook shows Python-level prints only: relay the child's lines
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
    wall = time.perf_counter() - start
    text = "".join(lines)
    if proc.returncode != 0 and check:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}; last lines:\n{text[-3000:]}")
    summary = _summary(task, cfg, output_dir) if proc.returncode == 0 else None
    return Launched(command, proc.returncode, text, round(wall, 3), summary)


if __name__ == "__main__":
    sys.exit(main())
