"""The empathetic track's notebooks, 07 to 10, under papermill with the tiny model (SMOKE)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from safetensors.torch import load_file

from utils import tracking
from utils.ed import rubric
from utils.ed.data import EMOTIONS_32, SAMPLE_PATH
from utils.io import file_sha256
from utils.run import NOTEBOOK_DIR, execute

NOTEBOOKS = ("07_empathetic_eda", "08_empathetic_classification", "09_empathetic_generation", "10_experiment_log")


def lora_b_norm(adapter_dir) -> float:
    """LoRA's B matrices start at zero: a non-zero norm means training changed the adapter."""
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(t.float().norm()) for name, t in weights.items() if "lora_B" in name)


@pytest.fixture(scope="module")
def series(tiny_family, tmp_path_factory):
    """Run the four notebooks once, in order, with every output under a temp folder, on a tiny GPT-2 (no pad token,
    no BOS, no chat template: the plain prompts)."""
    root = tmp_path_factory.mktemp("ed_series")
    ratings = root / "train" / "empathetic" / "ratings"
    ratings.mkdir(parents=True)
    sheet = rubric.export_sheet([{"id": "a", "model": "m1", "prompt": "p", "response": "r"},
                                 {"id": "b", "model": "m2", "prompt": "p", "response": "r"}], ratings / "ana.csv")
    rows = list(csv.DictReader(open(sheet, encoding="utf-8")))
    for row in rows:
        row.update(empathy="4", tone="5", helpfulness="3", rater="ana")
    with open(sheet, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rubric.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    train = {"MODEL": str(tiny_family("gpt2")), "SMOKE": True, "CHECKPOINT_DIR": str(root / "ck"),
             "TRACKING_DB": str(root / "log.sqlite"), "LEARNING_RATE": 0.01, "MAX_LENGTH": 384}
    params = {"TRAIN_DIR": str(root / "train")}
    for name in NOTEBOOKS:
        book_params = {**params, **train} if name[:2] in ("08", "09") else dict(params)
        if name.startswith("10"):
            book_params["TRACKING_DB"] = train["TRACKING_DB"]
        execute(NOTEBOOK_DIR / f"{name}.ipynb", book_params, root / "executed")
    return root


def test_eda_notebook_writes_figures_and_stats(series):
    out = series / "train" / "empathetic"
    for png in ("ed_emotion_counts", "ed_text_length_by_emotion", "ed_wordclouds"):
        assert (out / "figures" / f"{png}.png").stat().st_size > 5000
    stats = json.loads((out / "eda_stats.json").read_text(encoding="utf-8"))
    assert stats["rows"] == 64 and sum(stats["emotions"].values()) == 64 and min(stats["emotions"].values()) == 2
    assert stats["non_ascii_rows"] >= 8
    assert pd.read_csv(out / "cleaning_report.csv")["step"].iloc[0] == "read"


def test_classification_notebook_trains_and_scores_valid_labels(series):
    out = series / "train" / "empathetic"
    metrics = json.loads((out / "classification_metrics.json").read_text(encoding="utf-8"))
    for stage in ("majority", "tfidf_logreg", "base", "tuned"):
        assert {"accuracy", "weighted_f1", "macro_f1", "weighted_precision", "macro_recall"} <= set(metrics[stage])
        assert len(metrics[stage]["confusion_matrix"]) == 32 and metrics[stage]["n"] == metrics["rows"]["test"]
    assert metrics["train_tokens"] > 0
    pred = pd.read_csv(out / "classification_predictions.csv")
    assert len(pred) == metrics["rows"]["test"] and pred["predicted"].isin(EMOTIONS_32).all()  # always a label
    assert pred["conv_id"].is_unique  # one row per conversation, named
    errors = pd.read_csv(out / "classification_errors.csv")
    assert list(errors.columns[:4]) == ["conv_id", "text", "gold", "predicted"]
    for png in ("ed_confusion", "ed_per_class_f1", "ed_confused_pairs"):
        assert (out / "figures" / f"{png}.png").stat().st_size > 5000
    # one conversation per emotion in the sample: every training row's label is new, so its loss need not fall
    # (tests/test_ed_real.py trains the read on repeated labels and checks it learns them)
    summary = json.loads((series / "ck" / "empathetic" / "emotion" / "train_summary.json").read_text())
    assert 0 < summary["train_loss_first"] < 20 and summary["global_step"] > 0
    assert lora_b_norm(series / "ck" / "empathetic" / "emotion" / "adapter") > 0


def test_generation_notebook_scores_before_and_after(series):
    out = series / "train" / "empathetic"
    metrics = json.loads((out / "generation_metrics.json").read_text(encoding="utf-8"))
    for stage in ("before", "after"):
        assert {"bleu", "rouge1", "rouge2", "rougeL", "perplexity"} <= set(metrics[stage])
    assert metrics["after"]["perplexity"] < metrics["before"]["perplexity"]  # trained on the same kind of replies
    assert lora_b_norm(series / "ck" / "empathetic" / "response" / "adapter") > 0
    samples = pd.read_csv(out / "generation_samples.csv")
    assert {"dialogue", "response", "before", "after"} <= set(samples.columns)
    sheet = pd.read_csv(out / "rating_sheet.csv", keep_default_na=False)
    assert list(sheet.columns) == list(rubric.SHEET_COLUMNS) and (sheet["empathy"] == "").all()
    assert sheet["model"].str.endswith("(before)").sum() == sheet["model"].str.endswith("(after)").sum() > 0
    human = pd.read_csv(out / "human_ratings_summary.csv")  # the filled sheet under RATINGS_PATH was read
    assert set(human["rater"]) == {"ana"} and human["mean"].between(3, 5).all()
    assert (out / "figures" / "ed_generation_before_after.png").is_file()


def test_every_run_is_logged_and_compared(series):
    runs = tracking.query_runs(series / "log.sqlite")
    kinds = runs["kind"].value_counts().to_dict()
    assert kinds == {"ed_classify_eval": 2, "ed_classify_train": 1, "ed_generate_eval": 2,
                     "ed_generate_train": 1, "ed_human_eval": 1}
    assert runs["data_sha256"].iloc[0] == file_sha256(SAMPLE_PATH)
    assert runs.loc[runs["kind"] == "ed_generate_eval", "param.STAGE"].tolist() == ["before", "after"]
    for metric in ("weighted_f1", "bleu", "perplexity"):
        assert (series / "train" / "figures" / f"experiments_{metric}.png").is_file()
