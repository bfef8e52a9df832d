"""The baselines notebook 08 shows beside the model: the majority class and a bag of words (TF-IDF of word 1-2 grams
with logistic regression, scikit-learn), fitted on the same training rows the model trains on."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np


def majority(train_labels: Sequence[str], n: int) -> list[str]:
    """``n`` copies of the most frequent training label (ties: alphabetical, for determinism)."""
    counts = Counter(train_labels)
    return [min(counts, key=lambda label: (-counts[label], label))] * n


def tfidf_logreg(train_texts: Sequence[str], train_labels: Sequence[str], seed: int = 42):
    """A fitted sklearn pipeline: TF-IDF of word 1-2 grams (sublinear tf) -> multinomial logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                             LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
    return pipeline.fit(list(train_texts), list(train_labels))


def tfidf_predict(train_texts: Sequence[str], train_labels: Sequence[str], texts: Sequence[str],
                  seed: int = 42) -> tuple[list[str], np.ndarray]:
    """The bag-of-words baseline's labels for ``texts`` and its highest probability for each."""
    pipeline = tfidf_logreg(train_texts, train_labels, seed)
    probs = pipeline.predict_proba(list(texts))
    classes = pipeline.classes_
    return [str(classes[i]) for i in probs.argmax(axis=1)], probs.max(axis=1)
