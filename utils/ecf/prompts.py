"""Prompts: how a conversation becomes text and token ids, in both prompt styles.

``conversation`` (default): ONE compact sequence per conversation, no chat template and no
instructions (it is fine-tuned to read, not prompted). Emotions: one `` Speaker: text emotion:``
line per utterance; the label is read at the marker's colon, as the next token among the seven
label words, and the input goes on with the next utterance, never the answer, so training shows
no gold label to later utterances and inference is one forward pass.
Causes: the conversation with its emotions (``U3 Rachel joy: text``), then one line per emotional
utterance listing its candidate causes most likely first, ``U4 joy: U4 U3 U2 U1 U5 U6``, each read
as yes/no at its last token. Every output is a valid label or utterance id by construction; a
conversation costs about its own words in tokens (the whole ECF 2.0 training split: 180 k tokens
for emotions, 325 k for causes).

``fused`` (``utils.ecf.prompts_fused``): both stages in ONE sequence and one adapter: each utterance's
`` Speaker: text emotion:`` line is followed by its emotion word and, when that emotion is not neutral, by
one digit per candidate cause (``0``: the utterance itself, ``1``: the one before, ... in CANDIDATE_ORDER),
each read as yes/no. Training shows the gold emotion; inference inserts the predicted one and goes on from
the same KV cache (``utils.ecf.fused``), so a conversation is read once for both answers.

``per_utterance`` (``utils.ecf.prompts_per_utterance``): the original MECPE recipe, kept as a baseline. One
prompt per utterance that repeats the whole conversation, answered ``utterance_N :: label`` (or ``utterance_N ::
utterance_2, utterance_3`` for causes) by free generation, parsed with regular expressions;
outputs that do not parse are counted.

This module holds what the styles share and the conversation style; each other style has its module. Everything
here is pure: text in, token ids out; no model, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from utils.ecf.data import EMOTIONS
from utils.lm.batch import IGNORE

STYLES = ("conversation", "per_utterance", "fused")
ANSWERS = ("yes", "no")  # the cause queries' answer words, in this order
# Emotion sequences are `` Speaker: text emotion:`` lines with no header and no newline: the label is
# read at the marker's colon. The named formats: (header, marker, line end: the tokens after the read
# position, before the next line). A run's format is its config's EMOTION_FORMAT (notebook 02), kept in the
# adapter's task record, which inference reads it from. Measured: bench/RESULTS.md section 2 and E6.
EMOTION_FORMATS = {"compact": ("", " emotion:", ""), "marked": ("Emotions:\n", " -> emotion:", "\n")}
EMOTION_FORMAT = "compact"  # the default
CAUSE_HEADER = "Causes:\n"
NEWLINE = "\n"
# Cause candidates U(i-5)..U(i+2): 98.2% of the ECF 2.0 training pairs have j - i in [-5, 2]
# (0: 50%, -1: 29%, -2: 8.7%, +1: 2.1%, +2: 1.3%); widening to [-10, 5] would add 0.7% of
# pairs for twice the queries.
WINDOW_BEFORE = 5
WINDOW_AFTER = 2
# A cause line lists its candidates most likely first (offsets j - i by their ECF 2.0 frequency), so
# the place in the line says what an offset would: the first is the utterance itself, the second
# the one before (measured against window order and written offsets: bench/RESULTS.md section 2, cause stage).
CANDIDATE_ORDER = (0, -1, -2, -3, 1, 2, -4, -5)
# Where the cause lines go: "inline", each right below the utterance it asks about (the candidates after
# it in a line after the conversation), or "after" the whole conversation (chunked when long). A conversation
# whose inline sequence does not fit MAX_LENGTH takes the "after" chunks. A run's layout is its config's
# CAUSE_LAYOUT (notebook 04), kept in the task record. Measured: bench/RESULTS.md section 5 (C1, C2).
CAUSE_LAYOUTS = ("after", "inline")
CAUSE_LAYOUT = "inline"  # the default
MAX_UTTERANCE_TOKENS = 96  # longest ECF 2.0 utterances are ~100 tokens; captions can be longer


def check_emotion_format(name: str) -> tuple[str, str, str]:
    """The (header, marker, line end) of one of EMOTION_FORMATS, or raise naming them."""
    if name not in EMOTION_FORMATS:
        raise ValueError(f"emotion format {name!r}: use one of {list(EMOTION_FORMATS)}")
    return EMOTION_FORMATS[name]


class PromptError(ValueError):
    """A conversation that cannot be rendered within the limits; the message says what to raise."""


# ---------------------------------------------------------------- rendering (text)

def utterance_text(utt: dict) -> str:
    """The utterance's words plus its video/audio captions when the data has them."""
    parts = [utt["text"].strip()]
    for key, tag in (("video_caption", "video"), ("audio_caption", "audio")):
        if str(utt.get(key) or "").strip():
            parts.append(f"[{tag}: {utt[key].strip()}]")
    return " ".join(parts)


