"""A tiny randomly initialised Llama with a BPE tokenizer trained on local text: tests and --smoke runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _train_bpe(texts: Iterable[str], words: Sequence[str], vocab_size: int, specials: list[str]):
    """Byte-level BPE trained on ``texts``; the label words are repeated so each becomes one merge."""
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
