"""bench.ed_report: the empathetic track's tables come from the run's own files."""

from __future__ import annotations

import pytest

from bench import ed_report
from utils.io import write_json_atomic


def test_the_tables_read_the_runs_files(tmp_path):
    scores = lambda acc: {"accuracy": acc, "weighted_f1": acc - 0.01, "macro_f1": acc - 0.02, "n": 2768}
    write_json_atomic(tmp_path / "train" / "empathetic" / "classification_metrics.json",
                      {"majority": scores(0.05), "tfidf_logreg": scores(0.5), "tuned": scores(0.61),
                       "rows": {"train": 8000, "val": 1000, "test": 2768}})
    write_json_atomic(tmp_path / "train" / "empathetic" / "generation_metrics.json",
                      {"before": {"perplexity": 40.0, "bleu": 1.0, "distinct_2": 0.5, "n": 300},
                       "after": {"perplexity": 20.0, "bleu": 2.0, "distinct_2": 0.4, "n": 300}})
    write_json_atomic(tmp_path / "ck" / "empathetic" / "emotion" / "train_summary.json",
                      {"session_samples": 8000, "train_tokens": 480_000, "wall_s": 2400, "tokens_per_s": 200,
                       "peak_memory_mb": 5120, "peak_memory_kind": "cpu_max_rss"})
    text = ed_report.report(tmp_path / "train", tmp_path / "ck")
    assert "| model after fine-tuning | 0.610 | 0.600 | 0.590 |" in text
    assert "| TF-IDF + logistic regression (same rows) | 0.500 |" in text and "before fine-tuning" not in text
    assert "| perplexity of the reference replies | 40.000 | 20.000 | 0.50 |" in text
    assert "8,000 examples, 480,000 tokens, 40.0 min (200 tokens/s), peak 5.0 GiB" in text
    with pytest.raises(SystemExit, match="run notebooks 08, 09"):
        ed_report.report(tmp_path / "nothing", tmp_path / "ck")
