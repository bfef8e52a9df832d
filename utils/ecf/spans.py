"""Subtask 1: the cause span inside each predicted cause utterance, and the files CodaLab takes.

A span is written as ``"<utterance>_<start>_<end>"``, whitespace-token positions ``[start, end)``
computed exactly as the official scorer computes the gold ones (``metric.span_position`` of
``metric.clean_span``): a candidate text and a gold text that the scorer would read alike get the
same positions, punctuation quirks included, so a span the scorer counts as right is written as one.

The spans come from a rule chosen on val among whole-utterance and clause rules (a clause ends at a
token that ends in , . ! ? ; :). Every output is a span of the cause utterance by construction.
On the ECF 2.0 training file the gold span is the whole utterance (punctuation aside) for 36% of the
pairs, its last clause for 46% and its longest clause for 49%.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Callable

from utils.ecf.data import emotion_pairs, parse_cause
from utils.ecf.metric import clean_span, span_position
from utils.io import atomic_path

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


def subtask1_predictions(pred: list[dict], rule: str) -> list[dict]:
    """Subtask 1 predictions in the official format: every predicted pair with ``rule``'s span."""
    out = []
    for conv in pred:
        texts = [u["text"] for u in conv["conversation"]]
        pairs = [[f"{i}_{emotion}", "{}_{}_{}".format(j, *span_for(rule, texts[j - 1]))]
                 for i, emotion, j in emotion_pairs(conv)]
        out.append({**{k: v for k, v in conv.items() if k not in ("emotion-cause_pairs", "cause_spans")},
                    "emotion-cause_pairs": pairs})
    return out


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
