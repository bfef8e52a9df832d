"""Classification scores over a label set, for both tracks' emotion labels (sklearn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def label_scores(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted/macro P/R/F1, the per-class report and the confusion matrix (sklearn)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = list(labels)
    out: dict[str, Any] = {"n": len(gold), "labels": labels, "accuracy": float(accuracy_score(gold, pred))}
    for avg in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=labels, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    out["report"] = classification_report(gold, pred, labels=labels, output_dict=True, zero_division=0)
    out["confusion_matrix"] = confusion_matrix(gold, pred, labels=labels).tolist()
    return out