def utterance_line(utt: dict, emotion: str | None = None, prefix: str = "U") -> str:
    """``U3 Chandler: text`` or, with its emotion, ``U3 Chandler (joy): text`` (per_utterance)."""
    who = utt["speaker"].strip() + (f" ({emotion})" if emotion else "")
    return f"{prefix}{utt['utterance_ID']} {who}: {utterance_text(utt)}"


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added (templates carry their own)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- conversation style

@dataclass
class Query:
    """One model input: token ids, the positions read, and what each position answers."""

    input_ids: list[int]
    positions: list[int]  # the logits at p predict token p + 1: the answer
    keys: list[Any] = field(default_factory=list)  # utterance id (emotions) or (i, j) (causes)


def header_ids(tokenizer: Any, text: str) -> list[int]:
    """A sequence's first ids: ``text``, after bos only where the tokenizer adds one to plain text
    (Llama's ``<s>``; SmolLM2 adds none)."""
    ids = encode(tokenizer, text)
    bos = tokenizer.bos_token_id
    if bos is not None and list(tokenizer("x", add_special_tokens=True)["input_ids"][:1]) == [bos]:
        ids = [bos, *ids]
    return ids


def text_ids(tokenizer: Any, utt: dict, cap: int) -> list[int]:
    """The utterance's words (captions included) as ids, capped at ``cap`` tokens."""
    return encode(tokenizer, " " + utterance_text(utt))[:cap]


def words_read(tokenizer: Any, utt: dict, cap: int = MAX_UTTERANCE_TOKENS) -> int:
    """How many whitespace words of ``utt``'s text a read of its first ``cap`` tokens (``text_ids``) sees whole."""
    words = utt["text"].split()
    if len(encode(tokenizer, " " + utterance_text(utt))) <= cap:
        return len(words)
    low, high = 0, len(words)  # the most leading words whose tokens fit: their count only grows with the words
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(encode(tokenizer, " " + " ".join(words[:mid]))) <= cap else (low, mid - 1)
    return low


def emotion_queries(conv: dict, tokenizer: Any, max_length: int,
                    max_utterance_tokens: int = MAX_UTTERANCE_TOKENS, fmt: str = EMOTION_FORMAT) -> list[Query]:
    """`` Speaker: text emotion:`` lines (``fmt``, one of EMOTION_FORMATS) read at each marker's end; chunked to
    fit ``max_length``."""
    header_text, marker_text, line_end_text = check_emotion_format(fmt)
    header, marker = header_ids(tokenizer, header_text), encode(tokenizer, marker_text)
    line_end = encode(tokenizer, line_end_text) if line_end_text else []
    # a chunk ends with one more token: the label of its last line is scored against position p + 1
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else encode(tokenizer, NEWLINE)
    room = max_length - len(header) - len(end)
    cap = min(max_utterance_tokens, room - len(marker) - len(line_end) - 6)  # 6: the speaker in front
    if cap < 4:
        raise PromptError(f"max_length={max_length} leaves no room for an utterance after the "
                          f"{len(header)}-token header; raise MAX_LENGTH")
    chunks: list[Query] = []
    current = Query(list(header), [])
    for utt in conv["conversation"]:
        line = (encode(tokenizer, f" {utt['speaker'].strip()}:") + text_ids(tokenizer, utt, cap))
        line = line[: room - len(marker) - len(line_end)] + marker
        if len(current.input_ids) + len(line) + len(line_end) + len(end) > max_length and current.keys:
            chunks.append(current)  # a long conversation continues in a fresh sequence
            current = Query(list(header), [])
        current.input_ids += line
        current.positions.append(len(current.input_ids) - 1)  # the marker's end: its next token is the label
        current.keys.append(utt["utterance_ID"])
        current.input_ids += line_end
    # the input goes on with the next line, never the answer: no gold label leaks to later utterances
    chunks.append(current)
    for chunk in chunks:
        chunk.input_ids += end
    return chunks


