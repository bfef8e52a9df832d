"""One read for both stages (STYLE="fused"): one adapter labels each utterance and reads its causes.

The sequence is ``prompts_fused.fused_queries``': each utterance's line, its emotion word, and for an emotional
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

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from utils.ecf import prompts, prompts_fused
from utils.ecf.data import EMOTIONS
from utils.ecf.decision import decide, offsets_vector, p_yes
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
    return round(p_yes(float(row[0]), float(row[1])), 6)


class _Reader:
    """What both one reads share: the answer ids, the offsets, and the step after each forward call."""

    def __init__(self, model: Any, tokenizer: Any, offsets: dict[str, float] | None) -> None:
        self.label_ids = label_token_ids(tokenizer, EMOTIONS)
        self.device = inference.model_device(model)
        self.labels = torch.tensor(self.label_ids, device=self.device)
        self.answers = torch.tensor(label_token_ids(tokenizer, prompts.ANSWERS), device=self.device)
        self.vec = offsets_vector(offsets)
        self.cache_arg = _cache_argument(model)

    def causes(self, out: FusedRead, logp: torch.Tensor, reads: list[tuple[int, tuple[int, int]]]) -> None:
        """P(yes) of the pending cause reads, at their positions in ``logp`` (one sequence's log-probs)."""
        for position, (i, j) in reads:
            out.probs.append([i, j, _p_yes(logp[position, self.answers].cpu().numpy())])

    def emotion(self, out: FusedRead, logp_at_marker: torch.Tensor,
                unit: prompts_fused.FusedUnit) -> tuple[list[int], list[tuple[int, tuple[int, int]]]]:
        """The emotion decided at ``unit``'s marker; returns what is fed next (its word and, when it is not
        neutral, its candidate digits) and the cause reads among those tokens."""
        row = logp_at_marker[self.labels].cpu().numpy()
        out.logprobs.append([round(float(x), 4) for x in row])
        emotion = decide(np.array([row]), self.vec)[0]
        out.emotions.append(emotion)
        if emotion == "neutral":
            return [self.label_ids[EMOTIONS.index(emotion)]], []
        return ([self.label_ids[EMOTIONS.index(emotion)], *unit.candidate_ids],
                [(k + 1, (unit.utterance_id, j)) for k, j in enumerate(unit.candidates)])


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
    return _read_alone(model, prompts_fused.fused_units(conv, tokenizer, max_length, before), max_length,
                       _Reader(model, tokenizer, offsets))


def _read_alone(model: Any, built: tuple[list[int], list[int], list[prompts_fused.FusedUnit]], max_length: int,
                r: _Reader) -> FusedRead:
    header, end, units = built
    out = FusedRead([], [])
    state: dict[str, Any] = {"past": None, "cached": 0}

    def forward(ids: list[int]) -> torch.Tensor:
        result = model(input_ids=torch.tensor([ids], device=r.device), use_cache=True, **{r.cache_arg: state["past"]})
        state["past"], state["cached"] = getattr(result, r.cache_arg), state["cached"] + len(ids)
        out.forwards, out.tokens = out.forwards + 1, out.tokens + len(ids)
        return torch.log_softmax(result.logits[0].float(), dim=-1)  # whole vocabulary, as label_logprobs reads

    pending, reads, in_chunk = list(header), [], 0  # tokens not yet fed; the cause reads among them
    model.eval()
    with torch.inference_mode():
        for unit in units:
            if in_chunk and not prompts_fused.unit_fits(state["cached"] + len(pending), unit, end, max_length):
                if reads:  # the previous utterance's candidates are read before the cache is dropped
                    r.causes(out, forward(pending), reads)
                state["past"], state["cached"], pending, reads, in_chunk = None, 0, list(header), [], 0
            logp = forward(pending + unit.line)
            r.causes(out, logp, reads)
            pending, reads = r.emotion(out, logp[-1], unit)
            in_chunk += 1
        if reads:
            r.causes(out, forward(pending), reads)
    return out


def _fits_whole(header: list[int], end: list[int], units: list[prompts_fused.FusedUnit], max_length: int) -> bool:
    """Whether the conversation's fused sequence fits ``max_length`` whatever emotions it reads (no fresh cache)."""
    longest = len(header) + len(end) + sum(len(u.line) + 1 + len(u.candidate_ids) for u in units)
    return longest <= max_length


def read_free_batch(model: Any, tokenizer: Any, convs: list[dict], max_length: int,
                    offsets: dict[str, float] | None = None, before: int = prompts.WINDOW_BEFORE) -> list[FusedRead]:
    """``read_free`` of several conversations at once: step k feeds utterance k of each (right-padded, the pads
    masked out of the cache), so a batch costs one forward call per utterance of its longest conversation. A
    conversation that could outgrow ``max_length`` is read alone (``read_free``: it needs a fresh cache)."""
    built = [prompts_fused.fused_units(conv, tokenizer, max_length, before) for conv in convs]
    r = _Reader(model, tokenizer, offsets)
    alone = {b for b, (header, end, units) in enumerate(built) if not _fits_whole(header, end, units, max_length)}
    together = [b for b in range(len(convs)) if b not in alone]
    out = {b: _read_alone(model, built[b], max_length, r) for b in alone}
    if together:
        out.update(zip(together, _read_together(model, [built[b] for b in together],
                                                inference.pad_id_of(model, tokenizer), r)))
    return [out[b] for b in range(len(convs))]


def _read_together(model: Any, built: list[tuple[list[int], list[int], list[prompts_fused.FusedUnit]]], pad: int,
                   r: _Reader) -> list[FusedRead]:
    n, device = len(built), r.device
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
                           **{r.cache_arg: past})
            past = getattr(result, r.cache_arg)
            logp = torch.log_softmax(result.logits.float(), dim=-1)
            for k, (b, feed) in enumerate(zip(rows, feeds)):
                if not feed:
                    continue
                outs[b].forwards, outs[b].tokens, seen[b] = outs[b].forwards + 1, outs[b].tokens + len(feed), \
                    seen[b] + len(feed)
                r.causes(outs[b], logp[k], reads[b])
                pending[b], reads[b] = [], []
                if step < len(built[b][2]):
                    pending[b], reads[b] = r.emotion(outs[b], logp[k, len(feed) - 1], built[b][2][step])
    return outs


def read_forced(model: Any, tokenizer: Any, convs: list[dict], max_length: int, batch_size: int = 8,
                before: int = prompts.WINDOW_BEFORE) -> list[FusedRead]:
    """Each conversation of ``convs`` with its own emotions inserted (one forward pass over its fused sequence,
    batched): the label log-probs at every marker and P(yes) of every cause read."""
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    queries = [prompts_fused.fused_queries(conv, tokenizer, max_length, label_ids, before) for conv in convs]
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
