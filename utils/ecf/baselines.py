"""Baselines every report shows: they write prediction files like any model."""

from __future__ import annotations

from collections import Counter

from utils.ecf.data import emotions_of, with_emotions, with_pairs


def majority_label(train_convs: list[dict]) -> str:
    """The most frequent training emotion (ties: alphabetical, for determinism)."""
    counts = Counter(emotions_of(train_convs))
    return min(counts, key=lambda label: (-counts[label], label))


def majority_emotion(train_convs: list[dict], convs: list[dict]) -> list[dict]:
    """Label every utterance of ``convs`` with the training set's majority emotion."""
    label = majority_label(train_convs)
    return [with_emotions(conv, [label] * len(conv["conversation"])) for conv in convs]


def self_and_previous_causes(convs: list[dict], previous: bool = True) -> list[dict]:
    """Each emotional utterance is caused by itself and (optionally) the utterance before it."""
    out = []
    for conv in convs:
        pairs = []
        for utt in conv["conversation"]:
            i, emotion = utt["utterance_ID"], utt.get("emotion", "neutral")
            if emotion != "neutral":
                pairs.append((i, emotion, i))
                if previous and i > 1:
                    pairs.append((i, emotion, i - 1))
        out.append(with_pairs(conv, pairs))
    return out
