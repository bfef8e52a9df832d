"""Tiny randomly initialised causal LMs of every family users pick, each with a tokenizer of its family's kind
trained on local text: the tests, the architecture matrix and --smoke runs.

Tokenizer kinds, as the real models have them:
- ``chatml-bos``: byte-level BPE that adds ``<s>`` and has a ChatML template (the project's first tiny Llama);
- ``chatml``: byte-level BPE without BOS, ``<|endoftext|>`` padding, ChatML (Qwen2/3, Llama-3-like);
- ``gpt2``: byte-level BPE, ``<|endoftext|>`` as bos = eos = unk, no pad token, no BOS added, no template;
- ``sentencepiece``: ``▁``-prefixed pieces (Metaspace), BOS added (Llama-2, Mistral, Gemma, Phi-3), each with
  its own special tokens and template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_NO_BOS = CHATML_TEMPLATE.replace("{{ bos_token }}", "")
MISTRAL_TEMPLATE = (  # no system turn: it raises, as Mistral's template does
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerKind:
    """How a family's tokenizer looks: its pieces, special tokens, whether it adds BOS, its chat template."""

    pieces: str  # "byte-level" or "sentencepiece"
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None = None
    adds_bos: bool = True
    template: str | None = None
    extra: tuple[str, ...] = ()
    end_of_turn: str | None = None  # the template's end of an assistant turn, where it is not eos


KINDS = {
    "chatml-bos": TokenizerKind("byte-level", "<s>", "<|im_end|>", "<pad>", extra=("<|im_start|>",),
                                template=CHATML_TEMPLATE),
    "chatml": TokenizerKind("byte-level", None, "<|im_end|>", "<|endoftext|>", adds_bos=False,
                            extra=("<|im_start|>",), template=CHATML_NO_BOS),
    "gpt2": TokenizerKind("byte-level", "<|endoftext|>", "<|endoftext|>", None, unk="<|endoftext|>",
                          adds_bos=False),
    "mistral": TokenizerKind("sentencepiece", "<s>", "</s>", None, unk="<unk>", template=MISTRAL_TEMPLATE),
    "gemma": TokenizerKind("sentencepiece", "<bos>", "<eos>", "<pad>", unk="<unk>", template=GEMMA_TEMPLATE,
                           extra=("<start_of_turn>", "<end_of_turn>"), end_of_turn="<end_of_turn>"),
    "phi3": TokenizerKind("sentencepiece", "<s>", "<|endoftext|>", "<|endoftext|>", unk="<unk>",
                          template=PHI3_TEMPLATE, extra=("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
                          end_of_turn="<|end|>"),
}


@dataclass(frozen=True)
class Family:
    """A model family: its transformers config class, the config's own words, and its tokenizer kind."""

    config: str  # class name in transformers
    tokenizer: str  # a key of KINDS
    settings: dict = field(default_factory=dict)


_WIDTH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096)
FAMILIES = {
    "llama": Family("LlamaConfig", "chatml-bos", dict(_WIDTH)),
    "mistral": Family("MistralConfig", "mistral", dict(_WIDTH, sliding_window=4096)),
    "qwen2": Family("Qwen2Config", "chatml", dict(_WIDTH)),
    "qwen3": Family("Qwen3Config", "chatml", dict(_WIDTH, head_dim=16)),
    # a sliding window shorter than a conversation, as Gemma 3's 512 tokens are on real ones
    "gemma3": Family("Gemma3TextConfig", "gemma", dict(_WIDTH, head_dim=16, query_pre_attn_scalar=16,
                                                       sliding_window=16,
                                                       layer_types=["sliding_attention", "full_attention"])),
    "phi3": Family("Phi3Config", "phi3", dict(_WIDTH, num_key_value_heads=4, original_max_position_embeddings=4096)),
    "gpt2": Family("GPT2Config", "gpt2", dict(n_embd=64, n_inner=128, n_layer=2, n_head=4, n_positions=2048)),
}
ARCHITECTURES = tuple(FAMILIES)


def _train_bpe(texts: Iterable[str], words: Sequence[str], vocab_size: int, kind: TokenizerKind):
    """BPE of ``kind``'s pieces trained on ``texts``; the label words are repeated so each becomes one merge."""
    specials = list(dict.fromkeys(t for t in (kind.pad, kind.bos, kind.eos, kind.unk, *kind.extra) if t))
    texts = list(texts)
    if kind.pieces == "byte-level":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte encodable: any script works
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=kind.unk))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted({ch for text in texts for ch in text} | {"▁", "\n"} | set("0123456789:()"))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    label_lines = [" " + " ".join(words)] * 500 if words else []
    tokenizer.train_from_iterator([*texts, *label_lines], trainer=trainer)
    if kind.adds_bos and kind.bos:
        bos = kind.bos
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return tokenizer


def build_tokenizer(kind_name: str, texts: Iterable[str], words: Sequence[str] = (), vocab_size: int = 1000):
    """A transformers tokenizer of ``kind_name`` (a key of KINDS) trained on ``texts``."""
    kind = KINDS[kind_name]
    raw = _train_bpe(texts, words, vocab_size, kind)
    named = {"bos_token": kind.bos, "eos_token": kind.eos, "pad_token": kind.pad, "unk_token": kind.unk}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, **{k: v for k, v in named.items() if v},
                                        additional_special_tokens=list(kind.extra))
    tokenizer.chat_template = kind.template
    newline = len(tokenizer.encode("\n", add_special_tokens=False))  # sentencepiece: "▁" and "\n"
    not_single = [w for w in words if len(tokenizer.encode("\n " + w, add_special_tokens=False)) != newline + 1]
    if not_single:
        raise RuntimeError(f"words {not_single} did not become single tokens; raise vocab_size ({vocab_size})")
    return tokenizer


def _config(family: Family, tokenizer, init_range: float):
    """The family's tiny config, its special ids taken from ``tokenizer``."""
    import transformers

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    return getattr(transformers, family.config)(
        vocab_size=len(tokenizer), tie_word_embeddings=False,
        initializer_range=init_range,  # 0.02 leaves logits near uniform: LoRA on attention then barely learns
        **ids, **family.settings)


def build_tiny(
    arch: str,
    out_dir: str | os.PathLike,
    texts: Iterable[str],
    words: Sequence[str] = (),
    *,
    vocab_size: int = 1000,
    seed: int = 0,
    init_range: float = 0.1,
) -> Path:
    """Save a tiny random causal LM of ``arch`` (one of ARCHITECTURES: width 64, two layers) with a tokenizer
    of its family's kind trained on ``texts``, each of ``words`` one token; loaded by path like any model."""
    from transformers import AutoModelForCausalLM

    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    family = FAMILIES[arch]
    tokenizer = build_tokenizer(family.tokenizer, texts, words, vocab_size)
    config = _config(family, tokenizer, init_range)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    turn_end = KINDS[family.tokenizer].end_of_turn
    eos = [tokenizer.eos_token_id] + ([tokenizer.convert_tokens_to_ids(turn_end)] if turn_end else [])
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
                                               eos_token_id=eos if len(eos) > 1 else eos[0])
    out = Path(out_dir)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    return out


def build_tiny_llama(out_dir: str | os.PathLike, texts: Iterable[str], words: Sequence[str] = (), **kwargs) -> Path:
    """The tiny random Llama (byte-level BPE with BOS, ChatML) of the tests and --smoke."""
    return build_tiny("llama", out_dir, texts, words, **kwargs)
