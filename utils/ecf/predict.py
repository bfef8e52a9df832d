"""Notebooks 03 and 05: label emotions and find causes, resumable per conversation.

The model is read through two calls, ``label_logprobs`` (the label words' log-probs at marked
positions: the conversation style) and ``generate`` (the per_utterance recipe). A transformers
model is wrapped in ``Reader``; a ``utils.lm.serving.Engine`` (vLLM or transformers) has both
calls itself, so one loop, one record format and one set of stats serve every backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import numpy as np

from utils.ecf import prompts, prompts_per_utterance, windows
from utils.ecf.config import CauseInferenceConfig, EmotionInferenceConfig
from utils.ecf.data import EMOTIONS, emotions_digest, with_emotions, with_pairs
from utils.ecf.decision import decide, offsets_vector, p_yes, pairs_above, relabel, with_fallback
from utils.lm import inference
from utils.lm.modeling import label_token_ids, weights_digest
from utils.lm.precision import identity_tag


class EmotionPrediction(NamedTuple):
    """What ``predict_emotions`` returns."""

    convs: list[dict]  # the conversations with every utterance labelled (and no pairs)
    stats: dict  # throughput and validity of this call
    logprobs: list[list[list[float]]]  # per conversation, per utterance: the seven label log-probs (EMOTIONS
    # order) the labels were decided from; [] for per_utterance, which generates its answers


class CausePrediction(NamedTuple):
    """What ``predict_causes`` returns."""

    convs: list[dict]  # the conversations with their predicted emotion-cause pairs
    stats: dict
    probs: list[list]  # [conversation, i, j, P(yes)] per query (conversation style; [] for per_utterance)


class LanguageModel(Protocol):
    """The two reads inference makes (``Reader`` for a transformers model; ``serving.Engine`` for any backend)."""

    backend: str

    def label_logprobs(self, sequences: list[list[int]], positions: list[list[int]], candidate_ids: Sequence[int],
                       batch_size: int) -> list[np.ndarray]: ...

    def generate(self, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int,
                 choices: list[list[str]] | None = None) -> list[str]: ...

    def identity(self) -> str: ...  # names the weights (model and adapter): a checkpoint resumes only for them


@dataclass
class Reader:
    """A transformers model (adapter applied) behind the ``LanguageModel`` calls."""

    model: Any
    tokenizer: Any
    backend: str = "transformers"

    def label_logprobs(self, sequences, positions, candidate_ids, batch_size):
        return inference.label_logprobs(self.model, sequences, positions, list(candidate_ids), batch_size)

    def generate(self, prompt_ids, max_new_tokens, batch_size, choices=None):
        if choices is not None:
            raise ValueError("constrained generation needs the vLLM backend (utils.lm.serving)")
        return inference.generate(self.model, self.tokenizer, prompt_ids, max_new_tokens, batch_size)

    def identity(self) -> str:  # a read under CPU bf16 autocast resumes only such reads (utils.lm.precision)
        return weights_digest(self.model) + identity_tag(self.model)


def reader(model: Any, tokenizer: Any) -> LanguageModel:
    """``model`` itself when it makes both reads (an engine), else a ``Reader`` around it."""
    return model if hasattr(model, "label_logprobs") and hasattr(model, "generate") else Reader(model, tokenizer)


def _resumable(convs: list[dict], fn: Callable[[list[dict]], list[dict]], checkpoint_path: str | Path | None,
               batch_size: int, desc: str, lm: LanguageModel, settings: dict) -> list[dict]:
    """fn over conversations in batches, checkpointed per conversation when a path is given; the checkpoint
    resumes only for the same weights (``lm.identity()``), task and ``settings``."""
    if checkpoint_path is None:
        return [r for k in range(0, len(convs), batch_size) for r in fn(convs[k:k + batch_size])]
    identity = {"task": desc, "weights": lm.identity(), **settings}
    return inference.resumable_map(convs, key=lambda c: str(c["conversation_ID"]), fn=fn,
                                   checkpoint_path=checkpoint_path, batch_size=batch_size, desc=desc,
                                   identity=identity)


def _stats(lm: LanguageModel, style: str, convs: list[dict], results: list[dict], wall_s: float) -> dict[str, Any]:
    """Throughput and validity of one inference run (wall_s: this call only, a resumed run is faster)."""
    n_utt = sum(len(c["conversation"]) for c in convs)
    n_out = sum(r["n_outputs"] for r in results)
    invalid = sum(r["invalid"] for r in results)
    backend = {} if isinstance(lm, Reader) else {"backend": lm.backend}
    return {"style": style, **backend, "conversations": len(convs), "utterances": n_utt, "wall_s": round(wall_s, 3),
            "utterances_per_s": round(n_utt / wall_s, 3) if wall_s > 0 else None,
            "n_prompts": sum(r["n_prompts"] for r in results),
            "prompt_tokens": sum(r["prompt_tokens"] for r in results),
            "n_outputs": n_out, "invalid_outputs": invalid,
            "invalid_output_share": invalid / n_out if n_out else 0.0,
            **({"windowed_conversations": sum(1 for r in results if r.get("windows")),
                "windows": sum(r.get("windows", 0) for r in results)} if any("windows" in r for r in results) else {})}


def _emotion_rows(lm: LanguageModel, tokenizer: Any, batch: list[dict], max_length: int, batch_size: int,
                  fmt: str = prompts.EMOTION_FORMAT) -> tuple[list[list[list[float]]], list[tuple[int, int]]]:
    """Per conversation of ``batch``: the seven label log-probs of each utterance (utterance order),
    and (sequences, prompt tokens) read for it."""
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    queries = [prompts.emotion_queries(conv, tokenizer, max_length, fmt=fmt) for conv in batch]
    flat = [q for qs in queries for q in qs]
    scores = iter(lm.label_logprobs([q.input_ids for q in flat], [q.positions for q in flat], label_ids, batch_size))
    rows, cost = [], []
    for conv, qs in zip(batch, queries):
        by_id = {}
        for q in qs:
            for key, row in zip(q.keys, next(scores)):
                by_id[key] = [round(float(x), 4) for x in row]
        rows.append([by_id[u["utterance_ID"]] for u in conv["conversation"]])
        cost.append((len(qs), sum(len(q.input_ids) for q in qs)))
    return rows, cost


def emotion_logprobs(model: Any, tokenizer: Any, convs: list[dict], max_length: int = 1024,
                     batch_size: int = 8, fmt: str = prompts.EMOTION_FORMAT) -> list[list[list[float]]]:
    """Per conversation, per utterance: the log-probs of the seven labels (EMOTIONS order)."""
    lm, out = reader(model, tokenizer), []
    for k in range(0, len(convs), batch_size):
        out += _emotion_rows(lm, tokenizer, convs[k:k + batch_size], max_length, batch_size, fmt)[0]
    return out


def _emotions_by_scoring(lm: LanguageModel, tokenizer: Any, max_length: int, batch_size: int,
                         offsets: dict[str, float] | None = None, fmt: str = prompts.EMOTION_FORMAT):
    """fn(conversations) -> one record each: every utterance labelled in one pass (conversation style),
    the best of the seven labels after the val-chosen ``offsets`` (always a valid label)."""
    vec = offsets_vector(offsets)

    def fn(batch: list[dict]) -> list[dict]:
        rows, cost = _emotion_rows(lm, tokenizer, batch, max_length, batch_size, fmt)
        return [{"emotions": decide(np.array(r), vec), "logprobs": r, "invalid": 0, "n_outputs": len(r),
                 "n_prompts": n, "prompt_tokens": t} for r, (n, t) in zip(rows, cost)]
    return fn


def _emotions_by_generation(lm: LanguageModel, tokenizer: Any, max_length: int, max_new_tokens: int,
                            batch_size: int, constrained: bool = False):
    """fn(conversations) -> one record each: one generated answer per utterance (per_utterance style);
    ``constrained``: each answer is one of the seven valid ones (vLLM's structured output)."""
    def fn(batch: list[dict]) -> list[dict]:
        items = [(conv, i, prompts_per_utterance.generation_ids(tokenizer, user, max_length - max_new_tokens))
                 for conv in batch for i, user in prompts_per_utterance.per_utterance_emotion_prompts(conv)]
        choices = [[prompts_per_utterance.per_utterance_emotion_answer(i, e) for e in EMOTIONS] for _, i, _ in items]
        texts = iter(lm.generate([ids for _, _, ids in items], max_new_tokens, batch_size,
                                 choices if constrained else None))
        out = []
        for conv in batch:
            labels, invalid, raw = [], 0, []
            for utt in conv["conversation"]:
                text = next(texts)
                label = prompts_per_utterance.parse_emotion_answer(text, utt["utterance_ID"])
                invalid += label is None
                labels.append(label or "neutral")  # the recipe's fallback, counted as invalid above
                raw.append(text)
            tokens = sum(len(ids) for c, _, ids in items if c is conv)
            out.append({"emotions": labels, "invalid": invalid, "n_outputs": len(labels), "raw": raw,
                        "n_prompts": len(labels), "prompt_tokens": tokens})
        return out
    return fn


def predict_emotions(model: Any, tokenizer: Any, convs: list[dict], style: str, batch_size: int = 8,
                     checkpoint_path: str | Path | None = None, max_length: int = 1024,
                     max_new_tokens: int = 16, offsets: dict[str, float] | None = None,
                     constrained: bool = False, fmt: str = prompts.EMOTION_FORMAT) -> EmotionPrediction:
    """Label every utterance of ``convs``. ``model``: a transformers model or a ``serving.Engine``;
    ``offsets``: the per-emotion log-prob offsets chosen on val (conversation style; None: the plain
    argmax); ``constrained`` (per_utterance on vLLM): every answer one of the valid ones; ``fmt``: the
    line format the adapter learnt (its task record's, ``recorded``)."""
    lm = reader(model, tokenizer)
    if prompts.check_style(style) == "fused":
        fn = _fused_free(lm, tokenizer, max_length, offsets)
    elif style == "conversation":
        fn = _emotions_by_scoring(lm, tokenizer, max_length, batch_size, offsets, fmt)
    else:
        fn = _emotions_by_generation(lm, tokenizer, max_length, max_new_tokens, batch_size, constrained)
    start = time.perf_counter()
    settings = {"style": style, "max_length": max_length, "offsets": offsets, "max_new_tokens": max_new_tokens,
                "constrained": constrained, **({"emotion_format": fmt} if fmt != prompts.EMOTION_FORMAT else {})}
    results = _resumable(convs, fn, checkpoint_path, batch_size, "emotions", lm, settings)
    stats = _stats(lm, style, convs, results, time.perf_counter() - start)
    if constrained:
        stats["constrained"] = True
    labelled = [with_pairs(with_emotions(conv, r["emotions"]), []) for conv, r in zip(convs, results)]
    return EmotionPrediction(labelled, stats, [r["logprobs"] for r in results] if style != "per_utterance" else [])


def _transformers_model(lm: LanguageModel) -> Any:
    """The transformers model behind ``lm``: the fused read feeds its own KV cache, which an engine does not expose."""
    if not isinstance(lm, Reader):
        raise ValueError(f"STYLE='fused' reads through a transformers model (its KV cache); backend {lm.backend!r} "
                         "serves the conversation and per_utterance styles")
    return lm.model


def _fused_record(read: Any) -> dict:
    return {"emotions": read.emotions, "logprobs": read.logprobs, "probs": read.probs, "invalid": 0,
            "n_outputs": len(read.emotions) + len(read.probs), "n_prompts": read.forwards, "prompt_tokens": read.tokens}


def _fused_free(lm: LanguageModel, tokenizer: Any, max_length: int, offsets: dict[str, float] | None,
                before: int = prompts.WINDOW_BEFORE):
    """fn(conversations) -> one record each: the fused one-read (``fused.read_free``): emotions decided after
    ``offsets`` and the causes read on them, from one KV cache per conversation."""
    from utils.ecf import fused

    model = _transformers_model(lm)
    return lambda batch: [_fused_record(r) for r in fused.read_free_batch(model, tokenizer, batch, max_length, offsets,
                                                                          before)]


def _fused_forced(lm: LanguageModel, tokenizer: Any, max_length: int, batch_size: int,
                  before: int = prompts.WINDOW_BEFORE):
    """fn(conversations) -> one record each: the fused sequence with the conversations' own emotions inserted."""
    from utils.ecf import fused

    model = _transformers_model(lm)
    return lambda batch: [_fused_record(r) for r in fused.read_forced(model, tokenizer, batch, max_length, batch_size,
                                                                      before)]


def _causes_by_scoring(lm: LanguageModel, tokenizer: Any, max_length: int, batch_size: int, before: int, after: int,
                       layout: str = prompts.CAUSE_LAYOUT):
    """fn(conversations) -> P(yes) / (P(yes) + P(no)) of every (emotion utterance, candidate) query."""
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)

    def fn(batch: list[dict]) -> list[dict]:
        read = [windows.cause_queries(conv, tokenizer, max_length, before, after, layout) for conv in batch]
        queries = [qs for qs, _ in read]
        flat = [q for qs in queries for q in qs]
        scores = iter(lm.label_logprobs([q.input_ids for q in flat], [q.positions for q in flat], yes_no, batch_size)
                      if flat else [])
        out = []
        for qs, (_, n_windows) in zip(queries, read):
            probs = [[i, j, round(p_yes(float(row[0]), float(row[1])), 6)]
                     for q in qs for (i, j), row in zip(q.keys, next(scores))]
            out.append({"probs": probs, "invalid": 0, "n_outputs": len(probs), "n_prompts": len(qs),
                        "prompt_tokens": sum(len(q.input_ids) for q in qs), "windows": n_windows})
        return out
    return fn