def cause_candidates(i: int, n: int, before: int = WINDOW_BEFORE, after: int = WINDOW_AFTER) -> list[int]:
    """Utterance ids that may cause utterance ``i``'s emotion in a conversation of ``n``."""
    return list(range(max(1, i - before), min(n, i + after) + 1))


def ordered_candidates(i: int, candidates: Sequence[int]) -> list[int]:
    """``candidates`` of utterance ``i`` in CANDIDATE_ORDER; offsets outside it follow, nearest first."""
    def key(j: int) -> tuple[int, int, int]:
        d = j - i
        return (0, CANDIDATE_ORDER.index(d), 0) if d in CANDIDATE_ORDER else (1, abs(d), d > 0)
    return sorted(candidates, key=key)


def emotional_utterances(conv: dict) -> list[tuple[int, str]]:
    """(utterance id, emotion) of every utterance whose emotion is not neutral."""
    return [(u["utterance_ID"], u["emotion"]) for u in conv["conversation"]
            if u.get("emotion") and u["emotion"] != "neutral"]


def cause_queries(conv: dict, tokenizer: Any, max_length: int, before: int = WINDOW_BEFORE,
                  after: int = WINDOW_AFTER, max_utterance_tokens: int = MAX_UTTERANCE_TOKENS,
                  layout: str = CAUSE_LAYOUT) -> list[Query]:
    """The conversation with its emotions and ``U4 joy: U4 U3 U2 U1 U5 U6`` per emotional utterance
    (candidates most likely first), each read as yes/no at its last token; the lines go after the
    conversation or inline (``layout``, one of CAUSE_LAYOUTS)."""
    header = header_ids(tokenizer, CAUSE_HEADER)
    n = len(conv["conversation"])
    groups = []  # one line per emotional utterance, kept in one chunk
    for i, emotion in emotional_utterances(conv):
        # the ids let the model look each candidate up in the lines above (they start ``U2 ...``);
        # the order (CANDIDATE_ORDER) tells it the offset without spending tokens on it
        groups.append(_cause_line(tokenizer, i, emotion, ordered_candidates(i, cause_candidates(i, n, before, after))))
    layout = check_layout(layout)
    if layout == "inline" and groups:
        query = _inline_query(conv, tokenizer, max_length, header, groups, max_utterance_tokens)
        if query is not None:
            return [query]
    return grouped_queries(conv, tokenizer, max_length, header, groups, max_utterance_tokens)


def check_layout(layout: str) -> str:
    if layout not in CAUSE_LAYOUTS:
        raise ValueError(f"cause layout {layout!r}: use one of {list(CAUSE_LAYOUTS)}")
    return layout


def _cause_line(tokenizer: Any, i: int, emotion: str, candidates: Sequence[int]) -> tuple[list[int], list[int], list[Any]]:
    """``U4 joy: U4 U3 U2`` + newline: ids, the read position after each candidate, the (i, j) keys."""
    ids, positions, keys = encode(tokenizer, f"U{i} {emotion}:"), [], []
    for j in candidates:
        ids += encode(tokenizer, f" U{j}")
        positions.append(len(ids) - 1)
        keys.append((i, j))
    return ids + encode(tokenizer, NEWLINE), positions, keys


