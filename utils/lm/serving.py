"""Batch inference through a serving engine: vLLM with the LoRA adapter where it is installed, else transformers.

An ``Engine`` makes the two reads inference needs, whatever its backend, so ``utils.ecf.predict``
takes one in place of a model and a notebook switches backends with one parameter:

    engine = serving.load_engine("smollm2", "checkpoints/emotion/conversation/adapter", prefer="auto")
    labelled, stats, _ = predict.predict_emotions(engine, engine.tokenizer, convs, "conversation")

``label_logprobs`` on vLLM: the label read at position p (a line's newline, a candidate's last
token) is the one token generated after the prefix ``ids[:p + 1]`` with ``allowed_token_ids`` = the
label tokens and greedy decoding, so it is the argmax over the labels, as in
``inference.label_logprobs``; the candidates' log-probs come back with it (where the engine returns
only the greedy one, its row is 0 there and -inf elsewhere). Each whole query runs once first so
that the engine's prefix cache holds it; the per-position prefixes then reuse those blocks.
``generate`` on vLLM: greedy, or with ``choices`` a structured-output choice among valid answers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils import env
from utils.lm import inference, precision
from utils.io import file_sha256
from utils.lm.modeling import check_adapter, load_model, load_tokenizer, weights_digest

BACKENDS = ("auto", "vllm", "transformers")
LORA_NAME, LORA_ID = "emocause", 1  # one adapter per engine
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
NEG_INF = float("-inf")


# ---------------------------------------------------------------- choosing a backend

def vllm_installed() -> bool:
    """Whether ``import vllm`` can work here (an already imported module counts)."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    return importlib.util.find_spec("vllm") is not None


def _cuda_available() -> bool:
    """vLLM's default build serves on CUDA GPUs only: torch must be able to put tensors on one."""
    return env.torch_device() != "cpu"


def backend(prefer: str = "auto") -> str:
    """"vllm" or "transformers": ``auto`` takes vLLM where it is installed and a GPU is visible."""
    if prefer not in BACKENDS:
        raise ValueError(f"backend {prefer!r}: use one of {list(BACKENDS)}")
    if prefer == "transformers":
        return "transformers"
    if prefer == "vllm":
        if not vllm_installed():
            raise ImportError("vLLM is not installed: `pip install vllm` on a Linux CUDA machine, "
                              "or use backend 'transformers' (or 'auto', which falls back to it)")
        return "vllm"
    return "vllm" if vllm_installed() and _cuda_available() else "transformers"


# ---------------------------------------------------------------- engines

@dataclass
class Engine:
    """A loaded model behind one backend."""

    backend: str  # "vllm" or "transformers"
    model_name: str  # what the user passed: alias, path or hub id
    adapter: str | None  # LoRA adapter folder
    tokenizer: Any
    model: Any  # the transformers model (adapter applied) or the vllm.LLM
    lora_request: Any = None  # vllm LoRARequest, or None

    def label_logprobs(self, sequences: list[list[int]], positions: list[list[int]], candidate_ids: Sequence[int],
                       batch_size: int = 8) -> list[np.ndarray]:
        """Per sequence, [len(positions), len(candidates)] log-probs of the candidates at each position."""
        if self.backend == "transformers":
            return inference.label_logprobs(self.model, sequences, positions, list(candidate_ids), batch_size)
        out = []
        for scores in vllm_label_scores(self, sequences, positions, candidate_ids):
            rows = scores.logprobs.copy()
            for k, chosen in enumerate(scores.chosen):
                if not np.isfinite(rows[k]).all():  # only the greedy answer is known
                    rows[k] = np.where(np.arange(len(candidate_ids)) == chosen, 0.0, NEG_INF)
            out.append(rows)
        return out

    def identity(self) -> str:
        """The model and the adapter's weights: an inference checkpoint resumes only for the same ones."""
        if self.backend == "transformers":
            return weights_digest(self.model) + precision.identity_tag(self.model)
        return f"{self.model_name}:{file_sha256(self.adapter) if self.adapter else None}"

    def generate(self, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                 choices: list[list[str]] | None = None) -> list[str]:
        """Greedy answers (cut at end of turn); with ``choices`` (vLLM) each one of its prompt's choices."""
        if self.backend == "transformers":
            if choices is not None:
                raise ValueError("constrained generation needs the vLLM backend")
            return inference.generate(self.model, self.tokenizer, prompt_ids, max_new_tokens, batch_size)
        return vllm_generate(self, prompt_ids, max_new_tokens, choices)


