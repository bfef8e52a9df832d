"""Decision rules chosen on the val split: per-emotion offsets on the label log-probabilities.

The emotion model reads seven log-probabilities per utterance; its argmax follows the training
label prior (44% neutral), which the held-out conversations do not share and which weighted F1
punishes: every emotional utterance called neutral is a miss. A per-emotion offset added to the
log-probabilities before the argmax moves each decision boundary; the offsets are chosen on the
val conversations by coordinate ascent on a grid (neutral stays at 0: only differences matter),
the same way notebook 04 chooses the cause cut-off.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score

from utils.ecf.data import EMOTIONS, with_pairs
from utils.ecf.metric import score_subtask2

OFFSET_GRID = tuple(float(x) for x in np.round(np.arange(-1.0, 3.01, 0.25), 2))
OBJECTIVES = ("weighted_f1", "macro_f1")


def decide(logprobs: np.ndarray, offsets: Sequence[float] | None = None,
           labels: Sequence[str] = EMOTIONS) -> list[str]:
    """The label of each row of ``logprobs`` ([n, len(labels)]) after adding ``offsets``."""
    scores = np.asarray(logprobs, dtype=np.float64)
    if offsets is not None:
        scores = scores + np.asarray(offsets, dtype=np.float64)
    return [labels[k] for k in scores.argmax(axis=1)]


def _objective(gold: Sequence[str], pred: Sequence[str], objective: str, labels: Sequence[str]) -> float:
    average = objective.split("_")[0]
    return float(f1_score(gold, pred, labels=list(labels), average=average, zero_division=0))


def tune_offsets(logprobs: np.ndarray, gold: Sequence[str], objective: str = "weighted_f1",
                 grid: Sequence[float] = OFFSET_GRID, rounds: int = 3,
                 labels: Sequence[str] = EMOTIONS) -> dict:
    """Offsets (label -> value, the first label fixed at 0) that maximise ``objective`` on ``gold``.

    Coordinate ascent: each round tries every grid value for each label in turn and keeps the best
    (ties: the value nearer 0, so an offset moves only when it helps)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}: use one of {list(OBJECTIVES)}")
    scores = np.asarray(logprobs, dtype=np.float64)
    if scores.shape != (len(gold), len(labels)):
        raise ValueError(f"logprobs of shape {scores.shape} for {len(gold)} gold labels and {len(labels)} labels")
    offsets = np.zeros(len(labels))
    before = best = _objective(gold, decide(scores, offsets, labels), objective, labels)
    for _ in range(rounds):
        moved = False
        for k in range(1, len(labels)):
            for value in sorted(grid, key=abs):
                trial = offsets.copy()
                trial[k] = value
                score = _objective(gold, decide(scores, trial, labels), objective, labels)
                if score > best + 1e-12:
                    best, offsets, moved = score, trial, True
        if not moved:
            break
    return {"offsets": {label: float(offsets[k]) for k, label in enumerate(labels)}, "objective": objective,
            "val_before": before, "val_after": best, "n": len(gold)}


def offsets_vector(offsets: dict[str, float] | None, labels: Sequence[str] = EMOTIONS) -> np.ndarray | None:
    """The offsets as a vector in ``labels`` order (None stays None; a missing label is 0)."""
    if offsets is None:
        return None
    unknown = sorted(set(offsets) - set(labels))
    if unknown:
        raise ValueError(f"offsets name unknown labels {unknown}; labels are {list(labels)}")
    return np.array([float(offsets.get(label, 0.0)) for label in labels])


# ---------------------------------------------------------------- cause cut-offs

# Cause candidates fall into distance buckets j - i with their own cut-off: the utterance itself
# (half of the ECF 2.0 pairs), the one before (29%), two before (9%), the rest (14%). The model's
# P(yes) already sees the distance (candidates are listed most likely first); a cut-off per bucket
# lets the val split correct what it over- or under-calls at each distance.
CUTOFF_BUCKETS = ("0", "-1", "-2", "other")
CUTOFF_GRID = tuple(round(0.05 * k, 2) for k in range(0, 21))  # 0.0 (take all) .. 1.0 (take none)


def distance_bucket(i: int, j: int) -> str:
    """The cut-off bucket of candidate ``j`` for emotion utterance ``i``."""
    d = int(j) - int(i)
    return str(d) if str(d) in CUTOFF_BUCKETS else "other"