def _inline_query(conv: dict, tokenizer: Any, max_length: int, header: list[int],
                  groups: list[tuple[list[int], list[int], list[Any]]], max_utterance_tokens: int) -> Query | None:
    """One sequence: each emotional utterance's cause line right below its own line, listing the
    candidates up to itself; the candidates after it follow the conversation in a second line. None
    when that does not fit ``max_length`` with utterances of at least a quarter of their cap (the
    caller then uses the grouped layout)."""
    newline = encode(tokenizer, NEWLINE)
    emotion_of = dict(emotional_utterances(conv))
    candidates = {keys[0][0]: [j for _, j in keys] for _, _, keys in groups}
    cap = max_utterance_tokens
    while cap >= max(4, max_utterance_tokens // 4):
        query, trailing = Query(list(header), []), []
        for utt in conv["conversation"]:
            i = utt["utterance_ID"]
            query.input_ids += (encode(tokenizer, f"U{i} {utt['speaker'].strip()} {utt['emotion']}:")
                                + text_ids(tokenizer, utt, cap) + newline)
            now = [j for j in candidates.get(i, []) if j <= i]
            later = [j for j in candidates.get(i, []) if j > i]
            if now:
                _append_line(query, _cause_line(tokenizer, i, emotion_of[i], now))
            if later:
                trailing.append(_cause_line(tokenizer, i, emotion_of[i], later))
        for line in trailing:
            _append_line(query, line)
        if len(query.input_ids) <= max_length:
            return query
        cap //= 2
    return None


def _append_line(query: Query, line: tuple[list[int], list[int], list[Any]]) -> None:
    ids, positions, keys = line
    query.positions += [len(query.input_ids) + p for p in positions]
    query.keys += keys
    query.input_ids += ids


def grouped_queries(conv: dict, tokenizer: Any, max_length: int, header: list[int],
                    groups: list[tuple[list[int], list[int], list[Any]]],
                    max_utterance_tokens: int = MAX_UTTERANCE_TOKENS) -> list[Query]:
    """The conversation with its emotions (``U2 Ana joy: text`` lines after ``header``), then ``groups``
    (ids, read positions within them, keys), as many per sequence as fit; utterance texts are shortened
    until the conversation and the longest group fit ``max_length``."""
    if not groups:
        return []
    newline, n = encode(tokenizer, NEWLINE), len(conv["conversation"])
    longest = max(len(g[0]) for g in groups)
    cap = max_utterance_tokens
    while True:  # shorten utterance texts until the conversation and one group fit
        context = list(header)
        for utt in conv["conversation"]:
            context += (encode(tokenizer, f"U{utt['utterance_ID']} {utt['speaker'].strip()} {utt['emotion']}:")
                        + text_ids(tokenizer, utt, cap) + newline)
        if len(context) + longest <= max_length:
            break
        if cap <= 4:
            raise PromptError(f"conversation {conv.get('conversation_ID')}: {n} utterances do not fit "
                              f"max_length={max_length} even at {cap} tokens each; raise MAX_LENGTH")
        cap //= 2
    chunks: list[Query] = []
    current = Query(list(context), [])
    for ids, positions, keys in groups:
        if len(current.input_ids) + len(ids) > max_length:
            chunks.append(current)
            current = Query(list(context), [])
        offset = len(current.input_ids)
        current.input_ids += ids
        current.positions += [offset + p for p in positions]
        current.keys += keys
    chunks.append(current)
    return chunks


def training_labels(query: Query, answer_ids: Sequence[int]) -> dict[str, list[int]]:
    """An example whose only targets are the answers: ``labels[p + 1]`` for each read position."""
    labels = [IGNORE] * len(query.input_ids)
    for p, answer in zip(query.positions, answer_ids, strict=True):
        labels[p + 1] = int(answer)  # HF shifts: the logits at p are scored against labels[p + 1]
    return {"input_ids": list(query.input_ids), "labels": labels}


def emotion_answers(conv: dict, query: Query, label_ids: Sequence[int]) -> list[int]:
    """The gold label token of every utterance ``query`` reads (label_ids in EMOTIONS order)."""
    by_id = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
    return [label_ids[EMOTIONS.index(by_id[k])] for k in query.keys]


def cause_answers(conv: dict, query: Query, yes_no_ids: Sequence[int]) -> list[int]:
    """yes/no token per query: yes where (i, j) is a gold pair of the conversation."""
    gold = {(i, j) for i, j in gold_pairs(conv)}
    return [yes_no_ids[0] if key in gold else yes_no_ids[1] for key in query.keys]


def gold_pairs(conv: dict) -> list[tuple[int, int]]:
    """(emotion utterance, cause utterance) of the gold pairs, any emotion."""
    out = []
    for emo, cause in conv.get("emotion-cause_pairs", []):
        out.append((int(emo.split("_", 1)[0]), int(str(cause).lstrip("U").split("_", 1)[0])))
    return out


def check_style(style: str) -> str:
    """Return ``style`` or raise naming the valid ones."""
    if style not in STYLES:
        raise ValueError(f"STYLE={style!r} is not a prompt style; use one of {list(STYLES)}")
    return style
