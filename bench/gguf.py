"""The GGUF matrix of issue 40: each family of ``utils.lm.llamacpp.FAMILIES`` x f16, q8_0, written by llama.cpp's
converter from a merged folder (a seeded random LoRA adapter, at a trained adapter's scale, merged into the model
the table names: SmolLM2-135M, Gemma 3 270M, or a tiny random model with a tokenizer the converter recognises) and
loaded in llama.cpp: whether it loads, tokenises the prompt's text as the merged folder's tokenizer does, reads the
same label at every marker of an ECF emotion prompt (and how close the merged model's two best labels were there),
the largest label logit difference and the largest logit difference.

    python -m bench.gguf                                   # every family, both quants: a markdown table
    python -m bench.gguf --families qwen2,gpt2 --quants q8_0 --keep /tmp/gguf

tests/test_export.py runs the same ``export_family`` and ``check``, and asserts on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONVERSATION = {"conversation_ID": 1, "conversation": [
    {"utterance_ID": 1, "speaker": "Ana", "text": "We won the final!", "emotion": "joy"},
    {"utterance_ID": 2, "speaker": "Ben", "text": "No way, that is amazing!", "emotion": "surprise"},
    {"utterance_ID": 3, "speaker": "Ana", "text": "I can't believe you did that. I miss her every day.",
     "emotion": "sadness"}]}


def family_names() -> list[str]:
    """The families' keys: each row's first model_type."""
    from utils.lm import llamacpp

    return [f.model_types[0] for f in llamacpp.FAMILIES]


def base_model(key: str, folder: Path) -> str:
    """The model the families table checks ``key`` on: an embedded alias, or a tiny one built in ``folder``."""
    from utils.ecf.config import ecf_smoke_corpus
    from utils.lm import llamacpp, tiny

    row = llamacpp.family_of(key)
    if row is None:
        raise ValueError(f"{key!r} is not in llama.cpp's families table: {', '.join(family_names())}")
    if not row.checked_on.startswith("tiny:"):
        return row.checked_on
    _, texts, words = ecf_smoke_corpus()
    return str(tiny.build_convertible(key, folder, texts, words))


def random_adapter(base: str, out: Path, seed: int = 0, std: float = 0.02,
                   targets: tuple[str, ...] = ("attention", "mlp")) -> Path:
    """A LoRA adapter (r4 on ``targets``) whose B matrices are random: merging changes the logits."""
    import torch

    from utils.lm import modeling

    torch.manual_seed(seed)
    strategy = modeling.choose_strategy(quantize=False)
    settings = modeling.LoraSettings(r=4, alpha=8, target_modules=targets)
    model = modeling.add_lora(modeling.load_model(base, strategy=strategy), settings, strategy)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)
    model.save_pretrained(out)
    return out


def probe(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The ECF emotion prompt of CONVERSATION: (token ids, the three markers' positions, the label words' ids)."""
    from utils.ecf import prompts
    from utils.ecf.data import EMOTIONS
    from utils.lm.modeling import label_token_ids

    query = prompts.emotion_queries(CONVERSATION, tokenizer, 512)[0]
    return list(query.input_ids), list(query.positions), label_token_ids(tokenizer, EMOTIONS)


def export_family(key: str, root: Path, seed: int = 0) -> dict[str, Any]:
    """Build ``key``'s model, merge a random adapter into it and write the f16 GGUF with ``utils.lm.export``
    (checked in llama.cpp on the probe). Returns the merged folder, the probe, the f16 file and its check, and
    the seconds each step took; a refused conversion raises ``llamacpp.ConversionFailed``."""
    from utils.lm import export
    from utils.lm.modeling import load_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = base_model(key, root / "base")
    adapter = random_adapter(base, root / "adapter", seed)
    the_probe = probe(load_tokenizer(base))
    built = time.perf_counter()
    card = export.Card(title=f"{key} GGUF check", base_model=base, data="none: a random adapter")
    gguf = root / f"{key}.f16.gguf"
    out = export.export(base, adapter, card, root / "merged", gguf, "f16", probe=the_probe)
    return {"key": key, "merged": root / "merged", "probe": the_probe, "f16": gguf, "check_f16": out["check"],
            "seconds": {"build": round(built - start, 1), "f16": round(time.perf_counter() - built, 1)}}


