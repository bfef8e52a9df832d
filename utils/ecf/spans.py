"""Subtask 1: the cause span inside each predicted cause utterance, and the files CodaLab takes.

A span is written as ``"<utterance>_<start>_<end>"``, whitespace-token positions ``[start, end)``
computed exactly as the official scorer computes the gold ones (``metric.span_position`` of
``metric.clean_span``): a candidate text and a gold text that the scorer would read alike get the
same positions, punctuation quirks included, so a span the scorer counts as right is written as one.

The candidates of a cause utterance are its clauses (a clause ends at a token that ends in
, . ! ? ; :) and the whole utterance. The model reads them in the conversation style's one pass: the
conversation with its emotions, then per pair ``U4 joy <- U2: / ..end of clause / ..end of clause / all``
(each clause by its last words, the whole utterance as ``all``) with a yes/no
read at each candidate's last token (``span_queries``); it is trained beside the cause queries, in
the same adapter, and the best candidate is the span, so every output is a span of the cause
utterance by construction. The baselines are rules chosen on val (whole utterance, first, last or
longest clause). On the ECF 2.0 training file the gold span is the whole utterance (punctuation
aside) for 36% of the pairs, its last clause for 46% and its longest clause for 49%.

The ``per_utterance`` style (the original recipe, kept as a baseline) gets the val-chosen rule and no
learnt reads of its own: its spans would have to be generated as free text and matched back to token
positions, one more generation per pair, on top of pairs that score 0.009 weighted F1 end to end
(bench/RESULTS.md, issue 13's table), so any span it chose would be scored on almost no right pairs;
the rule is the fair baseline for it and costs nothing.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Callable

from utils.ecf import prompts
from utils.ecf.data import emotion_pairs, parse_cause
from utils.ecf.metric import clean_span, span_position
from utils.io import atomic_path
from utils.lm.modeling import label_token_ids

SPAN_HEADER = "Cause spans:\n"
CANDIDATE_TOKENS = 6  # a clause candidate is shown by its last tokens

_CLAUSE_END = re.compile(r"[,.!?;:]$")
SUBMISSION_FILES = ("Subtask_1_pred.json", "Subtask_2_pred.json")


def clauses(text: str) -> list[tuple[int, int]]:
    """Whitespace-token [start, end) of each clause: a clause ends at a token ending in , . ! ? ; or :."""
    out, start = [], 0
    tokens = text.split()
    for k, token in enumerate(tokens):
        if _CLAUSE_END.search(token):
            out.append((start, k + 1))
            start = k + 1
    if start < len(tokens):
        out.append((start, len(tokens)))
    return out or [(0, 0)]


def encode(span_text: str, utterance: str) -> tuple[int, int]:
    """The positions the official scorer gives ``span_text`` inside ``utterance``."""
    return span_position(clean_span(span_text), utterance)


def _tokens(text: str, where: tuple[int, int]) -> str:
    return " ".join(text.split()[where[0]:where[1]])


RULES: dict[str, Callable[[str], tuple[int, int]]] = {
    "whole": lambda text: (0, len(text.split())),
    "last_clause": lambda text: clauses(text)[-1],
    "first_clause": lambda text: clauses(text)[0],
    "longest_clause": lambda text: max(clauses(text), key=lambda c: (c[1] - c[0], c[0])),
}


def span_for(rule: str, utterance: str) -> tuple[int, int]:
    """The span ``rule`` picks in ``utterance``, encoded as the scorer reads it."""
    if rule not in RULES:
        raise ValueError(f"span rule {rule!r}: use one of {list(RULES)}")
    return encode(_tokens(utterance, RULES[rule](utterance)), utterance)


def _gold_spans(conv: dict) -> list[tuple[int, str, int, tuple[int, int]]]:
    """(i, emotion, j, encoded gold span) of a conversation with Subtask 1 spans."""
    texts = [u["text"] for u in conv["conversation"]]
    out = []
    for emo, cause in conv.get("cause_spans", []):
        i, emotion = emo.split("_")
        j, span = parse_cause(cause, "gold", conv["conversation_ID"])
        out.append((int(i), emotion, j, encode(span, texts[j - 1])))
    return out


def has_spans(convs: list[dict]) -> bool:
    """Whether the conversations carry Subtask 1 gold spans (a Subtask 1 file)."""
    return any(c.get("cause_spans") for c in convs)


def rule_accuracy(convs: list[dict]) -> dict[str, float]:
    """Per rule: the share of gold spans it gets exactly right (with the gold cause utterance)."""
    gold = [(c, g) for c in convs for g in _gold_spans(c)]
    if not gold:
        return {}
    out = {}
    for rule in RULES:
        right = sum(span_for(rule, c["conversation"][j - 1]["text"]) == where for c, (_, _, j, where) in gold)
        out[rule] = right / len(gold)
    return out


def choose_rule(val: list[dict], default: str = "longest_clause") -> tuple[str, dict[str, float]]:
    """The rule with the most exact gold spans on ``val`` (``default`` when val has no spans)."""
    accuracy = rule_accuracy(val)
    return (max(accuracy, key=lambda r: (accuracy[r], r == default)) if accuracy else default), accuracy


def _with_spans(conv: dict, span_of: Callable[[int, int], tuple[int, int]]) -> dict:
    """``conv`` in the Subtask 1 format: every pair (i, j) with the span ``span_of(i, j)`` of utterance j."""
    pairs = [[f"{i}_{emotion}", "{}_{}_{}".format(j, *span_of(i, j))] for i, emotion, j in emotion_pairs(conv)]
    return {**{k: v for k, v in conv.items() if k not in ("emotion-cause_pairs", "cause_spans")},
            "emotion-cause_pairs": pairs}


def subtask1_predictions(pred: list[dict], rule: str) -> list[dict]:
    """Subtask 1 predictions in the official format: every predicted pair with ``rule``'s span."""
    return [_with_spans(c, lambda i, j, c=c: span_for(rule, c["conversation"][j - 1]["text"])) for c in pred]


