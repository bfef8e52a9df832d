"""Take a trained adapter out of the project: merged safetensors weights with the tokenizer and a model card,
and a GGUF file for llama.cpp / Ollama written by llama.cpp's own converter (``utils.lm.llamacpp``, a pinned
release), checked by loading it in llama.cpp (llama-cpp-python) where that is installed.

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
from utils.lm import llamacpp
from utils.lm.modeling import merge_adapter
from utils.lm.sources import NOTICE_FILE, notice, resolve_model_source

KNOWN_LICENCES = {  # the hub models the README names, for a card written without the model's own card at hand
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "apache-2.0",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1",
    "meta-llama/Llama-2-13b-chat-hf": "llama2",
}
GGUF_FAMILIES = llamacpp.families_help()  # --gguf's help, from llama.cpp's families table
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


def llamacpp_check(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike,
                   probe: tuple[list[int], list[int], list[int]] | None = None) -> dict:
    """Load the GGUF in llama.cpp and compare it with the merged model (``llamacpp.compare``) on ``probe``
    (token ids, read positions, label token ids) or on CHECK_TEXT; a ``skipped`` reason without llama-cpp-python."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed (pip install llama-cpp-python): not loaded in llama.cpp"}
    if probe is None:
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(merged_dir)(CHECK_TEXT)["input_ids"]
        return llamacpp.compare(merged_dir, gguf_file, ids)
    return llamacpp.compare(merged_dir, gguf_file, *probe)


def check_targets(merged_dir: str | os.PathLike | None, gguf_file: str | os.PathLike | None) -> None:
    """Raise OutputPathError naming --merged or --gguf where it cannot be written: before any model loads."""
    if merged_dir is not None:
        check_output(merged_dir, "--merged", folder=True)
    if gguf_file is not None:
        check_output(gguf_file, "--gguf", example="model.gguf")


def export(model: str, adapter_dir: str | os.PathLike, card: Card, merged_dir: str | os.PathLike | None = None,
           gguf_file: str | os.PathLike | None = None, quant: str = "f16", check: bool = True,
           probe: tuple[list[int], list[int], list[int]] | None = None) -> dict:
    """Merge ``adapter_dir`` into ``model``; write the merged folder (with its card), then, from it, a GGUF file
    with llama.cpp's converter. Returns what was written and, with ``check``, llama.cpp's comparison with the
    merged model (``llamacpp_check``). A GGUF the converter refuses raises ``llamacpp.ConversionFailed`` after
    the merged folder is written (when one was asked for)."""
    if merged_dir is None and gguf_file is None:
        raise ValueError("nothing to write: give a merged folder, a GGUF file or both")
    if quant not in llamacpp.QUANTS:
        raise ValueError(f"quant {quant!r}: use one of {list(llamacpp.QUANTS)}")
    check_targets(merged_dir, gguf_file)
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
            try:
                out["gguf"] = str(llamacpp.convert(target, gguf_file, quant))
            except llamacpp.ConversionFailed as e:
                kept = f"the merged folder {target} is written" if merged_dir is not None else \
                    "give --merged to keep the merged safetensors folder"
                raise llamacpp.ConversionFailed(f"{e}; {kept}") from None
            out["quant"] = quant
            text = notice(model)
            if text is not None:  # Gemma's terms travel with the GGUF too
                notice_file = Path(gguf_file).with_name(f"{Path(gguf_file).name}.{NOTICE_FILE}")
                out["notice"] = str(write_text_atomic(notice_file, text))
            if check:
                out["check"] = llamacpp_check(target, gguf_file, probe)
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
    parser.add_argument("--gguf", help="GGUF file to write: " + GGUF_FAMILIES)
    parser.add_argument("--quant", default="f16", choices=llamacpp.QUANTS)
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