def _adapter_rank(adapter: Path) -> int:
    """LoRA rank r of a saved adapter; refuses a folder without safetensors weights."""
    check_adapter(adapter, "save the adapter with save_pretrained (notebook 02/04 does)")
    return int(json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["r"])


def _accepts(cls: Any, name: str) -> bool:
    """Whether the vLLM class ``cls`` (msgspec struct, dataclass or plain) takes keyword ``name``."""
    fields = getattr(cls, "__struct_fields__", None)
    if fields is not None:
        return name in fields
    if dataclasses.is_dataclass(cls):
        return name in {f.name for f in dataclasses.fields(cls)}
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _vllm_dtype() -> str:
    """bf16 where the GPU has it natively, fp16 on a T4 (vLLM's "auto" would keep a GGUF copy's float32)."""
    return "bfloat16" if env.detect().bf16 else "float16"


def _load_vllm(model: str, adapter: Path | None, seed: int, vllm_kwargs: dict) -> tuple[Any, Any]:
    """vllm.LLM on the model's local safetensors copy, with LoRA enabled when an adapter is given."""
    import vllm

    from utils.lm.sources import local_source

    source = local_source(model)  # GGUF files are dequantised to a cached safetensors folder
    kwargs: dict[str, Any] = dict(model=source, tokenizer=source, seed=seed, dtype=_vllm_dtype(),
                                  enable_prefix_caching=True)
    lora_request = None
    if adapter is not None:
        rank = _adapter_rank(adapter)
        kwargs.update(enable_lora=True, max_loras=1,
                      max_lora_rank=next((r for r in VLLM_LORA_RANKS if r >= rank), rank))
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest(LORA_NAME, LORA_ID, str(adapter))
    exact = _accepts(vllm.SamplingParams, "logprob_token_ids")
    if not exact and _accepts(getattr(vllm, "EngineArgs", None), "logprobs_mode"):
        kwargs["logprobs_mode"] = "processed_logprobs"  # top-k after allowed_token_ids: exactly the candidates
    kwargs.update(vllm_kwargs)
    return vllm.LLM(**kwargs), lora_request


def load_engine(model: str, adapter: str | Path | None = None, prefer: str = "auto", *, seed: int = 42,
                **vllm_kwargs: Any) -> Engine:
    """Load ``model`` (+ LoRA ``adapter``) on the chosen backend; extra keywords go to ``vllm.LLM``."""
    name = backend(prefer)
    adapter_path = Path(adapter) if adapter is not None else None
    tokenizer = load_tokenizer(model)
    if name == "transformers":
        return Engine(name, model, str(adapter_path) if adapter_path else None, tokenizer,
                      load_model(model, adapter=adapter_path))
    llm, lora_request = _load_vllm(model, adapter_path, seed, vllm_kwargs)
    return Engine(name, model, str(adapter_path) if adapter_path else None, tokenizer, llm, lora_request)


# ---------------------------------------------------------------- vLLM requests

def _generate(engine: Engine, requests: list[dict], params: Any, progress: bool = False) -> list[Any]:
    """One batched ``LLM.generate`` call with the engine's adapter; outputs come back in request order."""
    if not requests:
        return []
    return engine.model.generate(requests, params, lora_request=engine.lora_request, use_tqdm=progress)


