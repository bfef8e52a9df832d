"""One read for both stages (STYLE="fused"): one adapter labels each utterance and reads its causes.

The sequence is ``prompts.fused_queries``': each utterance's line, its emotion word, and for an emotional
utterance one digit per candidate cause, read as yes/no. Two ways to read it:

- ``free`` (``read_free``): the model decides each emotion at its marker (label log-probs + offsets, as the
  conversation style decides), the chosen word is fed back and the conversation goes on from the same KV
  cache: one forward call per utterance, each on the new tokens only. What notebooks 03 and 05 run: the
  cause reads see the emotions the model itself predicted, nothing else.
- ``forced`` (``read_forced``): the emotions are given (gold, or an earlier read's); the whole sequence is
  then known, so it is one batched forward pass per conversation, exactly the sequence training saw. The same
  emotions give the same numbers either way (tests/test_fused.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from utils.ecf import prompts
from utils.ecf.data import EMOTIONS
from utils.ecf.decision import decide, offsets_vector
from utils.lm import inference
from utils.lm.modeling import label_token_ids


@dataclass
class FusedRead:
    """What one read of one conversation gives."""

    emotions: list[str]  # per utterance: the emotion decided (free) or given (forced)
    logprobs: list[list[float]]  # per utterance: the seven label log-probs (EMOTIONS order) at its marker
    probs: list[list] = field(default_factory=list)  # [i, j, P(yes)] per cause read
    forwards: int = 0  # forward calls made
    tokens: int = 0  # tokens fed


def _p_yes(row: Sequence[float]) -> float:
    """P(yes) / (P(yes) + P(no)) from the two log-probs (as ``predict.p_yes``)."""
    yes, no = float(row[0]), float(row[1])
    if math.isinf(yes) or math.isinf(no):
        return float(yes >= no)
    return round(1.0 / (1.0 + math.exp(no - yes)), 6)


def _cache_argument(model: Any) -> str:
    """The forward argument (and output field) of the KV cache: "cache" from transformers 5.2x, "past_key_values"
    before (hosted notebooks may have either)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def read_free(model: Any, tokenizer: Any, conv: dict, max_length: int, offsets: dict[str, float] | None = None,
              before: int = prompts.WINDOW_BEFORE) -> FusedRead:
    """``conv`` read once: at each marker the emotion with the best log-prob after ``offsets`` is inserted, its
    candidate digits follow when it is not neutral, and the next utterance continues from the KV cache. A
    conversation longer than ``max_length`` starts a fresh cache where training started a fresh chunk."""
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    header, end, units = prompts.fused_units(conv, tokenizer, max_length, before)
    vec = offsets_vector(offsets)
    device = inference.model_device(model)
    labels_t = torch.tensor(label_ids, device=device)
    answers_t = torch.tensor(yes_no, device=device)
    out = FusedRead([], [])
    state: dict[str, Any] = {"past": None, "cached": 0}

    cache_arg = _cache_argument(model)

    def forward(ids: list[int]) -> torch.Tensor:
        result = model(input_ids=torch.tensor([ids], device=device), use_cache=True, **{cache_arg: state["past"]})
        state["past"], state["cached"] = getattr(result, cache_arg), state["cached"] + len(ids)
        out.forwards, out.tokens = out.forwards + 1, out.tokens + len(ids)
        return torch.log_softmax(result.logits[0].float(), dim=-1)  # whole vocabulary, as label_logprobs reads

    def read_causes(logp: torch.Tensor, reads: list[tuple[int, tuple[int, int]]]) -> None:
        for position, (i, j) in reads:
            out.probs.append([i, j, _p_yes(logp[position, answers_t].cpu().numpy())])

    pending, reads, in_chunk = list(header), [], 0  # tokens not yet fed; the cause reads among them
    model.eval()
    with torch.inference_mode():
        for unit in units:
            if in_chunk and not prompts.unit_fits(state["cached"] + len(pending), unit, end, max_length):
                if reads:  # the previous utterance's candidates are read before the cache is dropped
                    read_causes(forward(pending), reads)
                state["past"], state["cached"], pending, reads, in_chunk = None, 0, list(header), [], 0
            feed = pending + unit.line
            logp = forward(feed)
            read_causes(logp, reads)
            row = logp[-1, labels_t].cpu().numpy()
            out.logprobs.append([round(float(x), 4) for x in row])
            emotion = decide(np.array([row]), vec)[0]
            out.emotions.append(emotion)
            in_chunk += 1
            pending, reads = [label_ids[EMOTIONS.index(emotion)]], []
            if emotion != "neutral":
                reads = [(k + 1, (unit.utterance_id, j)) for k, j in enumerate(unit.candidates)]
                pending += unit.candidate_ids
        if reads:
            read_causes(forward(pending), reads)
    return out


def _fits_whole(header: list[int], end: list[int], units: list[prompts.FusedUnit], max_length: int) -> bool:
    """Whether the conversation's fused sequence fits ``max_length`` whatever emotions it reads (no fresh cache)."""
    longest = len(header) + len(end) + sum(len(u.line) + 1 + len(u.candidate_ids) for u in units)
    return longest <= max_length


