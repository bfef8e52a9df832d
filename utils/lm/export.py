"""Take a trained adapter out of the project: merged safetensors weights with the tokenizer and a model card,
and a GGUF file for llama.cpp / Ollama (``utils.lm.gguf_export``), checked by reading it back.

Both tracks call ``export`` with a ``Card`` of what their run recorded; ``python -m utils.ecf.export`` is the
emotion-cause track's command line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.io import check_output, write_text_atomic
from utils.lm import gguf_export
from utils.lm.modeling import load_tokenizer, merge_adapter
from utils.lm.sources import gguf_bar_follows_switch, local_source, resolve_model_source

KNOWN_LICENCES = {  # the hub models the README names, for a card written without the model's own card at hand
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "apache-2.0",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1",
    "meta-llama/Llama-2-13b-chat-hf": "llama2",
}
CHECK_TEXT = "Speaker A: I can't believe you did that!\nSpeaker B: I am so sorry, I miss her every day."


@dataclass
class Card:
    """What a model card says: filled by the track from the run's records."""

    title: str  # e.g. "emocause emotion recogniser (LoRA merged into SmolLM2-135M-Instruct)"
    base_model: str  # as the run recorded it
    data: str  # one paragraph: what it was trained on
    parameters: dict[str, Any] = field(default_factory=dict)  # training settings worth repeating
    scores: list[tuple[str, Any, Any]] = field(default_factory=list)  # (metric, the model, its baseline)
    prompt: str = ""  # a filled-in prompt and what the model answers there
    notes: str = ""


def base_licence(model: str) -> str:
    """The base model's licence: the GGUF's general.license, a local card's ``license:`` line, or a known id."""
    try:
        path, gguf_file = resolve_model_source(model)
    except (FileNotFoundError, ValueError):
        return "unknown: see the base model's card"
    if gguf_file:
        from gguf import GGUFReader

        fld = GGUFReader(str(Path(path) / gguf_file)).fields.get("general.license")
        if fld is not None:
            return str(fld.contents())
    readme = Path(path) / "README.md"
    if readme.is_file():
        match = re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if match:
            return match.group(1)
    return KNOWN_LICENCES.get(model, "unknown: see the base model's card")


