"""GGUF files written by llama.cpp's own converter (``convert_hf_to_gguf.py``), at a pinned release, and read
back by llama.cpp itself (llama-cpp-python).

The converter is not copied into this project: it is run as a subprocess from an extraction of the pinned
llama-cpp-python source package (PyPI sdist, checked by its sha256), which vendors llama.cpp's
``convert_hf_to_gguf.py``, its ``conversion`` package and its own ``gguf-py``. The sdist is looked for in
``LLAMACPP_SDIST_ENV``, then the cache (``~/.cache/emocause/llamacpp``, or ``$EMOCAUSE_CACHE``), and fetched
with ``pip download`` where neither has it. What the converter refuses (an architecture or a tokenizer
it does not know) is a ``ConversionFailed`` whose one line names the family and the converter's reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.io import atomic_path

PIN = "0.3.36"  # llama-cpp-python release whose vendored llama.cpp converts (and, installed, reads) the files
SDIST = f"llama_cpp_python-{PIN}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMACPP_SDIST_ENV = "EMOCAUSE_LLAMACPP_SDIST"  # a local copy of the sdist (no download)
VENDOR = f"llama_cpp_python-{PIN}/vendor/llama.cpp/"
EXTRACT = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")  # what the converter runs with
QUANTS = ("f16", "q8_0")


@dataclass(frozen=True)
class Family:
    """A model family the project trains, as llama.cpp's converter takes it: one row of FAMILIES."""

    name: str  # as --help and the matrix say it
    model_types: tuple[str, ...]  # config.json's model_type
    arch: str  # llama.cpp's architecture: the GGUF's general.architecture
    checked_on: str  # the model loaded in llama.cpp here: an embedded alias, or "tiny:<tokenizer>" (utils.lm.tiny)
    refused: str = ""  # what the converter needs of the merged folder, as "<name> <refused>" in --help


# The one table of what exports (--help, the tests and bench.gguf's matrix read it). Besides these, every family is
# refused with a tokenizer the converter does not recognise (UNRECOGNISED).
FAMILIES = (
    Family("Llama", ("llama",), "llama", "smollm2"),
    Family("Gemma 3", ("gemma3", "gemma3_text"), "gemma3", "gemma3"),
    # transformers reads any qwen2 folder's tokenizer with Qwen's pre-tokenizer, which the converter knows only
    # over Qwen's vocabulary; qwen3 folders keep the tokenizer they have
    Family("Qwen2", ("qwen2",), "qwen2", "tiny:qwen", "with a vocabulary other than Qwen's (transformers gives "
           "every qwen2 folder Qwen's pre-tokenizer; the converter knows it over Qwen's vocabulary only)"),
    Family("Qwen3", ("qwen3",), "qwen3", "tiny:smollm2"),
    Family("Phi-3", ("phi3",), "phi3", "tiny:sentencepiece", "without its sentencepiece tokenizer.model (merging "
           "copies the base model's)"),
    Family("GPT-2", ("gpt2",), "gpt2", "tiny:smollm2", "whose n_inner is not 4 x n_embd (the width llama.cpp's "
           "GPT-2 takes: the file would not load)"),
    Family("Mistral", ("mistral",), "llama", "tiny:sentencepiece"),
)
UNRECOGNISED = ("a tokenizer the converter does not recognise (a locally trained BPE, such as the tiny test "
                "models': 'BPE pre-tokenizer was not recognized')")
CHECKED_ON = {"smollm2": "SmolLM2-135M-Instruct", "gemma3": "Gemma 3 270M",
              "tiny:qwen": "a tiny random model with Qwen's own vocabulary",
              "tiny:smollm2": "a tiny random model with SmolLM2's tokenizer",
              "tiny:sentencepiece": "a tiny random model with a sentencepiece tokenizer.model trained here"}


def family_of(model_type: str) -> Family | None:
    """The row of FAMILIES for a config's model_type; None for a family the project does not list."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def families_help() -> str:
    """What --gguf's help says: which families export, what each was checked on, which are refused and why."""
    real = ", ".join(f"{f.name} (checked on {CHECKED_ON[f.checked_on]})" for f in FAMILIES
                     if not f.checked_on.startswith("tiny:"))
    tiny = ", ".join(f.name for f in FAMILIES if f.checked_on.startswith("tiny:"))
    refused = "; ".join([UNRECOGNISED] + [f"{f.name} {f.refused}" for f in FAMILIES if f.refused])
    return (f"written by llama.cpp's converter (llama-cpp-python {PIN}), {' or '.join(QUANTS)}. Exports, and loads "
            "in llama.cpp with the merged model's tokens and labels (f16; q8_0 can flip a near tie): "
            f"{real}, and {tiny} (on tiny random models). Refused, after --merged is written: {refused}. Other "
            "families as the converter takes them")


