"""LoRA settings and their targets, read from the loaded architecture's own module names.

``LORA_TARGETS`` is ``auto`` (the track's groups: attention, and the MLP for the ECF stages), group names
(``attention``, ``mlp``) or module names. Groups are found, not assumed: every linear layer (``nn.Linear``,
GPT-2's ``Conv1D``, bitsandbytes' 4-bit layers) inside a numbered decoder layer belongs to the group its parent
module is named for (``self_attn``/``attn``/``attention`` or ``mlp``/``feed_forward``/``ffn``), so fused
projections (Phi-3's ``qkv_proj`` and ``gate_up_proj``, GPT-2's ``c_attn``) are found like Llama's
``q_proj``. A leaf name that two groups share (GPT-2's ``c_proj``) is written with its parent (``attn.c_proj``),
which peft matches as a suffix. For Llama-family models ``auto`` gives the lists runs had before it existed
(q, k, v, o; then gate, up, down), so their identities are unchanged. Module names are read from the model
built on the meta device: no weights are loaded to resolve them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

GROUPS = ("attention", "mlp")
AUTO = "auto"
_GROUP_WORDS = {"attention": ("attn", "attention"), "mlp": ("mlp", "feed_forward", "ffn")}
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (the original recipe: r16 on the attention projections); ``target_modules`` may
    hold group names until ``resolve`` turns them into the model's module names."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def from_config(cls, cfg: Any) -> "LoraSettings":
        """From a notebook's LORA_R, LORA_ALPHA, LORA_DROPOUT and LORA_TARGETS ("auto": the config's LORA_AUTO
        groups; both tracks)."""
        return cls(r=cfg.LORA_R, alpha=cfg.LORA_ALPHA, dropout=cfg.LORA_DROPOUT,
                   target_modules=parse_targets(cfg.LORA_TARGETS, getattr(cfg, "LORA_AUTO", GROUPS)))


def parse_targets(text: str, auto: tuple[str, ...] = GROUPS) -> tuple[str, ...]:
    """Comma-separated LORA_TARGETS as a tuple, ``auto`` replaced by the ``auto`` groups; raises when empty."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError(f"LORA_TARGETS={text!r} names no module: give 'auto', 'attention', 'mlp' or module names")
    out: list[str] = []
    for name in names:
        out += auto if name.lower() == AUTO else [name]
    return tuple(dict.fromkeys(out))


def check_numbers(r: int, alpha: float, dropout: float) -> None:
    """LORA_R, LORA_ALPHA and LORA_DROPOUT as peft will take them, checked before any notebook runs."""
    if r < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LORA_R={r}, LORA_ALPHA={alpha}, LORA_DROPOUT={dropout}: need LORA_R >= 1, "
                         "LORA_ALPHA > 0 and 0 <= LORA_DROPOUT < 1")


def _is_linear(module: Any) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))  # bitsandbytes' Linear4bit is an nn.Linear


def _group(path: str) -> str | None:
    """The group of a linear layer at ``path`` inside a decoder layer, from its parents' names."""
    parents = path.split(".")[:-1]
    for group, words in _GROUP_WORDS.items():
        if any(word in part.lower() for part in parents for word in words):
            return group
    return None


def linear_modules(model: Any) -> dict[str, str | None]:
    """Each linear layer kind of ``model``'s decoder layers (its leaf name, or parent.leaf where two groups share
    the leaf) and its group (None: neither attention nor MLP), in the order the first layer defines them."""
    found: dict[tuple[str, str], str | None] = {}  # (parent, leaf) -> group
    for path, module in model.named_modules():
        if _LAYER.search(f".{path}.") and _is_linear(module):
            parts = path.split(".")
            found.setdefault((parts[-2], parts[-1]), _group(path))
    leaves: dict[str, set] = {}
    for (parent, leaf), group in found.items():
        leaves.setdefault(leaf, set()).add(group)
    return {(leaf if len(leaves[leaf]) == 1 else f"{parent}.{leaf}"): group for (parent, leaf), group in found.items()}


def meta_model(model: str) -> Any:
    """``model``'s architecture with no weights (meta device): its module names and shapes only."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from utils.lm.sources import local_source

    config = AutoConfig.from_pretrained(local_source(model))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _named(path: str, name: str) -> bool:
    """peft's rule for a list of target names: the whole path, or its end after a dot."""
    return path == name or path.endswith("." + name)


def resolve(settings: LoraSettings, model: Any) -> LoraSettings:
    """``settings`` with group names replaced by ``model``'s module names (a loaded model, or a model source
    read on the meta device); raises, naming the architecture and its linear layers, when a name matches none."""
    lm = meta_model(model) if isinstance(model, str) else model
    modules = linear_modules(lm)
    paths = [p for p, m in lm.named_modules() if _LAYER.search(f".{p}.") and _is_linear(m)]
    out: list[str] = []
    for name in settings.target_modules:
        if name in GROUPS:
            out += [key for key, group in modules.items() if group == name]
        elif any(_named(p, name) for p in paths):
            out.append(name)
        else:
            raise ValueError(f"LORA_TARGETS: {name!r} matches no linear layer of {describe(lm, modules)}; "
                             "name some of those, or use 'auto', 'attention' or 'mlp'")
    if not out:
        raise ValueError(f"LORA_TARGETS={','.join(settings.target_modules)!r} finds no layer in {describe(lm, modules)}")
    return replace(settings, target_modules=tuple(dict.fromkeys(out)))


def describe(model: Any, modules: dict[str, str | None] | None = None) -> str:
    """'GPT2LMHeadModel (gpt2), whose decoder layers have: attention c_attn, attn.c_proj; mlp c_fc, mlp.c_proj'."""
    modules = linear_modules(model) if modules is None else modules
    by_group: dict[str, list[str]] = {}
    for key, group in modules.items():
        by_group.setdefault(group or "other", []).append(key)
    kind = getattr(getattr(model, "config", None), "model_type", "?")
    listed = "; ".join(f"{group} {', '.join(keys)}" for group, keys in by_group.items()) or "no linear layers"
    return f"{type(model).__name__} ({kind}), whose decoder layers have: {listed}"


def fan_in_fan_out(model: Any, targets: tuple[str, ...]) -> bool:
    """True where the targets are GPT-2-style Conv1D layers (weights stored in x out), as peft must be told."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) and any(_named(p, t) for t in targets) for p, m in model.named_modules())


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, all) parameter counts of a peft model."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