def _causes_by_generation(lm: LanguageModel, tokenizer: Any, max_length: int, max_new_tokens: int, batch_size: int):
    """fn(conversations) -> pairs parsed from one generated answer per emotional utterance."""
    def fn(batch: list[dict]) -> list[dict]:
        items = [(conv, i, emo, prompts_per_utterance.generation_ids(tokenizer, user, max_length - max_new_tokens))
                 for conv in batch for i, emo, user in prompts_per_utterance.per_utterance_cause_prompts(conv)]
        texts = lm.generate([x[3] for x in items], max_new_tokens, batch_size) if items else []
        records = {id(conv): {"pairs": [], "invalid": 0, "n_outputs": 0, "raw": [], "n_prompts": 0,
                              "prompt_tokens": 0} for conv in batch}
        for (conv, i, emo, ids), text in zip(items, texts):
            causes, valid = prompts_per_utterance.parse_cause_answer(text, i, len(conv["conversation"]))
            rec = records[id(conv)]
            rec["pairs"] += [[i, emo, j] for j in causes]
            rec["invalid"] += not valid
            rec["n_outputs"] += 1
            rec["n_prompts"] += 1
            rec["prompt_tokens"] += len(ids)
            rec["raw"].append(text)
        return [records[id(conv)] for conv in batch]
    return fn


