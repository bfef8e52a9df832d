"""Model loading: one strategy chosen by the hardware, LoRA adapters, label tokens.

CUDA gets 4-bit NF4 QLoRA (bf16 compute where the GPU has it, fp16 on a T4) where the GPU has under 20 GiB or
the model's 16-bit weights would fill a quarter of it, else 16-bit weights (``utils.lm.plan.should_quantize``);
the CPU gets float32 weights, computed under bf16 autocast where it has bf16 hardware (``utils.lm.precision``).
Attention is PyTorch's SDPA everywhere (transformers 5's default too, made explicit so a
model without it fails instead of falling back to eager): its flash or memory-efficient kernels never hold
the T x T attention matrix (CPU: the flash kernel for CPUs, padding mask included; T4: the memory-efficient
kernel, flash needs sm80; A100: flash without padding, memory-efficient with it).
Where the weights come from (alias, GGUF, folder, hub id, "auto") is ``utils.lm.sources``. Nothing here
unpickles: weights come from safetensors or GGUF, adapters from safetensors. torch, transformers and
peft are imported where they are used: the configs and the scorer import this module and stay light.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from utils import env as env_module
from utils.io import temp_dir_beside
from utils.lm import lora, plan, precision, sources
from utils.lm.lora import LoraSettings
from utils.lm.sources import local_source


@dataclass(frozen=True)
class LoadStrategy:
    """How to load a model on this hardware."""

    name: str  # "qlora-nf4" or "full-precision" (float32 on the CPU, bf16/fp16 on CUDA)
    device: str  # "cuda" or "cpu"
    torch_dtype: Any  # torch dtype of the non-quantised weights and of the compute
    quantization_config: Any = None  # transformers.BitsAndBytesConfig or None
    attn_implementation: str = "sdpa"  # no T x T matrix; FlashAttention 2 is absent on T4s and CPUs
    cpu_autocast: bool = False  # bf16 autocast on the CPU (weights stay fp32): ~2x a LoRA step on AMX CPUs

    @property
    def precision(self) -> str:
        """Trainer mixed-precision flag: "bf16", "fp16" or "no"."""
        import torch

        if self.device != "cuda":
            return "bf16" if self.cpu_autocast else "no"
        return "bf16" if self.torch_dtype == torch.bfloat16 else "fp16"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16: ``precision.bf16_hardware``)."""
    return precision.bf16_hardware() is not None


def choose_strategy(
    env: Any = None, quantize: bool | None = None, cpu_bf16: bool | None = None, model: str | None = None
) -> LoadStrategy:
    """CUDA -> 4-bit NF4 double-quantised (bf16 or fp16 compute) or 16-bit; CPU -> float32, unquantised.

    ``quantize`` None decides by the GPU's memory and ``model``'s size (``plan.should_quantize``: 4-bit under
    20 GiB, or where the 16-bit weights would fill a quarter of the GPU, or with no ``model`` to measure);
    True/False forces it. On the CPU, bf16 autocast (weights stay float32): ``cpu_bf16`` None decides at run
    time (``precision.cpu_bf16``: the hardware, or $EMOCAUSE_CPU_PRECISION; printed), True where the CPU has
    bf16 hardware (``python -m bench --cpu-bf16``), False never.
    """
    import torch

    if env is None:
        env = env_module.detect()
    if env.device != "cuda":
        autocast = precision.cpu_bf16() if cpu_bf16 is None else cpu_bf16 and cpu_has_fast_bf16()
        return LoadStrategy("full-precision", "cpu", torch.float32, None, "sdpa", cpu_autocast=autocast)
    dtype = torch.bfloat16 if env.bf16 else torch.float16  # a T4 has no bf16
    if quantize is None:
        quantize = model is None or plan.should_quantize(plan.hardware("cuda", env), sources.model_shape(model))
    if not quantize:
        return LoadStrategy("full-precision", "cuda", dtype, None, "sdpa")
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    return LoadStrategy("qlora-nf4", "cuda", dtype, bnb, "sdpa")