def _label_params(candidate_ids: Sequence[int]) -> Any:
    """One greedy token restricted to the candidates, with the candidates' log-probs returned."""
    from vllm import SamplingParams

    kwargs: dict[str, Any] = dict(max_tokens=1, temperature=0.0, allowed_token_ids=list(candidate_ids))
    if _accepts(SamplingParams, "logprob_token_ids"):
        kwargs["logprob_token_ids"] = list(candidate_ids)  # exact log-probs of exactly these tokens
    else:
        kwargs["logprobs"] = len(candidate_ids)  # top-k (processed mode: the allowed tokens)
    return SamplingParams(**kwargs)


def _candidate_row(completion: Any, candidate_ids: Sequence[int]) -> np.ndarray:
    """The candidates' log-probs at the generated position; -inf where the engine returned none."""
    step = (completion.logprobs or [{}])[0] or {}
    row = []
    for token in candidate_ids:
        entry = step.get(token)
        row.append(NEG_INF if entry is None else float(getattr(entry, "logprob", entry)))
    return np.asarray(row, dtype=np.float64)


@dataclass
class PositionScores:
    """What vLLM answered at the read positions of one sequence."""

    chosen: list[int]  # index into the candidates of the greedy allowed token, per position
    logprobs: np.ndarray  # [positions, candidates]; -inf where not returned


def vllm_label_scores(engine: Engine, sequences: list[list[int]], positions: list[list[int]],
                      candidate_ids: Sequence[int], warm_cache: bool = True,
                      progress: bool = False) -> list[PositionScores]:
    """Per sequence, the candidate picked (and log-probs) at each position p, reading the prefix ``ids[:p + 1]``."""
    from vllm import SamplingParams

    if len(sequences) != len(positions):
        raise ValueError(f"{len(sequences)} sequences but {len(positions)} position lists")
    if warm_cache:  # whole queries first: the prefixes below then hit cached KV blocks
        _generate(engine, [{"prompt_token_ids": list(s)} for s, ps in zip(sequences, positions) if ps],
                  SamplingParams(max_tokens=1, temperature=0.0))
    requests, owners = [], []
    for i, (seq, ps) in enumerate(zip(sequences, positions)):
        for k, p in enumerate(ps):
            q = p + len(seq) if p < 0 else p
            if not 0 <= q < len(seq):
                raise IndexError(f"position {p} is outside a sequence of {len(seq)} tokens")
            requests.append({"prompt_token_ids": list(seq[: q + 1])})
            owners.append((i, k))
    results = [PositionScores([0] * len(ps), np.full((len(ps), len(candidate_ids)), NEG_INF)) for ps in positions]
    index = {t: n for n, t in enumerate(candidate_ids)}
    for (i, k), out in zip(owners, _generate(engine, requests, _label_params(candidate_ids), progress), strict=True):
        completion = out.outputs[0]
        token = completion.token_ids[0]
        if token not in index:
            raise RuntimeError(f"vLLM returned token {token} outside the allowed candidates {list(candidate_ids)}")
        results[i].chosen[k] = index[token]
        results[i].logprobs[k] = _candidate_row(completion, candidate_ids)
    return results


def _structured_choice(choices: list[str]) -> dict[str, Any]:
    """SamplingParams keywords that restrict the output to one of ``choices`` (new and older vLLM)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(choice=choices)}
    except ImportError:  # vLLM < 0.11 names it guided decoding
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(choice=choices)}


def vllm_generate(engine: Engine, prompt_ids: list[list[int]], max_new_tokens: int,
                  choices: list[list[str]] | None = None, progress: bool = False) -> list[str]:
    """Greedy generation that stops at end-of-turn; with ``choices`` each output is one of its prompt's choices."""
    from vllm import SamplingParams

    stops = inference.stop_token_ids(None, engine.tokenizer)
    common = dict(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=stops)
    if choices is None:
        params: Any = SamplingParams(**common)
    else:
        params = [SamplingParams(**common, **_structured_choice(c)) for c in choices]
    outputs = _generate(engine, [{"prompt_token_ids": list(p)} for p in prompt_ids], params, progress)
    return [out.outputs[0].text for out in outputs]
