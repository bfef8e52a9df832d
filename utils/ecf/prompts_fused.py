"""The fused prompt style: both stages in one sequence read by one adapter.

Each utterance's `` Speaker: text emotion:`` line is followed by its emotion word and, when that emotion is not
neutral, by one digit per candidate cause (``0``: the utterance itself, ``1``: the one before, ... in
``prompts.CANDIDATE_ORDER``), each read as yes/no. Training shows the gold emotion; inference (``utils.ecf.fused``)
inserts the predicted one and goes on from the same KV cache. Pure: text in, token ids out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from utils.ecf.prompts import (
    CANDIDATE_ORDER, EMOTION_FORMATS, MAX_UTTERANCE_TOKENS, NEWLINE, WINDOW_BEFORE, PromptError, Query, encode,
    gold_pairs, header_ids, text_ids,
)
from utils.ecf.data import EMOTIONS


# The fused sequence asks for causes up to the utterance itself (offsets 0..-5 in CANDIDATE_ORDER): a cause
# after its emotion (+1, +2: 3.4% of the ECF 2.0 training pairs) has not been read when the emotion is
# decided, and the one read never goes back. The candidate of offset -d is one digit token "d".
FUSED_OFFSETS = tuple(d for d in CANDIDATE_ORDER if d <= 0)


def offset_token_ids(tokenizer: Any, before: int = WINDOW_BEFORE) -> list[int]:
    """Token id of each candidate digit "0" .. str(before) (the last token of " d": a digit is one token in
    byte-level BPE and SentencePiece vocabularies); raise if two share one."""
    ids = [encode(tokenizer, f" {d}")[-1] for d in range(before + 1)]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the digits 0..{before} do not have distinct tokens in this tokenizer")
    return ids


def fused_candidates(i: int, before: int = WINDOW_BEFORE) -> list[int]:
    """Cause candidates j of utterance ``i`` the fused sequence reads, in its order (CANDIDATE_ORDER, j <= i)."""
    return [i + d for d in FUSED_OFFSETS if -d <= before and i + d >= 1]


@dataclass
class FusedUnit:
    """One utterance of a fused sequence: its line up to the emotion marker, and the candidates it would read."""

    utterance_id: int
    line: list[int]  # `` Speaker: text emotion:``, read at its last token
    candidates: list[int]  # cause candidate ids j, in reading order
    candidate_ids: list[int]  # the digit token of each


def fused_units(conv: dict, tokenizer: Any, max_length: int, before: int = WINDOW_BEFORE,
                max_utterance_tokens: int = MAX_UTTERANCE_TOKENS) -> tuple[list[int], list[int], list[FusedUnit]]:
    """(header ids, end ids, one unit per utterance): what the fused sequence of ``conv`` is built from, in training
    (``fused_queries``) and in the one-read inference alike."""
    header_text, marker_text, _ = EMOTION_FORMATS["compact"]
    header, marker = header_ids(tokenizer, header_text), encode(tokenizer, marker_text)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else encode(tokenizer, NEWLINE)
    digits = offset_token_ids(tokenizer, before)
    room = max_length - len(header) - len(end)
    cap = min(max_utterance_tokens, room - len(marker) - 1 - len(FUSED_OFFSETS) - 6)
    if cap < 4:
        raise PromptError(f"max_length={max_length} leaves no room for an utterance of the fused sequence; "
                          "raise MAX_LENGTH")
    units = []
    for utt in conv["conversation"]:
        i = utt["utterance_ID"]
        line = encode(tokenizer, f" {utt['speaker'].strip()}:") + text_ids(tokenizer, utt, cap)
        line = line[: room - len(marker) - 1 - len(FUSED_OFFSETS)] + marker
        candidates = fused_candidates(i, before)
        units.append(FusedUnit(i, line, candidates, [digits[i - j] for j in candidates]))
    return header, end, units


def unit_fits(used: int, unit: FusedUnit, end: Sequence[int], max_length: int) -> bool:
    """Whether ``unit`` (at its longest: emotion word and every candidate) fits after ``used`` tokens."""
    return used + len(unit.line) + 1 + len(unit.candidate_ids) + len(end) <= max_length


def fused_queries(conv: dict, tokenizer: Any, max_length: int, label_ids: Sequence[int], before: int = WINDOW_BEFORE,
                  max_utterance_tokens: int = MAX_UTTERANCE_TOKENS) -> list[Query]:
    """The fused sequence(s) of ``conv`` with its emotions (gold in training, given in a forced read): each line,
    its emotion word (``label_ids`` in EMOTIONS order) read at the marker, and for an emotional utterance its
    candidate digits, each read as yes/no. Keys: the utterance id (emotion reads) or (i, j) (cause reads).
    Chunked at utterance boundaries to fit ``max_length``, as the one-read inference resets its cache."""
    header, end, units = fused_units(conv, tokenizer, max_length, before, max_utterance_tokens)
    emotion_of = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
    chunks, current = [], Query(list(header), [])
    for unit in units:
        if not unit_fits(len(current.input_ids), unit, end, max_length) and current.keys:
            chunks.append(current)
            current = Query(list(header), [])
        emotion = emotion_of[unit.utterance_id]
        current.input_ids += unit.line
        current.positions.append(len(current.input_ids) - 1)
        current.keys.append(unit.utterance_id)
        current.input_ids.append(label_ids[EMOTIONS.index(emotion)])  # the emotion the rest of the sequence reads
        if emotion != "neutral":
            for j, token in zip(unit.candidates, unit.candidate_ids):
                current.input_ids.append(token)
                current.positions.append(len(current.input_ids) - 1)
                current.keys.append((unit.utterance_id, j))
    chunks.append(current)
    for chunk in chunks:
        chunk.input_ids += end  # the last read's answer is scored against one more position
    return chunks


def fused_answers(conv: dict, query: Query, label_ids: Sequence[int], yes_no_ids: Sequence[int]) -> list[int]:
    """The answer of every read of a fused ``query``: the gold emotion word, or yes/no for a candidate."""
    emotion_of = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
    gold = set(gold_pairs(conv))
    return [yes_no_ids[0 if key in gold else 1] if isinstance(key, tuple)
            else label_ids[EMOTIONS.index(emotion_of[key])] for key in query.keys]