def candidates(text: str) -> list[tuple[int, int]]:
    """Token ranges the span is chosen from: each clause, then the whole utterance when it has several."""
    found = clauses(text)
    return found + ([(0, len(text.split()))] if len(found) > 1 else [])


def _gold_by_pair(conv: dict) -> dict[tuple[int, int], set[tuple[int, int]]]:
    out: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for i, _, j, where in _gold_spans(conv):
        out.setdefault((i, j), set()).add(where)
    return out


def span_queries(conv: dict, tokenizer, max_length: int, pairs: list[tuple[int, str, int]] | None = None,
                 max_utterance_tokens: int = prompts.MAX_UTTERANCE_TOKENS) -> list[prompts.Query]:
    """The conversation, then ``U4 joy <- U2: cand / cand / ...`` per (emotion, cause) pair (the gold pairs,
    or ``pairs``), a yes/no read at each candidate's last token; keys (i, j, start, end) in scorer positions."""
    texts = {u["utterance_ID"]: u["text"] for u in conv["conversation"]}
    newline, groups = prompts.encode(tokenizer, prompts.NEWLINE), []
    for i, emotion, j in (emotion_pairs(conv) if pairs is None else pairs):
        ids, positions, keys = prompts.encode(tokenizer, f"U{i} {emotion} <- U{j}:"), [], []
        found = candidates(texts[j])
        for k, where in enumerate(found):
            # a clause by its last words (the utterance is in the lines above); the whole one by name
            whole = len(found) > 1 and k == len(found) - 1
            words = prompts.encode(tokenizer, " " + _tokens(texts[j], where))[-CANDIDATE_TOKENS:]
            ids += prompts.encode(tokenizer, " /") + (prompts.encode(tokenizer, " all") if whole else words)
            positions.append(len(ids) - 1)
            keys.append((i, j, *encode(_tokens(texts[j], where), texts[j])))
        groups.append((ids + newline, positions, keys))
    return prompts.grouped_queries(conv, tokenizer, max_length, prompts.header_ids(tokenizer, SPAN_HEADER),
                                   groups, max_utterance_tokens)


