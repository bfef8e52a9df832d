"""Batch inference through a serving engine: vLLM with the LoRA adapter where it is installed, else transformers.

Both backends read the same prompts (``utils.prompts``) and return what ``pipeline.predict_emotions``
and ``pipeline.predict_causes`` return, so a notebook switches with one parameter:

    engine = serving.load_engine("smollm2", "checkpoints/emotion/conversation/adapter", prefer="auto")
    labelled, stats = serving.predict_emotions(engine, convs, "conversation")

Conversation style on vLLM: the label read at position p (a line's newline, a candidate's last
token) is the one token generated after the prefix ``ids[:p + 1]`` with ``allowed_token_ids`` = the
label tokens and greedy decoding, so it is the argmax over the labels, as in
``inference.label_logprobs``. Each whole query runs once first so that the engine's prefix cache
holds it; the per-position prefixes then reuse those blocks.
per_utterance style on vLLM: free generation parsed like the original recipe, or with
``constrained=True`` a structured-output choice among the valid answers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import prompts
from .data import EMOTIONS, with_emotions, with_pairs

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
    """vLLM's default build serves on CUDA GPUs only."""
    import torch

    return torch.cuda.is_available()


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


def _adapter_rank(adapter: Path) -> int:
    """LoRA rank r of a saved adapter; refuses a folder without safetensors weights."""
    if not (adapter / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{adapter} has no adapter_model.safetensors: save the adapter with "
                                "save_pretrained (notebook 02/04 does)")
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
    """bf16 where the GPU has it, fp16 on a T4 (vLLM's "auto" would keep a GGUF copy's float32)."""
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"


def _load_vllm(model: str, adapter: Path | None, seed: int, vllm_kwargs: dict) -> tuple[Any, Any]:
    """vllm.LLM on the model's local safetensors copy, with LoRA enabled when an adapter is given."""
    import vllm

    from .modeling import local_source

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
    from .modeling import load_model, load_tokenizer

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

    from .inference import stop_token_ids

    stops = stop_token_ids(None, engine.tokenizer)
    common = dict(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=stops)
    if choices is None:
        params: Any = SamplingParams(**common)
    else:
        params = [SamplingParams(**common, **_structured_choice(c)) for c in choices]
    outputs = _generate(engine, [{"prompt_token_ids": list(p)} for p in prompt_ids], params, progress)
    return [out.outputs[0].text for out in outputs]


# ---------------------------------------------------------------- emotions and causes on vLLM

def _emotions_vllm(engine: Engine, max_length: int, style: str, max_new_tokens: int, constrained: bool):
    """fn(conversations) -> one record each (the record format of pipeline's inference loops)."""
    from .modeling import label_token_ids

    tok = engine.tokenizer

    def by_scoring(batch: list[dict]) -> list[dict]:
        queries = [prompts.emotion_queries(conv, tok, max_length) for conv in batch]
        flat = [q for qs in queries for q in qs]
        scores = iter(vllm_label_scores(engine, [q.input_ids for q in flat], [q.positions for q in flat],
                                        label_token_ids(tok, EMOTIONS)))
        out = []
        for conv, qs in zip(batch, queries):
            labels = {key: EMOTIONS[c] for q in qs for key, c in zip(q.keys, next(scores).chosen)}
            out.append({"emotions": [labels[u["utterance_ID"]] for u in conv["conversation"]], "invalid": 0,
                        "n_outputs": len(conv["conversation"]), "n_prompts": len(qs),
                        "prompt_tokens": sum(len(q.input_ids) for q in qs)})
        return out

    def by_generation(batch: list[dict]) -> list[dict]:
        items = [(conv, i, prompts.encode(tok, prompts.chat_text(tok, user)))
                 for conv in batch for i, user in prompts.per_utterance_emotion_prompts(conv)]
        choices = [[prompts.per_utterance_emotion_answer(i, e) for e in EMOTIONS] for _, i, _ in items]
        texts = iter(vllm_generate(engine, [ids for *_, ids in items], max_new_tokens,
                                   choices if constrained else None))
        out = []
        for conv in batch:
            raw = [next(texts) for _ in conv["conversation"]]
            parsed = [prompts.parse_emotion_answer(t, u["utterance_ID"]) for t, u in zip(raw, conv["conversation"])]
            out.append({"emotions": [p or "neutral" for p in parsed], "invalid": sum(p is None for p in parsed),
                        "n_outputs": len(parsed), "raw": raw, "n_prompts": len(parsed),
                        "prompt_tokens": sum(len(ids) for c, _, ids in items if c is conv)})
        return out

    return by_scoring if style == "conversation" else by_generation


