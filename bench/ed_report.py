"""The empathetic track's numbers as markdown, read from what a run wrote (``bench/RESULTS.md`` section 11):

    python -m bench.ed_report                                   # results_train/ and checkpoints/ of the last run
    python -m bench.ed_report --train-dir runs/x/results_train --checkpoints runs/x/checkpoints

Every number is read from the run's own files (notebooks 08 and 09's metrics, the trainings' summaries); nothing
is typed in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from utils.io import read_json

CLASSIFY_ROWS = (("majority", "majority class"), ("tfidf_logreg", "TF-IDF + logistic regression (same rows)"),
                 ("base", "model before fine-tuning"), ("tuned", "model after fine-tuning"))
GENERATE_KEYS = (("perplexity", "perplexity of the reference replies"), ("bleu", "BLEU (sacrebleu)"),
                 ("rougeL", "ROUGE-L F1"), ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"),
                 ("mean_words", "mean reply length (words)"))


def _training(summary: dict[str, Any]) -> str:
    """Rows, tokens, wall time and peak memory of one training (its train_summary.json)."""
    return (f"{summary.get('session_samples', 0):,} examples, {summary.get('train_tokens', 0):,} tokens, "
            f"{summary.get('wall_s', 0) / 60:.1f} min ({summary.get('tokens_per_s', 0):.0f} tokens/s), "
            f"peak {summary.get('peak_memory_mb', 0) / 1024:.1f} GiB ({summary.get('peak_memory_kind', '')})")


def classification_table(metrics: dict[str, Any]) -> list[str]:
    """Accuracy, weighted and macro F1 of each system on the test rows."""
    lines = ["| 32 emotions, one row per conversation | accuracy | weighted F1 | macro F1 |", "|---|---|---|---|"]
    for key, name in CLASSIFY_ROWS:
        if key in metrics:
            m = metrics[key]
            lines.append(f"| {name} | {m['accuracy']:.3f} | {m['weighted_f1']:.3f} | {m['macro_f1']:.3f} |")
    return lines


def generation_table(metrics: dict[str, Any]) -> list[str]:
    """Each reply metric before and after fine-tuning, and their ratio."""
    lines = ["| replies | before | after | after / before |", "|---|---|---|---|"]
    for key, name in GENERATE_KEYS:
        before, after = metrics.get("before", {}).get(key), metrics.get("after", {}).get(key)
        if after is None:
            continue
        ratio = f"{after / before:.2f}" if before else ""
        lines.append(f"| {name} | {before if before is None else f'{before:.3f}'} | {after:.3f} | {ratio} |")
    return lines


def report(train_dir: Path, checkpoints: Path) -> str:
    """Both tables with their test and training sizes, as markdown."""
    ed, ck = train_dir / "empathetic", checkpoints / "empathetic"
    out: list[str] = []
    classes = ed / "classification_metrics.json"
    if classes.is_file():
        metrics = read_json(classes)
        out += classification_table(metrics)
        out.append(f"\ntest rows {metrics['tuned']['n']:,}; rows {metrics.get('rows', {})}")
        if (ck / "emotion" / "train_summary.json").is_file():
            out.append("training: " + _training(read_json(ck / "emotion" / "train_summary.json")))
    replies = ed / "generation_metrics.json"
    if replies.is_file():
        metrics = read_json(replies)
        out += ["", *generation_table(metrics), f"\ntest pairs {metrics['after'].get('n', '?')}"]
        if (ck / "response" / "train_summary.json").is_file():
            out.append("training: " + _training(read_json(ck / "response" / "train_summary.json")))
    if not out:
        raise SystemExit(f"no classification_metrics.json or generation_metrics.json under {ed}: run notebooks 08, 09")
    return "\n".join(out)


def tfidf_all_rows(data_path: str) -> str:
    """The bag of words fitted on every training conversation (not only the CPU sample) and scored on the same
    test conversations as notebook 08: what the model would face with the whole split."""
    from utils.ed import baselines
    from utils.ed.config import EdClassifyConfig, load_for, splits_for
    from utils.ed.evaluate import score_labels
    from utils.ed.prompts import classifier_text

    cfg = EdClassifyConfig(ED_DATA_PATH=data_path, MODEL="smollm2")
    splits = splits_for(cfg, load_for(cfg)[0], cfg.ED_UNIT)
    texts = {n: [classifier_text(r, cfg.TEXT_FIELDS) for r in p.to_dict("records")] for n, p in splits.items()}
    pred, _ = baselines.tfidf_predict(texts["train"], splits["train"]["emotion"], texts["test"], cfg.SEED)
    m = score_labels(splits["test"]["emotion"], pred)
    return (f"| TF-IDF + logistic regression, all {len(texts['train']):,} training conversations | {m['accuracy']:.3f} | "
            f"{m['weighted_f1']:.3f} | {m['macro_f1']:.3f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ed_report", description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", default="results_train", type=Path, help="the run's TRAIN_DIR")
    parser.add_argument("--checkpoints", default="checkpoints", type=Path, help="the run's CHECKPOINT_DIR")
    parser.add_argument("--tfidf-all", metavar="ED_DATA_PATH",
                        help="also fit the bag of words on every training conversation of this data (a table row)")
    args = parser.parse_args(argv)
    print(report(args.train_dir, args.checkpoints))
    if args.tfidf_all:
        print(tfidf_all_rows(args.tfidf_all))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