def read_free_batch(model: Any, tokenizer: Any, convs: list[dict], max_length: int,
                    offsets: dict[str, float] | None = None, before: int = prompts.WINDOW_BEFORE) -> list[FusedRead]:
    """``read_free`` of several conversations at once: step k feeds utterance k of each (right-padded, the pads
    masked out of the cache), so a batch costs one forward call per utterance of its longest conversation. A
    conversation that could outgrow ``max_length`` is read alone (``read_free``: it needs a fresh cache)."""
    built = [prompts.fused_units(conv, tokenizer, max_length, before) for conv in convs]
    alone = {b for b, (header, end, units) in enumerate(built) if not _fits_whole(header, end, units, max_length)}
    together = [b for b in range(len(convs)) if b not in alone]
    out: dict[int, FusedRead] = {b: read_free(model, tokenizer, convs[b], max_length, offsets, before) for b in alone}
    if together:
        reads = _read_together(model, tokenizer, [built[b] for b in together], offsets)
        out.update(zip(together, reads))
    return [out[b] for b in range(len(convs))]


def _read_together(model: Any, tokenizer: Any, built: list[tuple[list[int], list[int], list[prompts.FusedUnit]]],
                   offsets: dict[str, float] | None) -> list[FusedRead]:
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    vec = offsets_vector(offsets)
    device = inference.model_device(model)
    pad = inference.pad_id_of(model, tokenizer)
    labels_t, answers_t = torch.tensor(label_ids, device=device), torch.tensor(yes_no, device=device)
    cache_arg = _cache_argument(model)
    n = len(built)
    outs = [FusedRead([], []) for _ in range(n)]
    pending = [list(header) for header, _, _ in built]
    reads: list[list[tuple[int, tuple[int, int]]]] = [[] for _ in range(n)]
    seen = [0] * n  # real tokens of each conversation in the cache: its next position id
    mask = torch.zeros((n, 0), dtype=torch.long, device=device)
    past, rows = None, list(range(n))  # the conversations in the cache, in its batch order
    model.eval()
    with torch.inference_mode():
        for step in range(max(len(units) for _, _, units in built) + 1):
            keep = [b for b in rows if pending[b] or step < len(built[b][2])]
            if not keep:
                break
            if len(keep) < len(rows):  # a finished conversation leaves the batch (and its cache rows)
                index = torch.tensor([rows.index(b) for b in keep], device=device)
                past.batch_select_indices(index)
                mask, rows = mask[index], keep
            feeds = [pending[b] + (built[b][2][step].line if step < len(built[b][2]) else []) for b in rows]
            width = max(len(f) for f in feeds)
            ids = torch.tensor([f + [pad] * (width - len(f)) for f in feeds], device=device)
            real = torch.tensor([[1] * len(f) + [0] * (width - len(f)) for f in feeds], device=device)
            positions = torch.tensor([[seen[b] + min(k, max(len(f) - 1, 0)) for k in range(width)]
                                      for b, f in zip(rows, feeds)], device=device)
            mask = torch.cat([mask, real], dim=1)
            result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           **{cache_arg: past})
            past = getattr(result, cache_arg)
            logp = torch.log_softmax(result.logits.float(), dim=-1)
            for r, (b, feed) in enumerate(zip(rows, feeds)):
                if not feed:
                    continue
                units = built[b][2]
                outs[b].forwards, outs[b].tokens, seen[b] = outs[b].forwards + 1, outs[b].tokens + len(feed), \
                    seen[b] + len(feed)
                for position, (i, j) in reads[b]:
                    outs[b].probs.append([i, j, _p_yes(logp[r, position, answers_t].cpu().numpy())])
                pending[b], reads[b] = [], []
                if step >= len(units):
                    continue
                unit = units[step]
                row = logp[r, len(feed) - 1, labels_t].cpu().numpy()
                outs[b].logprobs.append([round(float(x), 4) for x in row])
                emotion = decide(np.array([row]), vec)[0]
                outs[b].emotions.append(emotion)
                pending[b] = [label_ids[EMOTIONS.index(emotion)]]
                if emotion != "neutral":
                    reads[b] = [(k + 1, (unit.utterance_id, j)) for k, j in enumerate(unit.candidates)]
                    pending[b] += unit.candidate_ids
    return outs


def read_forced(model: Any, tokenizer: Any, convs: list[dict], max_length: int, batch_size: int = 8,
                before: int = prompts.WINDOW_BEFORE) -> list[FusedRead]:
    """Each conversation of ``convs`` with its own emotions inserted (one forward pass over its fused sequence,
    batched): the label log-probs at every marker and P(yes) of every cause read."""
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    queries = [prompts.fused_queries(conv, tokenizer, max_length, label_ids, before) for conv in convs]
    flat = [q for qs in queries for q in qs]
    rows = iter(inference.label_logprobs(model, [q.input_ids for q in flat], [q.positions for q in flat],
                                         [*label_ids, *yes_no], batch_size))
    out = []
    for conv, qs in zip(convs, queries):
        by_id, probs = {}, []
        for q in qs:
            for key, row in zip(q.keys, next(rows)):
                if isinstance(key, tuple):
                    probs.append([key[0], key[1], _p_yes(row[len(label_ids):])])
                else:
                    by_id[key] = [round(float(x), 4) for x in row[:len(label_ids)]]
        utts = conv["conversation"]
        out.append(FusedRead([u["emotion"] for u in utts], [by_id[u["utterance_ID"]] for u in utts], probs,
                             len(qs), sum(len(q.input_ids) for q in qs)))
    return out
