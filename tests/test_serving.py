"""Serving: the transformers fallback for real; the vLLM branch against a fake ``vllm`` that records its calls.

The fake answers like vLLM would (greedy token among ``allowed_token_ids``, log-probs of the asked
tokens, structured choices) but computes with the tiny model itself, so the vLLM branch's
predictions must equal the transformers path's.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.ecf import predict, prompts, prompts_per_utterance
from utils.lm import serving
from utils.ecf.data import EMOTIONS, SAMPLE_PATH, load_ecf, strip_labels, with_pairs
from utils.lm.modeling import LoadStrategy, label_token_ids, load_model

CPU = LoadStrategy("full-precision", "cpu", torch.float32)
N_CONVS = 4


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter (r=8) with random A and B, so it changes the model's answers."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(load_model(str(tiny_model_dir), strategy=CPU), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def convs() -> list[dict]:
    return load_ecf(SAMPLE_PATH)[:N_CONVS]


# ---------------------------------------------------------------- the fake vllm

@dataclasses.dataclass
class Logprob:
    logprob: float


@dataclasses.dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclasses.dataclass
class StructuredOutputsParams:  # vLLM >= 0.11; GuidedDecodingParams before
    choice: list[str] | None = None


@dataclasses.dataclass
class NewSamplingParams:  # newest vLLM: exact log-probs of chosen token ids
    max_tokens: int | None = 16
    temperature: float = 1.0
    allowed_token_ids: list[int] | None = None
    logprobs: int | None = None
    logprob_token_ids: list[int] | None = None
    stop_token_ids: list[int] | None = None
    structured_outputs: StructuredOutputsParams | None = None


@dataclasses.dataclass
class OldSamplingParams:  # vLLM 0.10: top-k log-probs only, guided decoding
    max_tokens: int | None = 16
    temperature: float = 1.0
    allowed_token_ids: list[int] | None = None
    logprobs: int | None = None
    stop_token_ids: list[int] | None = None
    guided_decoding: StructuredOutputsParams | None = None


@dataclasses.dataclass
class OldEngineArgs:
    model: str = ""
    logprobs_mode: str = "raw_logprobs"


class FakeLLM:
    """Records its construction and every generate call; answers with the tiny model plus the LoRA adapter."""

    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self._models = kwargs, [], {}
        FakeLLM.instances.append(self)

    def _model(self, lora_request):
        path = lora_request.lora_path if lora_request else None
        if path not in self._models:
            self._models[path] = load_model(self.kwargs["model"], strategy=CPU, adapter=path)
        return self._models[path]

    def generate(self, requests, params, *, lora_request=None, use_tqdm=True):
        self.calls.append((requests, params, lora_request))
        per_request = params if isinstance(params, list) else [params] * len(requests)
        model = self._model(lora_request)
        with torch.inference_mode():
            return [self._one(model, r["prompt_token_ids"], p) for r, p in zip(requests, per_request)]

    def _one(self, model, ids, p):
        constraint = getattr(p, "structured_outputs", None) or getattr(p, "guided_decoding", None)
        if constraint is not None:
            return self._choose(model, ids, constraint.choice)
        tokens, steps = [], []
        for _ in range(p.max_tokens):
            logp = torch.log_softmax(model(torch.tensor([ids + tokens])).logits[0, -1].float(), -1)
            processed = logp
            if p.allowed_token_ids:
                masked = torch.full_like(logp, float("-inf"))
                masked[p.allowed_token_ids] = logp[p.allowed_token_ids]
                processed = torch.log_softmax(masked, -1)
            token = int(processed.argmax())
            source = processed if self.kwargs.get("logprobs_mode") == "processed_logprobs" else logp
            entries = {}
            if getattr(p, "logprob_token_ids", None):
                entries = {t: Logprob(float(logp[t])) for t in p.logprob_token_ids}
            elif p.logprobs:
                entries = {int(t): Logprob(float(source[t])) for t in source.topk(p.logprobs).indices}
            entries[token] = Logprob(float(source[token]))  # the sampled token always comes back
            tokens.append(token)
            steps.append(entries)
            if token in (p.stop_token_ids or []):
                break
        return _output(tokens, steps, "")

    def _choose(self, model, ids, choices):
        from utils.lm.inference import score_options

        tok = self._tokenizer()
        options = [prompts.encode(tok, c) for c in choices]
        best = int(np.argmax(score_options(model, [ids], options)[0]))
        return _output(options[best], None, choices[best])

    def _tokenizer(self):
        from utils.lm.modeling import load_tokenizer

        return load_tokenizer(self.kwargs["tokenizer"])


def _output(tokens, steps, text):
    return types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=tokens, logprobs=steps, text=text)])


def _install_fake_vllm(monkeypatch, generation: str) -> None:
    """Put a fake vllm (``new`` or ``old`` API generation) into sys.modules."""
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    sampling = types.ModuleType("vllm.sampling_params")
    if generation == "new":
        vllm.SamplingParams = NewSamplingParams
        sampling.StructuredOutputsParams = StructuredOutputsParams
    else:
        vllm.SamplingParams, vllm.EngineArgs = OldSamplingParams, OldEngineArgs
        sampling.GuidedDecodingParams = StructuredOutputsParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, module in (("vllm", vllm), ("vllm.sampling_params", sampling), ("vllm.lora", lora),
                         ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances = []


# ---------------------------------------------------------------- tests

def test_backend_choice(monkeypatch):
    assert not serving.vllm_installed()  # not installable on this CPU-only machine
    assert serving.backend() == "transformers" and serving.backend("transformers") == "transformers"
    with pytest.raises(ImportError, match="pip install vllm"):
        serving.backend("vllm")
    with pytest.raises(ValueError, match="auto"):
        serving.backend("tgi")
    _install_fake_vllm(monkeypatch, "new")
    assert serving.backend("vllm") == "vllm"
    assert serving.backend("auto") == "transformers"  # installed, but no GPU to serve on
    monkeypatch.setattr(serving, "_cuda_available", lambda: True)
    assert serving.backend("auto") == "vllm"


def test_transformers_fallback_is_the_pipeline_path(tiny_model_dir, adapter_dir, convs):
    engine = serving.load_engine(str(tiny_model_dir), adapter_dir)  # auto: no vLLM here
    assert engine.backend == "transformers" and engine.lora_request is None
    labelled, stats, _ = predict.predict_emotions(engine, engine.tokenizer, strip_labels(convs), "conversation")
    direct, _, _ = predict.predict_emotions(engine.model, engine.tokenizer, strip_labels(convs), "conversation")
    assert labelled == direct and stats["backend"] == "transformers" and stats["invalid_outputs"] == 0
    assert {u["emotion"] for c in labelled for u in c["conversation"]} <= set(EMOTIONS)
    pred, cause_stats, _ = predict.predict_causes(engine, engine.tokenizer, [with_pairs(c, []) for c in convs], "conversation")
    assert len(pred) == N_CONVS and cause_stats["backend"] == "transformers" and cause_stats["n_outputs"] > 0


@pytest.mark.parametrize("generation", ["new", "old"])
def test_vllm_branch_labels_like_transformers(monkeypatch, tiny_model_dir, adapter_dir, convs, generation):
    reference = serving.load_engine(str(tiny_model_dir), adapter_dir, prefer="transformers")
    want, _, _ = predict.predict_emotions(reference, reference.tokenizer, strip_labels(convs), "conversation")
    want_pairs, want_stats, _ = predict.predict_causes(reference, reference.tokenizer, [with_pairs(c, []) for c in convs], "conversation")

    _install_fake_vllm(monkeypatch, generation)
    engine = serving.load_engine(str(tiny_model_dir), adapter_dir, prefer="vllm")
    llm = FakeLLM.instances[-1]
    assert engine.backend == "vllm" and llm.kwargs["model"] == str(Path(tiny_model_dir).resolve())
    assert llm.kwargs["enable_lora"] and llm.kwargs["enable_prefix_caching"] and llm.kwargs["max_lora_rank"] == 8
    assert llm.kwargs.get("logprobs_mode") == (None if generation == "new" else "processed_logprobs")

    got, stats, _ = predict.predict_emotions(engine, engine.tokenizer, strip_labels(convs), "conversation")
    assert got == want and stats["backend"] == "vllm" and stats["invalid_outputs"] == 0
    label_calls = [c for c in llm.calls if c[1].allowed_token_ids]
    assert label_calls and all(lora.lora_path == str(adapter_dir) for _, _, lora in llm.calls)
    label_ids = label_token_ids(engine.tokenizer, EMOTIONS)
    marker = prompts.encode(engine.tokenizer, prompts.EMOTION_FORMATS[prompts.EMOTION_FORMAT][1])
    for requests, params, _ in label_calls:  # each request: a prefix ending at a line's marker, one label token allowed
        assert params.allowed_token_ids == label_ids and params.max_tokens == 1 and params.temperature == 0.0
        assert all(r["prompt_token_ids"][-len(marker):] == marker for r in requests)
    assert sum(len(r) for r, _, _ in label_calls) == sum(len(c["conversation"]) for c in convs)

    pairs, cause_stats, _ = predict.predict_causes(engine, engine.tokenizer, [with_pairs(c, []) for c in convs], "conversation")
    assert cause_stats["n_outputs"] == want_stats["n_outputs"] > 0
    assert pairs == want_pairs  # same pairs at the threshold: P(yes) renormalised over {yes, no}


def test_vllm_constrained_choice_and_adapter_checks(monkeypatch, tiny_model_dir, adapter_dir, convs, tmp_path):
    _install_fake_vllm(monkeypatch, "new")
    engine = serving.load_engine(str(tiny_model_dir), adapter_dir, prefer="vllm")
    labelled, stats, _ = predict.predict_emotions(engine, engine.tokenizer, strip_labels(convs[:2]), "per_utterance", constrained=True)
    (requests, params, _), = FakeLLM.instances[-1].calls
    assert len(requests) == len(params) == sum(len(c["conversation"]) for c in convs[:2])
    first = convs[0]["conversation"][0]["utterance_ID"]
    assert params[0].structured_outputs.choice == [prompts_per_utterance.per_utterance_emotion_answer(first, e)
                                                   for e in EMOTIONS]
    assert stats["invalid_outputs"] == 0 and stats["constrained"] is True
    assert {u["emotion"] for c in labelled for u in c["conversation"]} <= set(EMOTIONS)
    found = predict.predict_causes(engine, engine.tokenizer, [with_pairs(c, []) for c in convs[:2]], "per_utterance",
                                   max_new_tokens=8)  # the recipe's generation, through the same loop
    assert found.stats["backend"] == "vllm" and found.stats["n_outputs"] > 0 and found.probs == []
    (tmp_path / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        serving.load_engine(str(tiny_model_dir), tmp_path, prefer="vllm")
