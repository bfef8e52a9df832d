"""Scores: the official SemEval-2024 Task 3 pair metrics (ours, matched to the CodaLab scorer)
and emotion-classification metrics (sklearn).

Official definitions, per emotion category e (neutral is computed but never weighted or
counted in micro scores): P = correct / (predicted + 1e-8), R = correct / (annotated + 1e-8),
F1 = 2PR / (P + R + 1e-8); weighted scores weight the six emotions by their share of the
annotated pairs (gold spans in the proportional metric); micro scores sum the six first.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from utils.scores import label_scores
from utils.ecf.data import EMOTIONS, parse_cause

EPS = 1e-8
_EMOTION_INDEX = {e: i for i, e in enumerate(EMOTIONS)}
# ids are ASCII digits only: int() would also take "1_0_9" (109) and other scripts' digits
_EMOTION_PART = re.compile(r"U?(\d+)_([^_]*)", re.ASCII)
_UTTERANCE = re.compile(r"\d+", re.ASCII)
_SPAN_CAUSE = re.compile(r"(\d+)_(\d+)_(\d+)", re.ASCII)


class ScoreError(ValueError):
    """A prediction (or gold) file the official scorer would reject; ``role`` says which file."""

    def __init__(self, message: str):
        super().__init__(message)
        self.role = "gold" if message.startswith("gold") else "prediction"


@dataclass
class Counts:
    """Per-emotion correct / predicted / annotated counts, and the weight of each emotion."""

    correct: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS)))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS)))
    annotated: np.ndarray = field(default_factory=lambda: np.zeros(len(EMOTIONS)))
    weight_basis: np.ndarray | None = None  # defaults to `annotated`


def _prf(correct, predicted, annotated):
    """Precision, recall and F1 exactly as the official scorer smooths them."""
    p = correct / (predicted + EPS)
    r = correct / (annotated + EPS)
    return p, r, 2 * p * r / (p + r + EPS)


def _summarise(counts: Counts) -> dict[str, Any]:
    """Weighted and micro P/R/F1 over the six emotions, plus the per-emotion table."""
    p, r, f = _prf(counts.correct, counts.predicted, counts.annotated)
    basis = counts.annotated if counts.weight_basis is None else counts.weight_basis
    with np.errstate(invalid="ignore", divide="ignore"):  # no gold pairs at all: nan, as officially
        weight = basis[1:] / basis[1:].sum()
    mp, mr, mf = _prf(counts.correct[1:].sum(), counts.predicted[1:].sum(), counts.annotated[1:].sum())
    per_emotion = {
        emotion: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                  "correct": float(counts.correct[i]), "predicted": float(counts.predicted[i]),
                  "annotated": float(counts.annotated[i])}
        for i, emotion in enumerate(EMOTIONS) if i > 0
    }
    return {
        "weighted": tuple(float(np.sum(x[1:] * weight)) for x in (p, r, f)),
        "micro": (float(mp), float(mr), float(mf)),
        "per_emotion": per_emotion,
    }


def _index_by_id(convs: Any, role: str) -> dict:
    """conversation_ID -> conversation; duplicates and non-lists are errors, as officially."""
    if not isinstance(convs, list):
        raise ScoreError(f"{role} file: top level must be a list of conversations")
    out: dict = {}
    for k, conv in enumerate(convs, 1):
        if not isinstance(conv, dict) or "conversation_ID" not in conv:
            raise ScoreError(f"{role} file: conversation #{k} has no 'conversation_ID'")
        cid = conv["conversation_ID"]
        if cid in out:
            raise ScoreError(f"{role} file: conversation_ID={cid} appears twice")
        out[cid] = conv
    return out


def _aligned(pred_convs: Any, gold_convs: Any) -> Iterable[tuple[Any, dict, list]]:
    """Yield (id, gold conversation, predicted pairs) for every gold conversation."""
    pred_by_id = _index_by_id(pred_convs, "prediction")
    for cid, gold in _index_by_id(gold_convs, "gold").items():
        if cid not in pred_by_id:
            raise ScoreError(f"prediction file: conversation_ID={cid} is missing (every gold conversation "
                             "must be predicted; an empty 'emotion-cause_pairs' list is fine)")
        pairs = pred_by_id[cid].get("emotion-cause_pairs")
        if pairs is None:
            raise ScoreError(f"prediction file: conversation_ID={cid} has no 'emotion-cause_pairs'")
        if not isinstance(pairs, list):
            raise ScoreError(f"prediction file: conversation_ID={cid}: 'emotion-cause_pairs' must be a list")
        yield cid, gold, pairs


def _emotion_part(pair: Any, cid: Any, role: str) -> tuple[int, int]:
    """``["3_joy", ...]`` -> (3, index of joy); the pair must be a two-element list."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise ScoreError(f"{role} file: conversation_ID={cid}: pair {pair!r} is not a two-element list")
    match = _EMOTION_PART.fullmatch(pair[0]) if isinstance(pair[0], str) else None
    if not match:
        raise ScoreError(f"{role} file: conversation_ID={cid}: {pair[0]!r} is not '<utterance>_<emotion>'")
    if match.group(2) not in _EMOTION_INDEX:
        raise ScoreError(f"{role} file: conversation_ID={cid}: unknown emotion {match.group(2)!r} in {pair!r}; "
                         f"expected one of {list(EMOTIONS)}")
    return int(match.group(1)), _EMOTION_INDEX[match.group(2)]