def predict_causes(model: Any, tokenizer: Any, convs: list[dict], style: str, batch_size: int = 8,
                   checkpoint_path: str | Path | None = None, max_length: int = 1024,
                   threshold: float | dict[str, float] = 0.5,
                   before: int = prompts.WINDOW_BEFORE, after: int = prompts.WINDOW_AFTER,
                   max_new_tokens: int = 48, layout: str = prompts.CAUSE_LAYOUT,
                   decide_offsets: dict[str, float] | None = None) -> CausePrediction:
    """Find the cause utterances of every emotional utterance (``model``: a transformers model or a
    ``serving.Engine``), with the per-query probabilities in the conversation style (``layout``: the cause
    lines the adapter learnt, its task record's: ``recorded``). STYLE="fused": on the conversations' own
    emotions (a forced read), or with ``decide_offsets`` the one read that decides the emotions itself after
    those offsets (the returned conversations then carry the emotions it read)."""
    lm = reader(model, tokenizer)
    if prompts.check_style(style) == "fused":
        fn = (_fused_forced(lm, tokenizer, max_length, batch_size, before) if decide_offsets is None
              else _fused_free(lm, tokenizer, max_length, decide_offsets, before))
    elif style == "conversation":
        fn = _causes_by_scoring(lm, tokenizer, max_length, batch_size, before, after, layout)
    else:
        fn = _causes_by_generation(lm, tokenizer, max_length, max_new_tokens, batch_size)
    start = time.perf_counter()
    settings = {"style": style, "max_length": max_length, "window": [before, after], "max_new_tokens": max_new_tokens,
                **({"cause_layout": layout} if layout != prompts.CAUSE_LAYOUT else {}),
                "emotions": emotions_digest(convs),  # a checkpoint made on other emotions (another rule) is not resumed
                **({"decide_offsets": decide_offsets} if decide_offsets is not None else {})}
    results = _resumable(convs, fn, checkpoint_path, batch_size, "causes", lm, settings)
    stats = _stats(lm, style, convs, results, time.perf_counter() - start)
    stats["threshold"] = threshold if style != "per_utterance" else None
    if style == "fused":  # the emotions the read used (its own where it decided them)
        convs = [with_emotions(conv, r["emotions"]) for conv, r in zip(convs, results)]
    pred = [with_pairs(conv, pairs_above(conv, r["probs"], threshold) if "probs" in r else [tuple(x) for x in r["pairs"]])
            for conv, r in zip(convs, results)]
    probs = [[conv["conversation_ID"], *x] for conv, r in zip(convs, results) for x in r.get("probs", [])]
    return CausePrediction(pred, stats, probs)