def _causes_vllm(engine: Engine, max_length: int, threshold: float, before: int, after: int):
    """fn(conversations) -> pairs whose P(yes) / (P(yes) + P(no)) passes ``threshold`` (conversation style)."""
    from .modeling import label_token_ids

    tok = engine.tokenizer

    def fn(batch: list[dict]) -> list[dict]:
        queries = [prompts.cause_queries(conv, tok, max_length, before, after) for conv in batch]
        flat = [q for qs in queries for q in qs]
        scores = iter(vllm_label_scores(engine, [q.input_ids for q in flat], [q.positions for q in flat],
                                        label_token_ids(tok, prompts.ANSWERS)))
        out = []
        for conv, qs in zip(batch, queries):
            emotion = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
            pairs, probs = [], []
            for q in qs:
                s = next(scores)
                for (i, j), chosen, (yes, no) in zip(q.keys, s.chosen, s.logprobs):
                    p_yes = 1.0 / (1.0 + math.exp(no - yes)) if math.isfinite(yes) and math.isfinite(no) \
                        else float(chosen == 0)  # only the greedy answer came back
                    probs.append([i, j, round(p_yes, 6)])
                    if p_yes > threshold:
                        pairs.append([i, emotion[i], j])
            out.append({"pairs": pairs, "probs": probs, "invalid": 0, "n_outputs": len(probs),
                        "n_prompts": len(qs), "prompt_tokens": sum(len(q.input_ids) for q in qs)})
        return out

    return fn


def _run(convs: list[dict], fn: Callable[[list[dict]], list[dict]], checkpoint_path: str | Path | None,
         batch_size: int, desc: str) -> tuple[list[dict], float]:
    """fn over conversations in batches (resumable per conversation with a checkpoint), and the wall time."""
    from .inference import resumable_map

    start = time.perf_counter()
    if checkpoint_path is None:
        results = [r for k in range(0, len(convs), batch_size) for r in fn(convs[k:k + batch_size])]
    else:
        results = resumable_map(convs, key=lambda c: str(c["conversation_ID"]), fn=fn,
                                checkpoint_path=checkpoint_path, batch_size=batch_size, desc=desc)
    return results, time.perf_counter() - start


def _stats(style: str, convs: list[dict], results: list[dict], wall_s: float) -> dict[str, Any]:
    """Throughput and validity, with the keys pipeline's stats use."""
    n_utt = sum(len(c["conversation"]) for c in convs)
    n_out = sum(r["n_outputs"] for r in results)
    invalid = sum(r["invalid"] for r in results)
    return {"style": style, "backend": "vllm", "conversations": len(convs), "utterances": n_utt,
            "wall_s": round(wall_s, 3), "utterances_per_s": round(n_utt / wall_s, 3) if wall_s > 0 else None,
            "n_prompts": sum(r["n_prompts"] for r in results),
            "prompt_tokens": sum(r["prompt_tokens"] for r in results), "n_outputs": n_out,
            "invalid_outputs": invalid, "invalid_output_share": invalid / n_out if n_out else 0.0}


# ---------------------------------------------------------------- entry points for the notebooks

def predict_emotions(engine: Engine, convs: list[dict], style: str, *, batch_size: int | None = None,
                     checkpoint_path: str | Path | None = None, max_length: int = 1024, max_new_tokens: int = 16,
                     constrained: bool = False) -> tuple[list[dict], dict]:
    """Label every utterance of ``convs`` on the engine's backend; returns (labelled conversations, stats).

    ``batch_size``: conversations per engine call on vLLM (default 64; it schedules within them),
    sequences per forward pass on transformers (default 8). ``constrained`` (vLLM, per_utterance
    style) limits every answer to a valid one.
    """
    prompts.check_style(style)
    if engine.backend == "transformers":
        from .pipeline import predict_emotions as hf_predict

        labelled, stats = hf_predict(engine.model, engine.tokenizer, convs, style, batch_size=batch_size or 8,
                                     checkpoint_path=checkpoint_path, max_length=max_length,
                                     max_new_tokens=max_new_tokens)
        return labelled, {**stats, "backend": "transformers"}
    fn = _emotions_vllm(engine, max_length, style, max_new_tokens, constrained)
    results, wall = _run(convs, fn, checkpoint_path, batch_size or 64, "emotions (vLLM)")
    labelled = [with_pairs(with_emotions(c, r["emotions"]), []) for c, r in zip(convs, results)]
    return labelled, {**_stats(style, convs, results, wall), "constrained": constrained}


def predict_causes(engine: Engine, convs: list[dict], style: str, *, batch_size: int | None = None,
                   checkpoint_path: str | Path | None = None, max_length: int = 1024, threshold: float = 0.5,
                   before: int = prompts.WINDOW_BEFORE, after: int = prompts.WINDOW_AFTER,
                   max_new_tokens: int = 48) -> tuple[list[dict], dict]:
    """Find cause utterances on the engine's backend (vLLM: conversation style); returns (conversations, stats)."""
    prompts.check_style(style)
    if engine.backend == "transformers":
        from .pipeline import predict_causes as hf_predict

        pred, stats = hf_predict(engine.model, engine.tokenizer, convs, style, batch_size=batch_size or 8,
                                 checkpoint_path=checkpoint_path, max_length=max_length, threshold=threshold,
                                 before=before, after=after, max_new_tokens=max_new_tokens)
        return pred, {**stats, "backend": "transformers"}
    if style != "conversation":
        raise ValueError("the vLLM backend scores causes in the conversation style only; "
                         "run the per_utterance baseline with backend 'transformers'")
    results, wall = _run(convs, _causes_vllm(engine, max_length, threshold, before, after), checkpoint_path,
                         batch_size or 64, "causes (vLLM)")
    pred = [with_pairs(c, [tuple(p) for p in r["pairs"]]) for c, r in zip(convs, results)]
    return pred, {**_stats(style, convs, results, wall), "threshold": threshold}