def cutoff_for(cutoffs: float | dict[str, float], i: int, j: int) -> float:
    """The P(yes) cut-off that applies to (i, j): one number, or one per distance bucket."""
    if isinstance(cutoffs, dict):
        return float(cutoffs[distance_bucket(i, j)])
    return float(cutoffs)


def tune_cutoffs(score: Callable[[float | dict[str, float]], float], start: float,
                 grid: Sequence[float] = CUTOFF_GRID, rounds: int = 2) -> dict[str, float]:
    """Per-bucket cut-offs that maximise ``score`` (weighted pair F1 on val), by coordinate ascent from
    the single cut-off ``start``; ties keep the current value, so a bucket moves only when it helps."""
    cut = dict.fromkeys(CUTOFF_BUCKETS, float(start))
    best = score(cut)
    for _ in range(rounds):
        moved = False
        for bucket in CUTOFF_BUCKETS:
            for value in sorted(grid, key=lambda t: abs(t - cut[bucket])):
                trial = {**cut, bucket: float(value)}
                s = score(trial)
                if s > best + 1e-12:
                    best, cut, moved = s, trial, True
        if not moved:
            break
    return cut


def pairs_above(conv: dict, probs: list[list], threshold: float | dict[str, float]) -> list[tuple[int, str, int]]:
    """(i, emotion of i, j) for every query whose P(yes) exceeds ``threshold`` (one cut-off, or one per
    distance bucket as ``decision.tune_cutoffs`` chooses them)."""
    emotion = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
    return [(int(i), emotion[int(i)], int(j)) for i, j, p in probs if p > cutoff_for(threshold, i, j)]


THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


def _probs_by_conversation(probs: list[list]) -> dict[Any, list]:
    by_conv: dict[Any, list] = {}
    for cid, i, j, p in probs:
        by_conv.setdefault(cid, []).append([i, j, p])
    return by_conv


def _above(inputs: list[dict], by_conv: dict[Any, list], threshold: float | dict[str, float]) -> list[dict]:
    return [with_pairs(c, pairs_above(c, by_conv.get(c["conversation_ID"], []), threshold)) for c in inputs]


def with_pairs_above(inputs: list[dict], probs: list[list], threshold: float | dict[str, float]) -> list[dict]:
    """``inputs`` with the pairs whose P(yes) passes ``threshold`` (probs as predict_causes returns them)."""
    return _above(inputs, _probs_by_conversation(probs), threshold)


def pair_scores(inputs: list[dict], probs: list[list], gold: list[dict],
                threshold: float | dict[str, float]) -> dict:
    """Official Subtask 2 scores of the pairs above ``threshold`` (probs as predict_causes returns them)."""
    return score_subtask2(with_pairs_above(inputs, probs, threshold), gold)


def threshold_sweep(inputs: list[dict], probs: list[list], gold: list[dict],
                    grid: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Weighted pair P/R/F1 of the pairs above each single cut-off."""
    table = []
    for t in grid:
        s = pair_scores(inputs, probs, gold, t)
        table.append({"threshold": t, **{k: s[k] for k in ("weighted_f1", "weighted_precision", "weighted_recall")},
                      "n_pred_pairs": s["n_pred_pairs"]})
    return table


def choose_cutoffs(gold: list[dict], probs: list[list], per_distance: bool = True) -> dict:
    """From P(yes) of ``gold``'s candidates (probs as predict_causes returns them): the single cut-off
    with the best weighted pair F1 (ties: nearer 0.5) and, with ``per_distance``, one cut-off per
    distance bucket chosen from it (``decision.tune_cutoffs``)."""
    inputs = [with_pairs(c, []) for c in gold]
    table = threshold_sweep(inputs, probs, gold)
    best = max(table, key=lambda row: (row["weighted_f1"], -abs(row["threshold"] - 0.5)))
    out = {"threshold": best["threshold"], "weighted_f1": best["weighted_f1"], "conversations": len(gold),
           "table": table}
    if per_distance:
        by_conv = _probs_by_conversation(probs)  # grouped once: the ascent scores ~170 rules

        def score(cut: float | dict[str, float]) -> float:
            return score_subtask2(_above(inputs, by_conv, cut), gold)["weighted_f1"]

        cutoffs = tune_cutoffs(score, best["threshold"])
        out.update(threshold=cutoffs, single_threshold=best["threshold"], weighted_f1=score(cutoffs))
    return out