def recorded(task: dict) -> dict[str, str]:
    """The prompt format an adapter's task record names, as the keyword predict_emotions (``fmt``) or
    predict_causes (``layout``) takes it; a record written before the field: the format there was then."""
    if task.get("style") == "fused":
        return {}  # one layout
    if task["task"] == "emotion":
        fmt = task.get("emotion_format", "compact")
        prompts.check_emotion_format(fmt)
        return {"fmt": fmt}
    return {"layout": prompts.check_layout(task.get("cause_layout", "inline"))}


def emotion_offsets(cfg: EmotionInferenceConfig, task: dict) -> dict[str, float] | None:
    """The offsets 02 chose on val when USE_VAL_OFFSETS and recorded, else None (the plain argmax)."""
    return task.get("offsets") if cfg.USE_VAL_OFFSETS else None


def cause_threshold(cfg: CauseInferenceConfig, task: dict) -> float | dict[str, float]:
    """The cut-off(s) 04 chose on val when USE_VAL_THRESHOLD and recorded, else CAUSE_THRESHOLD."""
    if cfg.USE_VAL_THRESHOLD and "threshold" in task:
        t = task["threshold"]
        return {k: float(v) for k, v in t.items()} if isinstance(t, dict) else float(t)
    return cfg.CAUSE_THRESHOLD


