"""Random-weight models of a published shape, for speed and memory runs (issue 5's GPU rows).

Throughput and memory depend on the shape, not on the weights, so a GPU session can measure a
TinyLlama-1.1B or Llama-2-13B-shaped model without downloading one. The vocabulary is the prompt
tokenizer's (``--model``), so the batches are the real ECF prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the architectures' published config values (TinyLlama-1.1B-Chat v1.0, Llama-2-13b-chat)
SHAPES: dict[str, dict[str, Any]] = {
    "tinyllama-1.1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                       "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 2048},
    "llama2-13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                   "num_attention_heads": 40, "num_key_value_heads": 40, "max_position_embeddings": 4096},
}


def build_random(shape: dict[str, Any], tokenizer_source: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random LlamaForCausalLM of ``shape`` (bf16 where CUDA has it) with the tokenizer of
    ``tokenizer_source``; returns the folder, loadable like any model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from utils.env import detect
    from utils.lm.modeling import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_source)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, **shape)
    env = detect()  # bf16 only where the GPU has it natively (a T4 emulates it)
    cuda = env.device == "cuda"
    dtype = (torch.bfloat16 if env.bf16 else torch.float16) if cuda else torch.float32
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # a 13B model initialised in float32 would need 52 GB
    try:
        with torch.device("cuda" if cuda else "cpu"):  # initialising on the GPU takes seconds, not minutes
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    out = Path(out_dir)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return out
