"""Write a merged transformers model (a safetensors folder) as one GGUF file that llama.cpp, Ollama and
transformers' own GGUF loader read: the weights under GGUF's tensor names, the config as GGUF metadata and
the tokenizer as GGUF's vocabulary, merges and special-token ids.

Only the architectures in ``ARCHITECTURES`` are mapped (Llama's, which SmolLM2 and TinyLlama share); any
other is an error that names it. Tensor names come from the ``gguf`` package's own table. llama.cpp applies
rotary embeddings to interleaved pairs where transformers' Llama rotates the two halves of each head, so the
query and key rows are reordered head by head (``_interleave_heads``); transformers undoes exactly that on
load. Quantisation: ``f16`` keeps 1-D tensors (norms) in float32 as llama.cpp does; ``q8_0`` stores the 2-D
weights whose rows divide into 32-value blocks as Q8_0 (one scale per 32 values) and the rest as f16/f32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from utils.io import atomic_path

ARCHITECTURES = {"LlamaForCausalLM": "llama"}  # transformers class -> GGUF architecture
QUANTS = ("f16", "q8_0")
Q8_BLOCK = 32  # values per Q8_0 block: a row must divide into whole blocks
TOLERANCE = {"f16": 0.01, "q8_0": 0.05}  # max |logit difference| over the largest |logit| a round trip allows


class UnmappedArchitecture(ValueError):
    """The model's architecture has no GGUF mapping here."""


def gguf_architecture(config: Any) -> str:
    """The GGUF architecture of a transformers config; an error naming the architecture when unmapped."""
    names = list(getattr(config, "architectures", None) or [type(config).__name__])
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UnmappedArchitecture(f"architecture {', '.join(names)} (model_type {getattr(config, 'model_type', '?')!r}) "
                               f"has no GGUF mapping here: the GGUF writer maps {sorted(ARCHITECTURES)}; the merged "
                               "safetensors folder is still usable")


def _interleave_heads(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from [first halves, second halves] to interleaved pairs (GGUF's rotary layout)."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _rope_theta(config: Any) -> float:
    """rope_theta from a transformers 4 (attribute) or 5 (rope_parameters) config; unscaled rope only."""
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise UnmappedArchitecture(f"rope scaling {kind!r} has no GGUF mapping here (only unscaled rope)")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ValueError("the config has no rope_theta")
    return float(theta)


def _tensor_type(array: np.ndarray, quant: str):
    """(data to write, GGML type) of one tensor under ``quant``."""
    from gguf import GGMLQuantizationType, quants

    if array.ndim == 1:  # norms and biases: tiny, and precision-sensitive
        return array.astype(np.float32), GGMLQuantizationType.F32
    if quant == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
        return quants.quantize(array.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return array.astype(np.float16), GGMLQuantizationType.F16


def _add_config(writer: Any, config: Any, quant: str) -> None:
    """The Llama hyper-parameters as GGUF metadata."""
    from gguf import LlamaFileType

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else LlamaFileType.MOSTLY_F16)


def _add_tensors(writer: Any, model: Any, config: Any, quant: str) -> int:
    """Every weight under its GGUF name (tied output head left out, as GGUF expects); returns how many."""
    from gguf import MODEL_ARCH, get_tensor_name_map

    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    count = 0
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, _, suffix = hf_name.rpartition(".")
        gguf_stem = names.get_name(stem)
        if gguf_stem is None:
            raise UnmappedArchitecture(f"tensor {hf_name} has no GGUF name in the llama mapping")
        array = tensor.detach().float().cpu().numpy()
        if stem.endswith("self_attn.q_proj"):
            array = _interleave_heads(array, heads)
        elif stem.endswith("self_attn.k_proj"):
            array = _interleave_heads(array, kv_heads)
        data, kind = _tensor_type(array, quant)
        writer.add_tensor(f"{gguf_stem}.{suffix}", data, raw_dtype=kind)  # Q8_0: shape read from the bytes
        count += 1
    return count


def check_tokenizer(tokenizer: Any) -> dict:
    """The tokenizer's JSON spec where this writer maps it (byte-level BPE); raises UnmappedArchitecture naming it."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = spec.get("model", {}).get("type")
    byte_level = any(p.get("type") == "ByteLevel" for p in _flatten(spec.get("pre_tokenizer")))
    if kind != "BPE" or not byte_level:
        raise UnmappedArchitecture(f"tokenizer {type(tokenizer).__name__} ({kind} model, byte-level: {byte_level}) "
                                   "has no GGUF mapping here: only byte-level BPE")
    return spec


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """A byte-level BPE tokenizer (GPT-2's kind: SmolLM2, the tiny test model) as GGUF's "gpt2" vocabulary."""
    from gguf import TokenType

    spec = check_tokenizer(tokenizer)
    model = spec.get("model", {})
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may have rows past the tokenizer's last id
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        if i not in by_id:
            types.append(TokenType.UNUSED)
        elif i in added:
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if token_id is not None:
            setter(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _flatten(part: dict | None) -> list[dict]:
    """A tokenizer.json component and the members of a Sequence of them."""
    if not part:
        return []
    inner = part.get("pretokenizers") or part.get("pre_tokenizers") or []
    return [part, *[p for q in inner for p in _flatten(q)]]


def write_gguf(merged_dir: str | os.PathLike, out_file: str | os.PathLike, quant: str = "f16",
               name: str | None = None, license: str | None = None) -> Path:
    """Write the merged model in ``merged_dir`` (weights + tokenizer) as one GGUF file, atomically."""
    import torch
    from gguf import GGUFWriter
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: use one of {list(QUANTS)}")
    config = AutoConfig.from_pretrained(merged_dir)
    arch = gguf_architecture(config)  # before loading any weights
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    out = Path(out_file)
    with atomic_path(out) as tmp:
        writer = GGUFWriter(str(tmp), arch)
        writer.add_name(name or Path(merged_dir).name)
        if license:
            writer.add_license(license)
        _add_config(writer, config, quant)
        _add_tokenizer(writer, tokenizer, config.vocab_size)
        _add_tensors(writer, model, config, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out