def autocast(strategy: LoadStrategy):
    """The inference-time autocast of ``strategy``: bf16 on CPUs when cpu_autocast is set, else a no-op."""
    import contextlib

    import torch

    if strategy.device == "cpu" and strategy.cpu_autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """Load the tokenizer of ``model``, with a pad token (eos when it has none) and its chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local_source(model), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(folder: str | os.PathLike) -> bool:
    """A LoRA adapter folder with safetensors weights."""
    return (Path(folder) / ADAPTER_WEIGHTS).is_file()


def check_adapter(folder: str | os.PathLike, hint: str = "save adapters with save_pretrained") -> Path:
    """``folder`` when it holds safetensors adapter weights; peft would torch.load an adapter_model.bin,
    so anything else is refused (no pickle loads)."""
    if not is_adapter(folder):
        raise FileNotFoundError(f"{folder} is not a LoRA adapter folder with {ADAPTER_WEIGHTS}; {hint}")
    return Path(folder)


def load_model(
    model: str,
    *,
    strategy: LoadStrategy | None = None,
    adapter: str | os.PathLike | None = None,
    for_training: bool = False,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
):
    """Load a causal LM with ``strategy`` (default: chosen by the hardware and the model's size), optionally
    with a LoRA adapter."""
    from transformers import AutoModelForCausalLM

    model = plan.resolve_model(model)
    strategy = strategy or choose_strategy(model=model)
    kwargs: dict[str, Any] = dict(
        dtype=strategy.torch_dtype,
        attn_implementation=strategy.attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,  # never fall back to pickled .bin weights
    )
    if strategy.quantization_config is not None:
        kwargs["quantization_config"] = strategy.quantization_config
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if strategy.device == "cuda" and not fsdp:  # FSDP places the shards itself
        kwargs["device_map"] = {"": env_module.torch_device()}  # one GPU per DDP process
    lm = AutoModelForCausalLM.from_pretrained(local_source(model), **kwargs)
    if strategy.cpu_autocast and not for_training:  # training: the trainer's bf16 flag autocasts
        precision.autocast_forwards(lm)
    if gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
    if adapter is not None:
        from peft import PeftModel

        if Path(adapter).is_dir():  # a hub id goes to peft as it is
            check_adapter(adapter)
        lm = PeftModel.from_pretrained(lm, str(adapter), is_trainable=for_training)
    if for_training:
        lm.train()
    else:
        lm.eval()
    return lm


def add_lora(model, settings: LoraSettings, strategy: LoadStrategy, gradient_checkpointing: bool = False):
    """Wrap ``model`` with fresh LoRA adapters on the layers ``settings`` name (group names resolved by the model's
    own module names: ``utils.lm.lora``); k-bit preparation first on the QLoRA strategy."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    settings = lora.resolve(settings, model)
    if strategy.name == "qlora-nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        fan_in_fan_out=lora.fan_in_fan_out(model, settings.target_modules),  # GPT-2's Conv1D stores in x out
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move a finished temp folder onto ``final`` (the old one is removed only once the new one is whole)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def merge_adapter(model_source: str, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Merge a LoRA adapter into full-precision base weights and save model + tokenizer (safetensors), with what
    llama.cpp's converter reads beside them (``llamacpp.complete_merged``: a sentencepiece tokenizer.model, GPT-2's
    n_ctx)."""
    import torch

    from utils.lm import llamacpp

    out = Path(out_dir)
    # merging into 4-bit weights would round the update away: merge in a float dtype on the CPU
    strategy = LoadStrategy("full-precision", "cpu", torch.float32, None, "sdpa")
    model = load_model(model_source, strategy=strategy, adapter=adapter_dir)
    merged = model.merge_and_unload()
    tmp = temp_dir_beside(out)
    try:
        merged.save_pretrained(tmp)
        load_tokenizer(model_source).save_pretrained(tmp)
        llamacpp.complete_merged(tmp, local_source(model_source))
        sources.write_notice(tmp, model_source)
        return replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _first_token(tokenizer, text: str, anchor: str = "\n") -> int:
    """First token of ``text`` as it appears after other text (sentencepiece adds a lone "▁" at the start)."""
    base = tokenizer.encode(anchor, add_special_tokens=False)
    ids = tokenizer.encode(anchor + text, add_special_tokens=False)
    if ids[: len(base)] == base and len(ids) > len(base):
        return ids[len(base)]
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"{text!r} encodes to no tokens")
    return ids[0]


def label_token_ids(tokenizer, words: Sequence[str], prefix: str = " ") -> list[int]:
    """The first token of ``prefix + word`` for each word; raise if two words share it."""
    ids = [_first_token(tokenizer, prefix + word) for word in words]
    owners: dict[int, list[str]] = {}
    for word, token in zip(words, ids):
        owners.setdefault(token, []).append(word)
    clashes = {tokenizer.convert_ids_to_tokens(t): ws for t, ws in owners.items() if len(ws) > 1}
    if clashes:
        detail = "; ".join(f"{ws} all start with token {tok!r}" for tok, ws in clashes.items())
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"{name}'s tokenizer starts label words with the same token ({detail}), and the conversation and fused "
            "styles read each label at one token: pick another MODEL, or STYLE='per_utterance', which generates "
            "whole words"
        )
    return ids


def weights_digest(model) -> str:
    """sha256 (16 hex digits) of the model's name and its adapter (LoRA) weights, by name: which weights
    produce its outputs (DDP replicas must agree on it; an inference checkpoint records it)."""
    digest = hashlib.sha256(str(getattr(getattr(model, "config", None), "name_or_path", "")).encode())
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