def render_card(card: Card, licence: str, gguf_name: str | None) -> str:
    """The model card (README.md) as Markdown, with the front matter the hub reads."""
    lines = ["---", f"license: {licence.split(':')[0]}", f"base_model: {card.base_model}",
             "library_name: transformers", "tags: [emocause, lora-merged]", "---", "", f"# {card.title}", "",
             f"Base model: `{card.base_model}` (licence: {licence}). LoRA adapter merged into its weights.", "",
             "## Data", "", card.data, ""]
    if card.parameters:
        lines += ["## Training parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in card.parameters.items()] + [""]
    lines += ["## Scores the run recorded on its test set", ""]
    if card.scores:
        lines += ["| metric | this model | baseline |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(ours)} | {_fmt(base)} |" for name, ours, base in card.scores] + [""]
    else:
        lines += ["None recorded: the run's inference notebook had not scored a test set.", ""]
    if card.prompt:
        lines += ["## Prompt format", "", "```text", card.prompt, "```", ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              'model = AutoModelForCausalLM.from_pretrained("<this folder>")',
              'tokenizer = AutoTokenizer.from_pretrained("<this folder>")', "```", ""]
    if gguf_name:
        lines += [f"GGUF: `{gguf_name}` (llama.cpp: `llama-cli -m {gguf_name}`; transformers: "
                  f"`AutoModelForCausalLM.from_pretrained(folder, gguf_file=\"{gguf_name}\")`).", ""]
    if card.notes:
        lines += [card.notes, ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("-" if value is None else str(value))


def logit_gap(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike, text: str = CHECK_TEXT) -> dict:
    """Read the GGUF back with transformers' own GGUF loader and compare its logits on ``text`` with the merged
    model's: the largest absolute difference, relative to the largest logit, and top-1 agreement."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, use_safetensors=True).eval()
    with gguf_bar_follows_switch():
        back = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(merged_dir)(text, return_tensors="pt")["input_ids"]
    ids_back = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)(text, return_tensors="pt")
    with torch.no_grad():
        a, b = merged(ids).logits, back(ids).logits
    gap = float((a - b).abs().max())
    return {"max_abs": round(gap, 5), "relative": round(gap / float(a.abs().max()), 5),
            "top1_agreement": round(float((a.argmax(-1) == b.argmax(-1)).float().mean()), 4),
            "same_tokens": ids_back["input_ids"].tolist() == ids.tolist()}


def check_targets(merged_dir: str | os.PathLike | None, gguf_file: str | os.PathLike | None) -> None:
    """Raise OutputPathError naming --merged or --gguf where it cannot be written: before any model loads."""
    if merged_dir is not None:
        check_output(merged_dir, "--merged", folder=True)
    if gguf_file is not None:
        check_output(gguf_file, "--gguf", example="model.gguf")


def export(model: str, adapter_dir: str | os.PathLike, card: Card, merged_dir: str | os.PathLike | None = None,
           gguf_file: str | os.PathLike | None = None, quant: str = "f16", check: bool = True) -> dict:
    """Merge ``adapter_dir`` into ``model``; write the merged folder (with its card) and/or a GGUF file.
    Returns what was written and, with ``check``, the GGUF's logit gap to the merged model."""
    if merged_dir is None and gguf_file is None:
        raise ValueError("nothing to write: give a merged folder, a GGUF file or both")
    if quant not in gguf_export.QUANTS:
        raise ValueError(f"quant {quant!r}: use one of {list(gguf_export.QUANTS)}")
    check_targets(merged_dir, gguf_file)
    if gguf_file is not None:  # an architecture the writer does not map fails now, not after minutes of merging
        from transformers import AutoConfig

        gguf_export.gguf_architecture(AutoConfig.from_pretrained(local_source(model)))
        gguf_export.check_tokenizer(load_tokenizer(model))
    scratch = None
    if merged_dir is None:  # the GGUF is written from a merged folder: a temporary one
        scratch = Path(tempfile.mkdtemp(prefix=".emocause-merge."))
    target = Path(merged_dir) if merged_dir is not None else scratch / "merged"
    try:
        merge_adapter(model, adapter_dir, target)
        licence = base_licence(model)
        write_text_atomic(target / "README.md", render_card(card, licence, Path(gguf_file).name if gguf_file else None))
        out: dict[str, Any] = {"merged": str(target) if merged_dir is not None else None, "licence": licence}
        if gguf_file is not None:
            out["gguf"] = str(gguf_export.write_gguf(target, gguf_file, quant, name=card.title, license=licence))
            out["quant"] = quant
            if check:
                out["check"] = logit_gap(target, gguf_file)
        return out
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Any adapter (the empathetic track's too): ``python -m utils.lm.export --model M --adapter DIR ...``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m utils.lm.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the base model the adapter was trained on (as MODEL)")
    parser.add_argument("--adapter", required=True, help="the adapter folder, e.g. checkpoints/empathetic/response/adapter")
    parser.add_argument("--merged", help="folder for the merged weights, tokenizer and README.md")
    parser.add_argument("--gguf", help="GGUF file to write")
    parser.add_argument("--quant", default="f16", choices=gguf_export.QUANTS)
    parser.add_argument("--title", default="", help="the model card's title")
    args = parser.parse_args(argv)
    from utils import env

    env.quiet_command()
    card = Card(title=args.title or f"{Path(args.adapter).parent.name} adapter merged into {args.model}",
                base_model=args.model, data=f"See the run that wrote {args.adapter}.")
    try:
        out = export(args.model, args.adapter, card, args.merged, args.gguf, args.quant)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
