"""Notebooks 08 and 09's evaluation: test-set predictions (resumable), their metrics, the rating-sheet
items and the CSV files they write."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from utils.scores import label_scores
from utils.ed import textmetrics
from utils.ed.config import EdClassifyConfig, EdGenerateConfig, EdTrainConfig
from utils.ed.data import EMOTIONS_32
from utils.ed.predict import classify, respond
from utils.ed.prompts import classifier_text, response_examples
from utils.io import file_sha256
from utils.lm.inference import resumable_map
from utils.lm.modeling import ADAPTER_WEIGHTS, is_adapter


def fingerprint(model: str, adapter: str | os.PathLike | None) -> str:
    """Short id of (model, adapter weights): resumable checkpoints of another model are never reused."""
    digest = hashlib.sha256(str(model).encode())
    if adapter and is_adapter(adapter):
        digest.update(file_sha256(Path(adapter) / ADAPTER_WEIGHTS).encode())
    return digest.hexdigest()[:12]


def _predict_resumable(rows: pd.DataFrame, fn: Callable[[list[dict]], list], cfg: EdTrainConfig, name: str,
                       adapter: str | os.PathLike | None, desc: str) -> list:
    """``fn`` over the rows through utils.lm.inference.resumable_map, checkpointed to
    results_dir/checkpoints/<name>.jsonl so that a rerun continues where it stopped; only a rerun with the
    same model, adapter weights and settings does (another one starts the file over)."""
    checkpoint = cfg.results_dir / "checkpoints" / f"{name}.jsonl"
    identity = {"weights": fingerprint(cfg.MODEL, adapter), "max_length": cfg.MAX_LENGTH,
                "text_fields": getattr(cfg, "TEXT_FIELDS", None), "max_new_tokens": getattr(cfg, "MAX_NEW_TOKENS", None)}
    items = [{"key": f"{r['conv_id']}#{r['source_row']}#{i}", **r} for i, r in enumerate(rows.to_dict("records"))]
    return resumable_map(items, "key", fn, checkpoint, batch_size=max(cfg.BATCH_SIZE, 16), desc=desc,
                         identity=identity)


def classification_eval(lm, tokenizer, test: pd.DataFrame, cfg: EdClassifyConfig, stage: str,
                        adapter: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame]:
    """Predict the test rows (resumable), score them with utils.scores, return (metrics, predictions)."""
    def fn(batch: list[dict]) -> list[dict]:
        texts = [classifier_text(r, cfg.TEXT_FIELDS) for r in batch]
        return classify(lm, tokenizer, texts, cfg.MAX_LENGTH, cfg.BATCH_SIZE)

    predictions = _predict_resumable(test, fn, cfg, f"classify_{stage}", adapter, f"classify ({stage})")
    table = test.assign(text=[classifier_text(r, cfg.TEXT_FIELDS) for r in test.to_dict("records")],
                        predicted=[p["label"] for p in predictions], confidence=[p["prob"] for p in predictions])
    return score_labels(list(table["emotion"]), list(table["predicted"])), table


def score_labels(gold, predicted) -> dict:
    """utils.scores.label_scores over the 32 emotions."""
    return label_scores(list(gold), list(predicted), labels=EMOTIONS_32)


def confused_pairs(matrix, labels, top: int = 15) -> pd.DataFrame:
    """The ``top`` most confused label pairs, both directions counted together (rows gold, columns predicted)."""
    counts = np.asarray(matrix)
    rows = [{"pair": f"{labels[i]} / {labels[j]}", "count": int(counts[i, j] + counts[j, i]),
             "gold first, predicted second": int(counts[i, j]), "gold second, predicted first": int(counts[j, i])}
            for i in range(len(labels)) for j in range(i + 1, len(labels)) if counts[i, j] + counts[j, i]]
    return pd.DataFrame(rows, columns=["pair", "count", "gold first, predicted second", "gold second, predicted first"]
                        ).sort_values("count", ascending=False, kind="stable").head(top).reset_index(drop=True)


def headline(scores: dict) -> dict:
    """The scalar metrics of utils.scores.label_scores (no report, no matrix)."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def generation_eval(lm, tokenizer, test: pd.DataFrame, cfg: EdGenerateConfig, stage: str,
                    adapter: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame]:
    """Generate replies (resumable), then BLEU, ROUGE, distinct-n and perplexity on the references."""
    def fn(batch: list[dict]) -> list[str]:
        return respond(lm, tokenizer, [r["dialogue"] for r in batch], cfg.MAX_NEW_TOKENS, cfg.MAX_LENGTH,
                       cfg.BATCH_SIZE)

    replies = _predict_resumable(test, fn, cfg, f"respond_{stage}", adapter, f"generate ({stage})")
    table = test[["conv_id", "emotion", "dialogue", "response"]].assign(generated=replies)
    metrics = textmetrics.generation_scores(replies, list(test["response"]))
    metrics["perplexity"] = textmetrics.perplexity(lm, response_examples(tokenizer, test, cfg.MAX_LENGTH),
                                                   cfg.BATCH_SIZE)
    metrics["n"] = len(test)
    return metrics, table


def rating_items(replies: pd.DataFrame, model: str, rows: int) -> list[dict]:
    """Rating-sheet items for the first ``rows`` prompts: one per reply column present ("before",
    "after"), each naming the model and the stage it came from."""
    head = replies.head(rows)
    return [{"id": f"{stage}-{i}", "model": f"{model} ({stage})", "prompt": row["dialogue"], "response": row[stage]}
            for stage in ("before", "after") if stage in head for i, row in head.iterrows()]