def span_examples(convs: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Training examples of the span reads: yes at the candidate whose positions are a gold span's
    (conversations without spans, e.g. a Subtask 2 file, give none)."""
    yes, no = label_token_ids(tokenizer, prompts.ANSWERS)
    out = []
    for conv in convs:
        gold = _gold_by_pair(conv)
        if not gold:
            continue
        pairs = [(i, e, j) for i, e, j in emotion_pairs(conv) if (i, j) in gold]
        for query in span_queries(conv, tokenizer, max_length, pairs):
            answers = [yes if (k[2], k[3]) in gold[(k[0], k[1])] else no for k in query.keys]
            out.append(prompts.training_labels(query, answers))
    return out


def predict_spans(lm, tokenizer, pred: list[dict], max_length: int, batch_size: int = 8) -> list[dict]:
    """Subtask 1 predictions: for every predicted pair, the candidate with the highest P(yes).
    ``lm``: anything with ``label_logprobs`` (``utils.ecf.predict.reader``)."""
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    queries = [(k, q) for k, conv in enumerate(pred) for q in span_queries(conv, tokenizer, max_length)]
    rows = lm.label_logprobs([q.input_ids for _, q in queries], [q.positions for _, q in queries], yes_no,
                             batch_size) if queries else []  # every conversation in one call: length batches
    best: list[dict[tuple[int, int], tuple[float, tuple[int, int]]]] = [{} for _ in pred]
    for (k, query), scores in zip(queries, rows):
        for (i, j, start, end), row in zip(query.keys, scores):
            score = float(row[0] - row[1])  # log P(yes) - log P(no)
            if (i, j) not in best[k] or score > best[k][(i, j)][0]:
                best[k][(i, j)] = (score, (start, end))
    return [_with_spans(conv, lambda i, j, k=k: best[k][(i, j)][1]) for k, conv in enumerate(pred)]


def subtask1(lm, tokenizer, pred: list[dict], val: list[dict], task: dict) -> tuple[list[dict], str, dict]:
    """Notebook 05's Subtask 1 predictions: the span reads the cause adapter learnt (``task["spans"]``, notebook
    04's CAUSE_SPANS), else the rule val's gold spans choose; returns (predictions, where the spans come from,
    each rule's exact share on val)."""
    rule, accuracy = choose_rule(val)
    if task.get("spans"):
        return predict_spans(lm, tokenizer, pred, task["max_length"]), "model", accuracy
    return subtask1_predictions(pred, rule), f"{rule} rule", accuracy


def gold_files(test: list[dict]) -> dict[str, list[dict]]:
    """The test split as the official gold files: Subtask 2 (utterance pairs) and, where the conversations
    carry spans, Subtask 1 (span pairs)."""
    strip = ("cause_spans",)
    out = {"Subtask_2_gold.json": [{k: v for k, v in c.items() if k not in strip} for c in test]}
    if has_spans(test):
        out["Subtask_1_gold.json"] = [{**{k: v for k, v in c.items() if k not in strip},
                                       "emotion-cause_pairs": c.get("cause_spans", [])} for c in test]
    return out


def write_submission(folder: str | Path, name: str = "submission.zip") -> Path:
    """A zip of the prediction files in ``folder`` at its top level, as CodaLab unpacks it into res/."""
    folder = Path(folder)
    present = [f for f in SUBMISSION_FILES if (folder / f).is_file()]
    if not present:
        raise FileNotFoundError(f"{folder} holds none of {list(SUBMISSION_FILES)}: run notebook 05 first")
    with atomic_path(folder / name) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in present:
                archive.writestr(file, json.dumps(json.loads((folder / file).read_text(encoding="utf-8")),
                                                  ensure_ascii=False))
    return folder / name
