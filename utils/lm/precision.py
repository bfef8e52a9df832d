"""Whether the CPU computes in bf16: under bf16 autocast where it multiplies bf16 in hardware (AMX or AVX512-BF16),
in fp32 elsewhere; decided at run time, printed once per process, and overridden by $EMOCAUSE_CPU_PRECISION.

Measured on an Intel Xeon with AMX: bf16 matrix products 4.3x faster than fp32 and a SmolLM2 LoRA step about 2x
faster under ``torch.autocast("cpu", dtype=torch.bfloat16)``; a CPU without bf16 hardware (AMD EPYC, AVX2) gains
nothing, so it stays in fp32 there, as before. The weights stay fp32 either way: autocast runs the matrix products
in bf16 and keeps softmaxes and losses in fp32. Training asks the trainer for it (``bf16=True`` with ``use_cpu``:
accelerate wraps the model's forward in CPU autocast); inference wraps the forwards it calls (``autocast_forwards``).
CUDA never asks: its strategy has its own dtype (``utils.lm.modeling.choose_strategy``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

PRECISION_ENV = "EMOCAUSE_CPU_PRECISION"
CHOICES = ("auto", "bf16", "fp32")  # auto: bf16 where the CPU has the hardware for it
MARK = "emocause_autocast"  # the attribute that says a model's forwards run under CPU bf16 autocast
_said: set[str] = set()  # the decision lines printed in this process


def bf16_hardware() -> str | None:
    """"AMX" or "AVX512-BF16" where the CPU multiplies bf16 in hardware (torch's own probes, else Linux's
    /proc/cpuinfo flags), else None."""
    import torch

    for name, probe, flag in (("AMX", "_is_amx_tile_supported", "amx_bf16"),
                              ("AVX512-BF16", "_is_avx512_bf16_supported", "avx512_bf16")):
        check = getattr(torch.cpu, probe, None)
        found = check() if check is not None else flag in _cpu_flags()
        if found:
            return name
    return None


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def requested() -> str:
    """$EMOCAUSE_CPU_PRECISION ("auto" where unset), checked."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{PRECISION_ENV}={value!r}: use one of {list(CHOICES)} (auto: bf16 where the CPU has AMX "
                         "or AVX512-BF16)")
    return value


def cpu_bf16(wanted: str | None = None) -> bool:
    """Whether the CPU runs under bf16 autocast: ``wanted`` ("auto", "bf16" or "fp32"; default
    $EMOCAUSE_CPU_PRECISION), "auto" by the hardware; the decision is printed once per process."""
    wanted = wanted or requested()
    hardware = bf16_hardware()
    use = wanted == "bf16" or (wanted == "auto" and hardware is not None)
    line = decision_line(wanted, hardware, use)
    if line not in _said:
        _said.add(line)
        print(line, flush=True)
    return use


def decision_line(wanted: str, hardware: str | None, use: bool) -> str:
    """"[emocause] CPU bf16: yes (AMX) -> autocast bf16", "... no (AVX2 only) -> fp32", with the override if any."""
    import torch

    has = f"yes ({hardware})" if hardware else f"no ({torch.backends.cpu.get_cpu_capability()} only)"
    forced = f" ({PRECISION_ENV}={wanted})" if wanted != "auto" else ""
    return f"[emocause] CPU bf16: {has} -> {'autocast bf16' if use else 'fp32'}{forced}"


def _under_autocast(forward: Callable) -> Callable:
    """``forward`` run inside a fresh CPU bf16 autocast context on each call (nested calls restore their own state)."""
    import torch

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(*args, **kwargs)
    return run


def autocast_forwards(model: Any) -> Any:
    """``model`` (a transformers causal LM, before an adapter wraps it) with its forward, its body's and its LM
    head's each under CPU bf16 autocast, so every read runs in bf16: the model's own forward (generate, the fused
    reads) and the body and head that ``utils.lm.inference`` calls apart. accelerate wraps a model's forward the
    same way for mixed-precision training (``Accelerator.prepare_model``)."""
    body = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for module in {id(m): m for m in (model, body, head) if m is not None}.values():
        module.forward = _under_autocast(module.forward)
    setattr(model, MARK, "bf16")
    return model


def autocasts(model: Any) -> bool:
    """Whether ``model`` (adapter-wrapped or not) reads under CPU bf16 autocast (``autocast_forwards``)."""
    return getattr(model, MARK, None) == "bf16"


def identity_tag(model: Any) -> str:
    """What an inference checkpoint's identity adds for ``model``'s precision: "+cpu-bf16" under CPU bf16 autocast,
    "" in fp32 (the identity reads had before)."""
    return "+cpu-bf16" if autocasts(model) else ""