@dataclass(frozen=True)
class CauseRule:
    """How notebook 05 turns the cause model's P(yes) into pairs: on which emotions, with which cut-offs."""

    name: str  # "end_to_end" (chosen on val for the pair score) or "stage_wise" (03's emotions, 04's cut-offs)
    inputs: list[dict]  # the conversations with the emotions the cause model reads (and no pairs)
    threshold: float | dict[str, float]  # the P(yes) cut-off(s)
    fallback: str  # what an emotional utterance left with no pair gets (decision.FALLBACKS)
    note: str  # one line: which rule this is and why
    decide_offsets: dict[str, float] | None = None  # STYLE="fused": the one read decides the emotions after these
    # (the conversations it returns carry them); None: the emotions of ``inputs`` are read as they are


def stage_wise_rule(cfg: CauseInferenceConfig, task: dict, convs: list[dict], why: str = "") -> CauseRule:
    """The emotions of ``convs`` as they are, 04's cut-off(s) on gold emotions (or CAUSE_THRESHOLD), no fallback."""
    threshold = cause_threshold(cfg, task)
    return CauseRule("stage_wise", convs, threshold, "none",
                     f"stage-wise rule: the emotions as given, cut-off(s) {threshold}" + (f" ({why})" if why else ""))


def cause_rule(cfg: CauseInferenceConfig, task: dict, convs: list[dict],
               logprobs: dict[Any, list[list[float]]] | None) -> CauseRule:
    """The rule DECISION_RULE selects for ``convs`` (03's labelled test conversations): "end_to_end" relabels
    them from 03's log-probs (``logprobs``, conversation_ID -> rows) with the offsets 04 chose on val for the
    pair score, with its cut-offs and fallback; the stage-wise rule where that cannot apply, saying why."""
    if cfg.DECISION_RULE == "stage_wise":
        return stage_wise_rule(cfg, task, convs, "DECISION_RULE='stage_wise'")
    if cfg.CAUSE_EMOTIONS == "gold":
        return stage_wise_rule(cfg, task, convs, "gold emotions: nothing to choose for the emotion stage")
    rule = task.get("end_to_end")
    if not rule or not cfg.USE_VAL_THRESHOLD:
        skipped = (task.get("end_to_end_tuning") or {}).get("skipped")  # val below the floor (decision.below_floor)
        why = ("USE_VAL_THRESHOLD=False" if rule else f"notebook 04 chose no end-to-end rule: {skipped}" if skipped
               else "notebook 04 recorded no end-to-end rule: it needs 02's val log-probs, conversation style")
        return stage_wise_rule(cfg, task, convs, why)
    if rule.get("emotion_fingerprint"):  # 02 retrained since 04 chose the rule: its offsets are another adapter's
        from utils.ecf.artifacts import TASK_FILE, rule_mismatch, task_dir
        from utils.io import read_json

        path = task_dir(cfg, "emotion") / TASK_FILE
        mismatch = path.is_file() and rule_mismatch(read_json(path), task)
        if mismatch:
            return stage_wise_rule(cfg, task, convs, f"{mismatch}: rerun notebook 04 to choose it for this one")
    if not logprobs:
        return stage_wise_rule(cfg, task, convs, "notebook 03 saved no emotion log-probs (conversation style only)")
    shift = rule["neutral_shift"]
    if cfg.STYLE == "fused":  # the one read decides the emotions again, with the rule's offsets, and reads on them
        return CauseRule("end_to_end", [with_pairs(c, []) for c in convs], rule["threshold"], rule["fallback"],
                         f"end-to-end rule chosen on val in 04 (fused one read): neutral offset {shift:+g} on 02's "
                         f"offsets while the test conversations are read again, cut-off(s) {rule['threshold']}, "
                         f"fallback {rule['fallback']!r} (val pair weighted F1 {rule['weighted_f1']:.4f})",
                         decide_offsets=rule["offsets"])
    inputs = [with_pairs(c, []) for c in relabel(convs, logprobs, rule["offsets"])]
    return CauseRule("end_to_end", inputs, rule["threshold"], rule["fallback"],
                     f"end-to-end rule chosen on val in 04: neutral offset {shift:+g} on 02's offsets for the emotions "
                     f"the cause model reads, cut-off(s) {rule['threshold']}, fallback {rule['fallback']!r} "
                     f"(val pair weighted F1 {rule['weighted_f1']:.4f}"
                     + (f" against {rule['stage_wise']['weighted_f1']:.4f} stage-wise)" if rule.get("stage_wise") else ")"))