def _utterance_id(value: Any, cid: Any, pair: Any) -> int:
    """A Subtask 2 cause: an integer or a string of ASCII digits, as ``int()`` in the official scorer reads it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _UTTERANCE.fullmatch(value):
        return int(value)
    if isinstance(value, str) and _SPAN_CAUSE.fullmatch(value):
        raise ScoreError(f"prediction file: conversation_ID={cid}: cause {value!r} in {pair!r} is a Subtask 1 span "
                         "'<utterance>_<start>_<end>'; Subtask 2 causes are utterance ids like '3' "
                         "(score this file with --subtask 1)")
    raise ScoreError(f"prediction file: conversation_ID={cid}: cause {value!r} in {pair!r} is not an "
                     "utterance id like '3' (Subtask 2)")


def extra_conversations(pred_convs: list, gold_convs: list) -> list:
    """Predicted conversation ids the gold file does not have (the official scorer ignores them)."""
    gold_ids = {c.get("conversation_ID") for c in gold_convs if isinstance(c, dict)}
    return [c.get("conversation_ID") for c in pred_convs
            if isinstance(c, dict) and c.get("conversation_ID") not in gold_ids]


def _dedup(items: Iterable[tuple]) -> list[tuple]:
    return list(dict.fromkeys(items))


def subtask2_pairs(convs_with_ids: Iterable[tuple[Any, list]], role: str) -> list[tuple]:
    """(conversation, emotion utterance, cause utterance, emotion index), deduplicated in order."""
    out = []
    for cid, pairs in convs_with_ids:
        for pair in pairs:
            emo_id, emotion = _emotion_part(pair, cid, role)
            cause = parse_cause(pair[1], role, cid)[0] if role == "gold" else _utterance_id(pair[1], cid, pair)
            out.append((cid, emo_id, cause, emotion))
    return _dedup(out)


def score_subtask2(pred_convs: Any, gold_convs: Any) -> dict[str, Any]:
    """Official Subtask 2 scores (utterance-level causes)."""
    aligned = list(_aligned(pred_convs, gold_convs))
    gold = subtask2_pairs(((cid, g.get("emotion-cause_pairs", [])) for cid, g, _ in aligned), "gold")
    pred = subtask2_pairs(((cid, p) for cid, _, p in aligned), "prediction")
    gold_set = set(gold)
    counts = Counts()
    for pair in pred:
        counts.predicted[pair[3]] += 1
        counts.correct[pair[3]] += pair in gold_set
    for pair in gold:
        counts.annotated[pair[3]] += 1
    s = _summarise(counts)
    (wp, wr, wf), (mp, mr, mf) = s["weighted"], s["micro"]
    return {"precision_pair": mp, "recall_pair": mr, "f1_pair": mf,
            "weighted_precision": wp, "weighted_recall": wr, "weighted_f1": wf,
            "per_emotion": s["per_emotion"],
            "n_gold_pairs": len(gold), "n_pred_pairs": len(pred)}


def clean_span(span: str) -> str:
    """Strip, then drop one punctuation character from each end that has one, until neither does."""
    span = span.strip()
    while span and (span[0] in string.punctuation or span[-1] in string.punctuation):
        if span[0] in string.punctuation:
            span = span[1:]
        if span and span[-1] in string.punctuation:
            span = span[:-1]
        span = span.strip()
    return span


def span_position(span: str, utterance: str) -> tuple[int, int]:
    """Whitespace-token [start, end) of the first occurrence of ``span`` in ``utterance``; (0, 0) if none."""
    cause, tokens = span.split(), utterance.split()
    for w in range(len(tokens) - len(cause) + 1):
        if tokens[w:w + len(cause)] == cause:
            return w, w + len(cause)
    return 0, 0


def _gold_span_tuples(cid: Any, conv: dict) -> list[tuple]:
    """Gold (conversation, i, j, start, end, emotion) from Subtask 1 span pairs."""
    texts = [u["text"] for u in conv["conversation"]]
    out = []
    for pair in conv.get("cause_spans", conv.get("emotion-cause_pairs", [])):
        emo_id, emotion = _emotion_part(pair, cid, "gold")
        cause_id, span = parse_cause(pair[1], "gold", cid)
        if span is None:
            raise ScoreError(f"gold file: conversation_ID={cid}: {pair!r} has no cause span (Subtask 1 gold needed)")
        if not 1 <= cause_id <= len(texts):
            raise ScoreError(f"gold file: conversation_ID={cid}: cause utterance {cause_id} does not exist")
        start, end = span_position(clean_span(span), texts[cause_id - 1])
        out.append((cid, emo_id, cause_id, start, end, emotion))
    return out


def _pred_span_tuples(cid: Any, pairs: list) -> list[tuple]:
    """Predicted (conversation, i, j, start, end, emotion) from ``"j_start_end"`` causes."""
    out = []
    for pair in pairs:
        emo_id, emotion = _emotion_part(pair, cid, "prediction")
        cause = pair[1]
        if not isinstance(cause, str) or any(c.isalpha() for c in cause):
            raise ScoreError(f"prediction file: conversation_ID={cid}: cause {cause!r} must be the span's token "
                             "positions '<utterance>_<start>_<end>', not the text itself (Subtask 1)")
        match = _SPAN_CAUSE.fullmatch(cause)
        if not match:
            hint = (" (a Subtask 2 utterance id: score this file with --subtask 2)"
                    if _UTTERANCE.fullmatch(cause) else "")
            raise ScoreError(f"prediction file: conversation_ID={cid}: cause {cause!r} is not "
                             f"'<utterance>_<start>_<end>' with integers{hint}")
        out.append((cid, emo_id, *(int(x) for x in match.groups()), emotion))
    return out


def _strict_counts(gold: list[tuple], pred: list[tuple]) -> Counts:
    """Each predicted tuple uses up one identical gold tuple, walking predictions in file order."""
    unused: dict[tuple, int] = defaultdict(int)
    for t in gold:
        unused[t] += 1
    counts = Counts()
    for t in pred:
        counts.predicted[t[5]] += 1
        if unused[t] > 0:
            unused[t] -= 1
            counts.correct[t[5]] += 1
    for t in gold:
        counts.annotated[t[5]] += 1
    return counts


def _best_gold_match(pred: tuple, golds: list[tuple]) -> tuple[int | None, int, int]:
    """Index, overlap and gold length of the gold span with the best overlap/gold-length ratio."""
    p_start, p_end = pred[3], pred[4]
    best, best_overlap, best_ratio, best_len = None, 0, 0.0, 0
    for k, g in enumerate(golds):
        if g[5] != pred[5] or p_end <= g[3] or p_start >= g[4]:
            continue
        overlap, length = min(p_end, g[4]) - max(p_start, g[3]), g[4] - g[3]
        ratio = overlap / float(length)
        if ratio > best_ratio or (ratio == best_ratio and ratio > 0 and overlap > best_overlap):
            best, best_overlap, best_ratio, best_len = k, overlap, ratio, length
    return best, best_overlap, best_len


def _proportional_counts(gold: list[tuple], pred: list[tuple]) -> Counts:
    """Token-level counts: overlap with the best-matching gold span of the same (i, j, emotion)."""
    by_key: dict[tuple, list[tuple]] = defaultdict(list)
    for t in gold:
        by_key[t[:3]].append(t)
    counts, matched = Counts(weight_basis=np.zeros(len(EMOTIONS))), set()
    for t in pred:
        counts.predicted[t[5]] += t[4] - t[3]
        k, overlap, length = _best_gold_match(t, by_key.get(t[:3], []))
        if k is not None and overlap > 0:
            counts.correct[t[5]] += overlap
            counts.annotated[t[5]] += length  # a gold span matched twice counts twice
            matched.add(by_key[t[:3]][k])
    for t in gold:
        counts.weight_basis[t[5]] += 1
        if t not in matched:
            counts.annotated[t[5]] += t[4] - t[3]
    return counts


def score_subtask1(pred_convs: Any, gold_convs: Any) -> dict[str, Any]:
    """Official Subtask 1 scores (textual cause spans): strict and proportional."""
    gold, pred = [], []
    for cid, conv, pairs in _aligned(pred_convs, gold_convs):
        gold.extend(_dedup(_gold_span_tuples(cid, conv)))
        pred.extend(_dedup(_pred_span_tuples(cid, pairs)))
    strict, prop = _summarise(_strict_counts(gold, pred)), _summarise(_proportional_counts(gold, pred))
    out: dict[str, Any] = {}
    for name, s in (("strict", strict), ("proportional", prop)):
        for prefix, values in (("weighted_", s["weighted"]), ("", s["micro"])):
            for metric, value in zip(("precision", "recall", "f1"), values):
                out[f"{prefix}{name}_{metric}"] = value
    # The CodaLab scorer spells these with a capital P; keep both so either lookup works.
    out.update({k.replace("proportional", "Proportional"): v for k, v in list(out.items()) if "proportional" in k})
    out["per_emotion_strict"], out["per_emotion_proportional"] = strict["per_emotion"], prop["per_emotion"]
    out["n_gold_spans"], out["n_pred_spans"] = len(gold), len(pred)
    return out


def emotion_scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] = EMOTIONS) -> dict[str, Any]:
    """``utils.scores.label_scores`` over the seven ECF emotions."""
    return label_scores(gold, pred, labels)


def emotion_scores_convs(pred_convs: list[dict], gold_convs: list[dict]) -> dict[str, Any]:
    """Emotion scores of predicted conversations against gold ones, aligned by id and utterance."""
    pred_by_id = _index_by_id(pred_convs, "prediction")
    gold_labels, pred_labels = [], []
    for cid, conv in _index_by_id(gold_convs, "gold").items():
        if cid not in pred_by_id:
            raise ScoreError(f"prediction file: conversation_ID={cid} is missing")
        pred_utts = pred_by_id[cid].get("conversation")
        if not isinstance(pred_utts, list):
            raise ScoreError(f"prediction file: conversation_ID={cid} has no 'conversation' list of utterances with "
                             "their 'emotion' to score emotions on")
        if len(pred_utts) != len(conv["conversation"]):
            raise ScoreError(f"prediction file: conversation_ID={cid} has {len(pred_utts)} utterances, "
                             f"gold has {len(conv['conversation'])}")
        for g, p in zip(conv["conversation"], pred_utts):
            if not isinstance(p, dict) or p.get("emotion") not in EMOTIONS:
                got = p.get("emotion") if isinstance(p, dict) else p
                raise ScoreError(f"prediction file: conversation_ID={cid}, utterance_ID={g['utterance_ID']}: "
                                 f"emotion {got!r} is not one of {list(EMOTIONS)}")
            gold_labels.append(g["emotion"])
            pred_labels.append(p["emotion"])
    return emotion_scores(gold_labels, pred_labels)