def check(exported: dict[str, Any], quant: str) -> dict[str, Any]:
    """llama.cpp's comparison for ``quant``: the f16 check of ``export_family``, or q8_0 converted from the
    same merged folder and compared on the same probe."""
    from utils.lm import llamacpp

    if quant == "f16":
        return exported["check_f16"]
    start = time.perf_counter()
    gguf = exported["merged"].parent / f"{exported['key']}.{quant}.gguf"
    llamacpp.convert(exported["merged"], gguf, quant)
    result = llamacpp.compare(exported["merged"], gguf, *exported["probe"])
    exported[quant] = gguf
    exported["seconds"][quant] = round(time.perf_counter() - start, 1)
    return result


def row(key: str, quant: str, result: dict[str, Any] | None, size: int | None = None, error: str = "") -> dict:
    """One line of the matrix."""
    from utils.lm import llamacpp

    fam = llamacpp.family_of(key)
    base = {"family": fam.name, "arch": fam.arch, "checked_on": llamacpp.CHECKED_ON[fam.checked_on], "quant": quant}
    if result is None:
        return {**base, "loads": False, "error": error}
    agree = [x == y for x, y in zip(result["labels_merged"], result["labels_gguf"])]
    return {**base, "loads": True, "same_tokens": result["same_tokens"], "same_labels": result["same_labels"],
            "labels_agree": f"{sum(agree)} of {len(agree)}", "margins": result["label_margins"],
            "flipped_margins": [m for m, ok in zip(result["label_margins"], agree) if not ok],
            "label_error": result["label_error"], "label_relative": result["label_relative"],
            "relative": result["relative"], "max_abs": result["max_abs"], "top1": result["top1_agreement"],
            "mib": round(size / 2**20, 1) if size else None}


def markdown(rows: list[dict]) -> str:
    """The matrix as a markdown table."""
    lines = ["| family (llama.cpp arch) | model | quant | loads | same tokens | same label at every marker "
             "(the merged model's smallest margin between its two best labels) | largest label logit difference "
             "(/ largest label logit) | max \\|logit diff\\| / largest | top-1 agreement | MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['family']} ({r['arch']}) | {r['checked_on']} | {r['quant']} |"
        if not r["loads"]:
            lines.append(f"{head} **refused**: {r['error']} | | | | | | | |")
            continue
        if r["same_labels"]:
            labels = f"yes, {r['labels_agree']} ({min(r['margins']):.2f})"
        else:
            flipped = ", ".join(f"{m:.2f}" for m in r["flipped_margins"])
            labels = f"**no**, {r['labels_agree']}: differs where the margin is {flipped} ({min(r['margins']):.2f})"
        lines.append(f"{head} yes | {'yes' if r['same_tokens'] else '**no**'} | {labels} | {r['label_error']:.3g} "
                     f"({r['label_relative']:.1%}) | {r['relative']:.2%} ({r['max_abs']:.3g}) | {r['top1']:.0%} | "
                     f"{r['mib']} |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU, as /proc/cpuinfo names it, and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gguf", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--families", default="", help=f"comma-separated, of {', '.join(family_names())} (all)")
    parser.add_argument("--quants", default="f16,q8_0", help="comma-separated: f16, q8_0")
    parser.add_argument("--keep", default="", help="folder to keep the merged folders and GGUF files in")
    parser.add_argument("--seed", type=int, default=0, help="the random adapter's seed (0)")
    args = parser.parse_args(argv)
    from utils import env
    from utils.lm import llamacpp

    env.quiet_command()
    keys = [k for k in args.families.split(",") if k] or family_names()
    quants = [q for q in args.quants.split(",") if q]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="emocause-gguf."))
    rows = []
    try:
        for key in keys:
            folder = root / key
            if folder.exists():
                shutil.rmtree(folder)
            try:
                exported = export_family(key, folder, args.seed)
            except (llamacpp.ConversionFailed, FileNotFoundError) as e:
                rows += [row(key, q, None, error=str(e)) for q in quants]
                print(f"{key}: {e}", file=sys.stderr, flush=True)
                continue
            for quant in quants:
                try:
                    result = check(exported, quant)
                except llamacpp.ConversionFailed as e:
                    rows.append(row(key, quant, None, error=str(e)))
                    continue
                rows.append(row(key, quant, result, exported[quant].stat().st_size))
            print(f"{key}: {exported['seconds']} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"llama.cpp's converter and llama-cpp-python {llamacpp.PIN}; {time.strftime('%Y-%m-%d')}; {machine()}\n")
    print(markdown(rows))
    return 0 if all(r["loads"] and r["same_tokens"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