class ConversionFailed(ValueError):
    """llama.cpp's converter refused the model (or could not be run)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    from utils.lm.sources import cache_root

    return cache_root() / "llamacpp"


def sdist(download: bool = True) -> Path:
    """The pinned sdist, checked by its sha256: the environment's copy, the cache's, or ``pip download``."""
    candidates = [Path(os.environ[LLAMACPP_SDIST_ENV])] if os.environ.get(LLAMACPP_SDIST_ENV) else []
    candidates.append(cache_dir() / SDIST)
    for path in candidates:
        if path.is_file():
            if _sha256(path) != SDIST_SHA256:
                raise ConversionFailed(f"{path} is not llama-cpp-python {PIN}'s sdist (sha256 differs): delete it")
            return path
    if not download:
        raise ConversionFailed(f"llama-cpp-python {PIN}'s sdist is not at {candidates[-1]}")
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python", "--dest", tmp,
               f"llama-cpp-python=={PIN}"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST
        if run.returncode != 0 or not got.is_file():
            raise ConversionFailed(f"could not fetch llama-cpp-python {PIN}'s sdist ({' '.join(cmd)}): "
                                   f"{(run.stderr or run.stdout).strip().splitlines()[-1:]}")
        if _sha256(got) != SDIST_SHA256:
            raise ConversionFailed(f"the downloaded llama-cpp-python {PIN} sdist's sha256 is not {SDIST_SHA256}")
        os.replace(got, target / SDIST)
    return target / SDIST


def converter_dir(download: bool = True) -> Path:
    """The extracted converter (``convert_hf_to_gguf.py`` beside ``conversion/`` and ``gguf-py/``), cached."""
    root = cache_dir() / f"llama.cpp-{PIN}"
    if (root / ".complete").is_file():
        return root
    source = sdist(download)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=root.parent))
    try:
        with tarfile.open(source) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(VENDOR)
                       and m.name[len(VENDOR):].startswith(EXTRACT)]
            for m in members:
                m.name = m.name[len(VENDOR):]
                tar.extract(m, tmp, filter="data")
        (tmp / ".complete").write_text(SDIST_SHA256, encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _config(merged_dir: str | os.PathLike) -> dict:
    import json

    return json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8"))


def family(merged_dir: str | os.PathLike) -> str:
    """The model family of a merged folder, as its config names it."""
    config = _config(merged_dir)
    names = ", ".join(config.get("architectures") or [])
    return f"{config.get('model_type', '?')} ({names})" if names else str(config.get("model_type", "?"))


def complete_merged(merged_dir: str | os.PathLike, source: str) -> list[str]:
    """Add to a merged folder what llama.cpp's converter reads and transformers 5's save_pretrained leaves out:
    the base model's sentencepiece ``tokenizer.model`` (transformers writes tokenizer.json only; the converter
    reads Phi-3's, Llama-2's and Mistral's vocabulary from it) and GPT-2's ``n_ctx`` (a GPT2Config written by
    transformers has n_positions only; the converter takes the context length from n_ctx). ``source`` is the base
    model's folder or hub id. Returns the names of what was added."""
    import json

    merged, added = Path(merged_dir), []
    if not (merged / "tokenizer.model").is_file():
        from transformers.utils import cached_file

        try:
            found = cached_file(source, "tokenizer.model", _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):
            found = None
        if found and Path(found).is_file():
            shutil.copyfile(found, merged / "tokenizer.model")
            added.append("tokenizer.model")
    config = _config(merged)
    if config.get("model_type") == "gpt2" and "n_ctx" not in config and "n_positions" in config:
        from utils.io import write_text_atomic

        config["n_ctx"] = config["n_positions"]
        write_text_atomic(merged / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        added.append("n_ctx")
    return added


def refusal(merged_dir: str | os.PathLike) -> str | None:
    """Why the project refuses a merged folder before the converter runs, where the converter would write a file
    llama.cpp cannot load (GPT-2 with a feed-forward width other than 4 x n_embd); None: convert it."""
    config = _config(merged_dir)
    if config.get("model_type") == "gpt2":
        inner, width = config.get("n_inner"), 4 * int(config.get("n_embd", 0))
        if inner is not None and inner != width:
            return (f"n_inner is {inner}, not 4 x n_embd = {width}: llama.cpp's GPT-2 takes 4 x n_embd as the "
                    "feed-forward width, so the file would not load")
    return None


def _refused(merged_dir: str | os.PathLike, reason: str) -> ConversionFailed:
    """The converter's one-line refusal: the family, its reason, and what the table says that family needs."""
    row = family_of(str(_config(merged_dir).get("model_type", "")))
    needs = f" ({row.name} is refused {row.refused})" if row is not None and row.refused else ""
    return ConversionFailed(f"llama.cpp's converter ({PIN}) refused family {family(merged_dir)}: "
                            f"{reason.strip()[:300]}{needs}")


def convert(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike, quant: str = "f16",
            download: bool = True) -> Path:
    """Run llama.cpp's converter on a merged safetensors folder; the file appears only when it succeeds."""
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: use one of {list(QUANTS)}")
    why = refusal(merged_dir)
    if why is not None:
        raise ConversionFailed(f"not converted for llama.cpp ({PIN}): family {family(merged_dir)}: {why}")
    conv = converter_dir(download)
    env = {**os.environ, "PYTHONPATH": str(conv / "gguf-py"), "NO_LOCAL_GGUF": "1"}
    with atomic_path(gguf_file) as tmp:
        cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(merged_dir), "--outfile", str(tmp),
               "--outtype", quant]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=conv)
        if run.returncode != 0:
            lines = [ln for ln in (run.stderr + run.stdout).strip().splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            raise _refused(merged_dir, reason)
    return Path(gguf_file)


def compare(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike, ids: list[int],
            positions: list[int] | None = None, label_ids: list[int] | None = None) -> dict[str, Any]:
    """Load the GGUF with llama.cpp and the merged folder with transformers; on the token ids ``ids``: whether
    llama.cpp tokenises their text to the ids the merged folder's tokenizer gives it (a prompt built piece by piece
    need not be what either gives the whole text: a sentencepiece "▁" before each piece), the largest logit
    difference (and relative to the largest logit), top-1 agreement, and, at ``positions`` among ``label_ids``,
    whether both read the same labels, the merged model's margin between its two best labels there and the largest
    difference of those label logits (absolute and relative to the largest of them)."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    text = tokenizer.decode(ids)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        a = merged(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0].numpy()
    llm = Llama(model_path=str(gguf_file), n_ctx=max(64, len(ids) + 8), logits_all=True, verbose=False,
                n_threads=1)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    ours = tokenizer(text, add_special_tokens=False)["input_ids"]
    llm.eval(ids)
    b = np.array(llm.scores[: len(ids)], dtype=np.float32)
    positions = list(range(len(ids))) if positions is None else list(positions)
    cols = list(label_ids) if label_ids is not None else slice(None)
    read_a, read_b = a[positions][:, cols], b[positions][:, cols]  # the label logits at the read positions
    labels_a, labels_b = [int(i) for i in read_a.argmax(-1)], [int(i) for i in read_b.argmax(-1)]
    best_two = np.sort(read_a, axis=-1)[:, -2:] if read_a.shape[-1] > 1 else np.zeros((len(positions), 2))
    label_error = float(np.abs(read_a - read_b).max()) if positions else 0.0
    gap = float(np.abs(a - b).max())
    return {"same_tokens": list(theirs) == list(ours), "max_abs": round(gap, 5),
            "relative": round(gap / float(np.abs(a).max()), 5),
            "top1_agreement": round(float((a.argmax(-1) == b.argmax(-1)).mean()), 4),
            "same_labels": labels_a == labels_b, "labels_merged": labels_a, "labels_gguf": labels_b,
            # a label can differ only where the merged model's two best labels are within twice the label error
            "label_margins": [round(float(m), 4) for m in best_two[:, 1] - best_two[:, 0]],
            "label_error": round(label_error, 5),
            "label_relative": round(label_error / float(np.abs(read_a).max()), 5) if positions else 0.0}