def cause_run(cfg: CauseInferenceConfig, model: Any, tokenizer: Any, rule: CauseRule, task: dict,
              out: str | Path) -> CausePrediction:
    """Notebook 05's cause run over ``rule.inputs`` with the settings notebook 04 recorded in ``task`` and
    ``rule``'s cut-offs and fallback: resumable beside ``out``, the pairs written there in the official format
    when it finishes."""
    from utils.ecf.artifacts import checkpoint_for, finish

    found = predict_causes(model, tokenizer, rule.inputs, cfg.STYLE, cfg.BATCH_SIZE, checkpoint_for(out),
                           task["max_length"], rule.threshold, task["window_before"], task["window_after"],
                           cfg.MAX_NEW_TOKENS, decide_offsets=rule.decide_offsets, **recorded(task))
    pred = with_fallback(found.convs, rule.fallback) if cfg.STYLE != "per_utterance" else found.convs
    stats = {**found.stats, "decision_rule": rule.name, "fallback": rule.fallback}
    finish(out, pred)
    return CausePrediction(pred, stats, found.probs)


def gold_emotion_run(cfg: CauseInferenceConfig, model: Any, tokenizer: Any, test: list[dict], task: dict,
                     out: str | Path) -> CausePrediction | None:
    """The cause model on the test split's gold emotions (``out``), with 04's cut-offs on gold emotions: the row
    that isolates the cause model, beside self + previous on the same gold emotions; None where the run already
    uses gold emotions, GOLD_EMOTION_RUN is off or the test file has no annotations."""
    from dataclasses import replace

    from utils.ecf.artifacts import annotated, cause_inputs

    if cfg.CAUSE_EMOTIONS == "gold" or not cfg.GOLD_EMOTION_RUN or not annotated(test):
        return None
    gold = cause_inputs(replace(cfg, CAUSE_EMOTIONS="gold"), test)
    return cause_run(cfg, model, tokenizer, stage_wise_rule(cfg, task, gold), task, out)


def stage_wise_run(cfg: CauseInferenceConfig, model: Any, tokenizer: Any, test: list[dict], convs: list[dict],
                   rule: CauseRule, task: dict, out: str | Path) -> CausePrediction | None:
    """With the end-to-end rule, the stage-wise one on the same test conversations (``convs``: 03's emotions) as
    well (``out``), so both rules are scored side by side; None where ``rule`` is stage-wise, STAGE_WISE_RUN
    is off or the test file (``test``) has no annotations to score them against."""
    from utils.ecf.artifacts import annotated

    if rule.name != "end_to_end" or not cfg.STAGE_WISE_RUN or not annotated(test):
        return None
    return cause_run(cfg, model, tokenizer, stage_wise_rule(cfg, task, convs), task, out)
