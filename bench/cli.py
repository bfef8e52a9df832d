"""Command line of ``python -m bench``: options -> BenchConfig -> run -> markdown on stdout + JSON file.

Plain argparse, not transformers' HfArgumentParser (which utils.ecf.launch uses): the options are not
BenchConfig's fields one to one. ``--stages emotion,cause`` fills a tuple field (HfArgumentParser hands
``tuple[str, ...]`` to argparse as the type, which splits the text into characters), four defaults
depend on ``--smoke``, ``--threads`` is no field, and learning_rate/test_frac/val_frac are fixed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

# read when torch is imported: spinning OpenMP threads slow a shared CPU many times over
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# (full run, --smoke) defaults of the options whose default depends on the mode
MODE_DEFAULTS = {"train_steps": (4, 3), "eval_limit": (25, 4), "batch_size": (4, 2), "max_length": (1024, 512)}


def parser() -> argparse.ArgumentParser:
    """The options; their help text says the defaults."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Train, run and score the per_utterance recipe and the conversation default side by side, "
                    "in one process; print markdown tables of the measurements and their ratios; write JSON.")
    p.add_argument("--smoke", action="store_true", help="tiny random Llama built from the data, CPU-sized run")
    p.add_argument("--data", default="", help="ECF file (Subtask 1 or 2 format); default: the bundled sample")
    p.add_argument("--limit", type=int, default=0, help="first N conversations of the file, before the split")
    p.add_argument("--model", default="smollm2", help="alias, folder, .gguf or hub id (default smollm2)")
    p.add_argument("--out", default="results_test/bench.json", help="JSON path, relative to the repo root")
    p.add_argument("--train-steps", type=int, help="optimizer steps per timed training run (4; smoke 3)")
    p.add_argument("--eval-limit", type=int, help="test conversations for inference (25; smoke 4)")
    p.add_argument("--batch-size", type=int, help="training batch size, both styles (4; smoke 2)")
    p.add_argument("--eval-batch-size", type=int, default=8, help="inference batch size (8)")
    p.add_argument("--max-length", type=int, help="token limit of both styles (1024; smoke 512)")
    p.add_argument("--stages", default="emotion,cause", help="comma-separated: emotion, cause")
    p.add_argument("--tokens-only", action="store_true", help="count training tokens only (no training, no inference)")
    p.add_argument("--no-inference", action="store_true", help="train only: the speed and memory rows")
    p.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPUs with bf16 hardware (AMX)")
    p.add_argument("--no-quantize", action="store_true", help="CUDA: bf16/fp16 LoRA instead of 4-bit QLoRA")
    p.add_argument("--peak-tflops", type=float, default=790.0,
                   help="dense peak TFLOP/s for MFU on CUDA (790: issue 5's H100 bf16 figure; 989 is the datasheet)")
    p.add_argument("--shape", default="", help="random weights of a published shape (tinyllama-1.1b, "
                   "llama2-13b) with --model's tokenizer, for speed/memory runs")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=42, help="split and LoRA initialisation seed (42, as the notebooks)")
    p.add_argument("--conversation-loss", default="answers", choices=("answers", "vocabulary"),
                   help="the conversation style's loss: a softmax over the answer words at the read positions "
                        "(answers, as the notebooks train) or the LM loss over the whole vocabulary there")
    return p


def config_from(args: argparse.Namespace):
    """BenchConfig from parsed options, filling the mode-dependent defaults."""
    from bench.run import BenchConfig

    mode = 1 if args.smoke else 0
    resolved = {k: getattr(args, k) if getattr(args, k) is not None else v[mode] for k, v in MODE_DEFAULTS.items()}
    return BenchConfig(data=args.data, limit=args.limit, model=args.model, out=args.out,
                       eval_batch_size=args.eval_batch_size, stages=tuple(s.strip() for s in args.stages.split(",")),
                       cpu_bf16=args.cpu_bf16, quantize=not args.no_quantize, peak_tflops=args.peak_tflops,
                       tokens_only=args.tokens_only, inference=not args.no_inference, smoke=args.smoke,
                       shape=args.shape, seed=args.seed,
                       conversation_loss=args.conversation_loss, **resolved)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON atomically."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cli = parser()
    args = cli.parse_args(argv)
    try:
        cfg = config_from(args)
    except ValueError as err:  # a bad option value: usage and the message, no traceback
        cli.error(str(err))
    import torch

    from bench import report, run
    from utils.ecf.data import DataError
    from utils.env import quiet_library_warnings

    quiet_library_warnings()  # as the notebooks do: peft reads transformers' deprecated is_gradient_checkpointing
    from utils.env import resolve
    from utils.io import write_json_atomic, write_text_atomic

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        record = run.run_bench(cfg, "python -m bench " + shlex.join(argv))
    except (DataError, FileNotFoundError) as err:  # bad data or model path: one line naming it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = report.markdown(record)
    print(text, flush=True)
    out = resolve(cfg.out)
    write_json_atomic(out, record)
    write_text_atomic(out.with_suffix(".md"), text + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0
