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
# model_type of the families the project trains -> llama.cpp's name for it (what the converter writes)
FAMILIES = {"llama": "llama (SmolLM2, TinyLlama, Llama)", "gemma3_text": "gemma3", "gemma3": "gemma3",
            "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gpt2": "gpt2", "mistral": "llama (Mistral)"}


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


def family(merged_dir: str | os.PathLike) -> str:
    """The model family of a merged folder, as its config names it."""
    import json

    config = json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8"))
    names = ", ".join(config.get("architectures") or [])
    return f"{config.get('model_type', '?')} ({names})" if names else str(config.get("model_type", "?"))


def convert(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike, quant: str = "f16",
            download: bool = True) -> Path:
    """Run llama.cpp's converter on a merged safetensors folder; the file appears only when it succeeds."""
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: use one of {list(QUANTS)}")
    conv = converter_dir(download)
    env = {**os.environ, "PYTHONPATH": str(conv / "gguf-py"), "NO_LOCAL_GGUF": "1"}
    with atomic_path(gguf_file) as tmp:
        cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(merged_dir), "--outfile", str(tmp),
               "--outtype", quant]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=conv)
        if run.returncode != 0:
            lines = [ln for ln in (run.stderr + run.stdout).strip().splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            raise ConversionFailed(f"llama.cpp's converter ({PIN}) refused family {family(merged_dir)}: "
                                   f"{reason.strip()[:300]}")
    return Path(gguf_file)


def compare(merged_dir: str | os.PathLike, gguf_file: str | os.PathLike, ids: list[int],
            positions: list[int] | None = None, label_ids: list[int] | None = None) -> dict[str, Any]:
    """Load the GGUF with llama.cpp and the merged folder with transformers; on the token ids ``ids``: whether
    llama.cpp tokenises the same text to the same ids, the largest logit difference (and relative to the largest
    logit), top-1 agreement, and, at ``positions`` among ``label_ids``, whether both read the same labels."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    text = tokenizer.decode(ids)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        a = merged(torch.tensor([ids])).logits[0].numpy()
    llm = Llama(model_path=str(gguf_file), n_ctx=max(64, len(ids) + 8), logits_all=True, verbose=False,
                n_threads=1)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    llm.eval(ids)
    b = np.array(llm.scores[: len(ids)], dtype=np.float32)
    positions = list(range(len(ids))) if positions is None else list(positions)
    cols = list(label_ids) if label_ids is not None else slice(None)
    labels_a = [int(np.argmax(a[p, cols])) for p in positions]
    labels_b = [int(np.argmax(b[p, cols])) for p in positions]
    gap = float(np.abs(a - b).max())
    return {"same_tokens": list(theirs) == list(ids), "max_abs": round(gap, 5),
            "relative": round(gap / float(np.abs(a).max()), 5),
            "top1_agreement": round(float((a.argmax(-1) == b.argmax(-1)).mean()), 4),
            "same_labels": labels_a == labels_b, "labels_merged": labels_a, "labels_gguf": labels_b}
