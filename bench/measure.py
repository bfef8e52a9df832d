"""Measuring instruments: the machine, peak memory per phase, step timing, FLOPs and padding."""

from __future__ import annotations

import datetime
import gc
import math
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

MIB = 2**20
MEGABATCH = 50  # batches per length-sorted megabatch, as transformers' LengthGroupedSampler forms them


# ---------------------------------------------------------------- the machine

def _proc_field(path: str, key: str) -> str | None:
    """The value of ``key:`` in a /proc file (Linux), else None."""
    try:
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, GPU, library versions, date and load: what a reader needs to weigh the numbers."""
    import peft
    import torch
    import transformers
    import trl

    from utils.lm.modeling import cpu_has_fast_bf16

    ram_kb = _proc_field("/proc/meminfo", "MemTotal")
    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # PASSIVE (the bench's default, kind to a shared CPU) lets OpenMP threads sleep between kernels,
        # which costs short forward passes the most; ACTIVE spins
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_bf16_hardware": cpu_has_fast_bf16(),
        "ram_gib": round(int(ram_kb.split()[0]) / 2**20, 1) if ram_kb else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
    }


MEASURED_CODE = ("utils/ecf/prompts.py", "utils/ecf/prompts_per_utterance.py", "utils/ecf/examples.py",
                 "utils/ecf/predict.py", "utils/lm/training.py", "utils/lm/train_data.py", "utils/lm/loss.py",
                 "utils/lm/inference.py", "utils/lm/modeling.py", "utils/lm/batch.py", "bench/run.py",
                 "bench/measure.py")


def code_fingerprint(root: Path) -> dict[str, Any]:
    """The git commit and a content hash of each file whose code is measured: files change between runs."""
    import hashlib
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
             for name in MEASURED_CODE if (root / name).is_file()}
    return {"git_commit": commit, "sha256_12": files}


def load_average() -> list[float] | None:
    """1/5/15-minute load average: the CPU is shared, so other jobs' load is part of the result."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------- memory

def _status_kib(key: str) -> int | None:
    value = _proc_field("/proc/self/status", key)
    return int(value.split()[0]) if value else None


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so a phase starts from what is really in use."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the delta then includes reused heap
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of one phase: CUDA max allocated, else this process's peak RSS with its mark reset first.

    RSS is process-wide, so freed heap is first handed back to the OS and ``delta_mb`` (peak minus the
    RSS at the start of the phase) is the phase's own cost; where the peak cannot be reset, the
    lifetime peak (ru_maxrss) is reported and says so.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.result: dict[str, Any] = {}

    def __enter__(self) -> "PeakMemory":
        import torch

        gc.collect()
        self.cuda = self.device == "cuda" and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _release_free_heap()
            self.resettable = _reset_peak_rss()
            self.start = (_status_kib("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.cuda:
            peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
        elif self.resettable and _status_kib("VmHWM") is not None:
            peak, kind = _status_kib("VmHWM") * 1024, "cpu_peak_rss_of_phase"
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "cpu_max_rss_of_process"
        self.result = {"peak_mb": round(peak / MIB, 1), "delta_mb": round((peak - self.start) / MIB, 1),
                       "memory_kind": kind}


# ---------------------------------------------------------------- time

def step_timer():
    """A TrainerCallback that stamps (wall time, process CPU time, tokens seen) after every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the step's kernels must have run before the stamp
            self.marks.append((time.perf_counter(), time.process_time(), int(state.num_input_tokens_seen)))

    return StepTimer()


def steady_rates(marks: Sequence[tuple[float, float, int]]) -> tuple[float | None, float | None]:
    """(tokens per wall second, tokens per CPU second) from the end of step 1 to the end of the last step.

    Step 1 carries one-off costs; CPU seconds (all threads of this process) barely move when other
    jobs share the machine, wall seconds do.
    """
    if len(marks) < 2:
        return None, None
    tokens = marks[-1][2] - marks[0][2]
    wall, cpu = marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]
    return (tokens / wall if wall > 0 else None), (tokens / cpu if cpu > 0 else None)


class Stopwatch:
    """Wall and process CPU seconds of a block."""

    def __enter__(self) -> "Stopwatch":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_s, self.cpu_s = time.perf_counter() - self.wall0, time.process_time() - self.cpu0


# ---------------------------------------------------------------- FLOPs

def parameter_counts(config: Any, lora_r: int, lora_targets: Sequence[str]) -> dict[str, int]:
    """Base and LoRA parameter counts of a model config, built on the meta device (no weights made)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base = sum(p.numel() for p in model.parameters())  # tied embeddings are counted once
    lora = sum(lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora_targets)
    return {"base": int(base), "lora": int(lora), "total": int(base + lora)}


def mfu(params: int, tokens: float, seconds: float, peak_tflops: float) -> float | None:
    """Model FLOPs utilisation, counting 6 x parameters x tokens per training step (the usual convention)."""
    if seconds <= 0 or tokens <= 0 or peak_tflops <= 0:
        return None
    return 6.0 * params * tokens / seconds / (peak_tflops * 1e12)


# ---------------------------------------------------------------- padding

def padded_tokens(lengths: Sequence[int], batch_size: int, grouped: bool, seed: int = 0) -> int:
    """Tokens one epoch computes once each batch is padded to its longest sequence (simulated sampler).

    ``grouped`` sorts each megabatch of ``MEGABATCH`` batches by length, as length-grouped sampling does.
    """
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    if grouped:
        size = MEGABATCH * batch_size
        order = [i for k in range(0, len(order), size)
                 for i in sorted(order[k:k + size], key=lambda i: -lengths[i])]
    total = 0
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        total += max(lengths[i] for i in batch) * len(batch)
    return total


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    """Optimizer steps of one epoch without gradient accumulation."""
    return math.ceil(n_examples / batch_size)
