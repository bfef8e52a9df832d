"""Long conversations for the cause reads: windows around the emotional utterances instead of shorter texts.

A cause candidate lies at most ``before`` utterances before and ``after`` after its emotion utterance (5 and 2
cover 98% of ECF 2.0's pairs), so a conversation whose cause read does not fit ``max_length`` at full text is
read in windows: each holds a run of consecutive emotional utterances with all their candidates and as many
earlier utterances as still fit, renumbered from U1 as every training conversation was; the reads of its
own emotional utterances are kept and their ids mapped back. A conversation that fits is read whole, as before.
"""

from __future__ import annotations

from typing import Any

from utils.ecf import prompts


def _line_tokens(conv: dict, tokenizer: Any, before: int = prompts.WINDOW_BEFORE,
                 after: int = prompts.WINDOW_AFTER) -> list[int]:
    """Tokens of each utterance's line in the cause read at full text (its cause line, if emotional, included)."""
    out = []
    for utt in conv["conversation"]:
        i, emotion = utt["utterance_ID"], utt.get("emotion") or "neutral"
        n = (len(prompts.encode(tokenizer, f"U{i} {utt['speaker'].strip()} {emotion}:"))
             + len(prompts.text_ids(tokenizer, utt, prompts.MAX_UTTERANCE_TOKENS)) + 1)
        if emotion != "neutral":  # ``U4 joy: U4 U3 ...``: the most candidates it can have
            n += len(prompts.encode(tokenizer, f"U{i} {emotion}:")) + 1 + sum(
                len(prompts.encode(tokenizer, f" U{j}")) for j in range(i - before, i + after + 1) if j > 0)
        out.append(n)
    return out


def _room(tokenizer: Any, max_length: int) -> int:
    """Tokens left for the lines after the cause read's header."""
    return max_length - len(prompts.header_ids(tokenizer, prompts.CAUSE_HEADER))


def needs_windows(conv: dict, tokenizer: Any, max_length: int, before: int = prompts.WINDOW_BEFORE,
                  after: int = prompts.WINDOW_AFTER) -> bool:
    """Whether the cause read of ``conv`` at full text would exceed ``max_length`` (no emotional utterance: no
    cause read, nothing to exceed)."""
    return bool(prompts.emotional_utterances(conv)) and sum(_line_tokens(conv, tokenizer, before, after)) > _room(tokenizer, max_length)


def plan_windows(conv: dict, tokenizer: Any, max_length: int, before: int = prompts.WINDOW_BEFORE,
                 after: int = prompts.WINDOW_AFTER, cost: list[int] | None = None) -> list[tuple[int, int, list[int]]]:
    """(first, last utterance id, the emotional utterance ids it answers for) of each window of ``conv``
    (``cost``: its ``_line_tokens``, where the caller has them)."""
    n = len(conv["conversation"])
    cost = _line_tokens(conv, tokenizer, before, after) if cost is None else cost
    room = _room(tokenizer, max_length)

    def fits(s: int, e: int) -> bool:
        return sum(cost[s - 1:e]) <= room

    emotional = [i for i, _ in prompts.emotional_utterances(conv)]
    windows, k = [], 0
    while k < len(emotional):
        own = [emotional[k]]
        s, e = max(1, own[0] - before), min(n, own[0] + after)
        while k + 1 < len(emotional) and fits(s, min(n, emotional[k + 1] + after)):
            k += 1
            own.append(emotional[k])
            e = min(n, emotional[k] + after)
        while s > 1 and fits(s - 1, e):  # earlier utterances as context, as far as they fit
            s -= 1
        windows.append((s, e, own))
        k += 1
    return windows


def _window(conv: dict, first: int, last: int) -> dict:
    """Utterances ``first``..``last`` of ``conv`` as a conversation of their own, renumbered from 1."""
    utts = [dict(u, utterance_ID=u["utterance_ID"] - first + 1) for u in conv["conversation"][first - 1:last]]
    return {"conversation_ID": conv.get("conversation_ID"), "conversation": utts}


def cause_queries(conv: dict, tokenizer: Any, max_length: int, before: int = prompts.WINDOW_BEFORE,
                  after: int = prompts.WINDOW_AFTER, layout: str = prompts.CAUSE_LAYOUT) -> tuple[list, int]:
    """``prompts.cause_queries`` of ``conv``, read in windows where the whole does not fit at full text: the
    queries (keys in ``conv``'s utterance ids, each pair once) and the number of windows (0: read whole)."""
    cost = _line_tokens(conv, tokenizer, before, after)  # once: the check and the plan share it
    if sum(cost) <= _room(tokenizer, max_length):
        return prompts.cause_queries(conv, tokenizer, max_length, before, after, layout=layout), 0
    out, windows = [], plan_windows(conv, tokenizer, max_length, before, after, cost)
    for first, last, own in windows:
        shift, mine = first - 1, set(own)
        for q in prompts.cause_queries(_window(conv, first, last), tokenizer, max_length, before, after, layout=layout):
            kept = [(p, (i + shift, j + shift)) for p, (i, j) in zip(q.positions, q.keys) if i + shift in mine]
            if kept:
                out.append(prompts.Query(q.input_ids, [p for p, _ in kept], [key for _, key in kept]))
    return out, len(windows)


def window_note(stats: dict) -> str:
    """One line on how many conversations were read in windows, from a run's stats."""
    n = stats.get("windowed_conversations", 0)
    if not n:
        return "every conversation fitted max_length whole: no windows"
    return (f"{n} of {stats.get('conversations', '?')} conversations did not fit max_length whole and were read in "
            f"{stats.get('windows', '?')} windows around their emotional utterances")
