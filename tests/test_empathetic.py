"""EmpatheticDialogues loader: both formats, cleaning steps with counts, non-ASCII text, malformed rows."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from utils import params, tracking
from utils.ed import config, data, evaluate

HEADER = ["situation", "emotion", "empathetic_dialogues", "labels"]


def write_kaggle(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def step(report: data.CleaningReport, name: str) -> dict:
    return next(s for s in report.steps if s["step"] == name)


def test_sample_covers_all_32_emotions_and_keeps_non_ascii():
    df, report = data.load_empathetic(data.SAMPLE_PATH)
    assert set(df["emotion"]) == set(data.EMOTIONS_32) and len(data.EMOTIONS_32) == 32
    assert len(df) == 64 and report.dropped == []
    bangla = df[df["emotion"] == "anxious"].iloc[0]
    assert bangla["dialogue"] == "কাল আমার পরীক্ষা, ঘুম আসছে না।"  # vowel signs and danda intact
    assert "我一开门" in df[df["emotion"] == "surprised"].iloc[0]["dialogue"]
    assert not df["dialogue"].str.contains("Customer :|Agent :").any()
    assert (df["text_length"] == df["dialogue"].str.len()).all()


def test_kaggle_markers_index_column_and_unnamed_columns(tmp_path):
    header = ["", "Situation", "emotion", "empathetic_dialogues", "labels", "Unnamed: 5"]
    path = write_kaggle(tmp_path / "k.csv", [
        ["0", "Lost my keys", "annoyed", "Customer :I lost my keys again\nAgent :", "Oh no!", ""],
        ["1", "Lost my keys", "annoyed", "Customer :Second time this week\nAgent :", "That is frustrating.", ""],
    ], header)
    df, _ = data.load_empathetic(path)
    assert list(df["dialogue"]) == ["I lost my keys again", "Second time this week"]
    assert df["conv_id"].nunique() == 1  # consecutive rows of one situation are one conversation


def test_original_release_format_groups_by_conversation(tmp_path):
    df, report = data.load_empathetic(data.ORIGINAL_SAMPLE_DIR)
    assert set(df["split"]) == {"train", "valid", "test"}
    assert step(report, "pair turns")["rows_before"] == 2 * len(df)
    first = df[df["conv_id"] == "hit:0_conv:0"]
    assert list(first["dialogue"])[1] == "It turned out to be the cat knocking over a plant, but my heart was racing."
    splits = data.split_by_conversation(df)
    assert len(splits["train"]) == (df["split"] == "train").sum() and len(splits["val"]) == 4
    # a single file, utterances out of order, an unanswered last utterance
    path = tmp_path / "train.csv"
    path.write_text("conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
                    "c1,2,sad,lost_comma_ sad,2,I am sorry.,,\n"
                    "c1,1,sad,lost_comma_ sad,1,My fish died_comma_ sadly.,,\n"
                    "c1,3,sad,lost_comma_ sad,1,Thanks.,,\n", encoding="utf-8")
    one, report = data.load_empathetic(path)
    assert one.loc[0, "dialogue"] == "My fish died, sadly." and one.loc[0, "response"] == "I am sorry."
    assert step(report, "pair turns")["changed"] == 1


@pytest.mark.parametrize("policy", ["mode", "drop"])
def test_missing_values_both_policies(tmp_path, policy):
    rows = [["s1", "sad", "Customer :a\nAgent :", "r1"], ["s2", "sad", "Customer :b\nAgent :", "r2"],
            ["s3", "", "Customer :c\nAgent :", "r3"], ["s4", "proud", "Customer :d\nAgent :", "   "]]
    df, report = data.load_empathetic(write_kaggle(tmp_path / "m.csv", rows), missing=policy)
    missing = step(report, "missing values")
    if policy == "mode":
        assert len(df) == 4 and missing["changed"] == 2
        assert df.loc[2, "emotion"] == "sad"  # the column's most frequent value
    else:
        assert list(df["dialogue"]) == ["a", "b"] and missing["changed"] == 2


def test_duplicates_lowercase_and_counts(tmp_path):
    rows = [["Lost", "sad", "Customer :Hello THERE\nAgent :", "Ok"],
            ["Lost", "sad", "Customer :Hello THERE\nAgent :", "Ok"],
            ["Lost", "sad", "Customer :hello there\nAgent :", "ok"],
            ["Ниже", "sad", "Customer :Привет\nAgent :", "ঠিক আছে"]]
    path = write_kaggle(tmp_path / "d.csv", rows)
    df, report = data.load_empathetic(path)
    assert step(report, "duplicates")["changed"] == 1 and len(df) == 3
    low, report = data.load_empathetic(path, lowercase=True)
    assert step(report, "duplicates")["changed"] == 2  # case-folded rows now match
    assert list(low["dialogue"]) == ["hello there", "привет"] and low.loc[1, "response"] == "ঠিক আছে"
    kept, _ = data.load_empathetic(path, drop_duplicates=False)
    assert len(kept) == 4


def test_malformed_rows_raise_with_file_row_column_or_are_counted(tmp_path):
    rows = [["ok", "sad", "Customer :fine\nAgent :", "r"], ["bad", "happyish", "Customer :x\nAgent :", "r"]]
    path = write_kaggle(tmp_path / "bad.csv", rows)
    with pytest.raises(data.EmpatheticDataError, match=r"bad\.csv, row 2, column 'emotion'.*happyish"):
        data.load_empathetic(path)
    df, report = data.load_empathetic(path, on_error="drop")
    assert len(df) == 1 and step(report, "unknown emotions")["changed"] == 1 and len(report.dropped) == 1

    spilled = tmp_path / "spill.csv"
    spilled.write_text("situation,emotion,empathetic_dialogues,labels\nA,sad,x,y\nB,sad,x,y,extra words\nC,sad\n",
                       encoding="utf-8")
    with pytest.raises(data.EmpatheticDataError, match=r"spill\.csv, row 2.*extra words"):
        data.load_empathetic(spilled)
    df, report = data.load_empathetic(spilled, on_error="drop")
    assert len(df) == 1 and step(report, "read")["changed"] == 2  # both bad rows counted, none silent

    original = tmp_path / "valid.csv"
    original.write_text("conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
                        "c1,one,sad,p,1,u,,\n", encoding="utf-8")
    with pytest.raises(data.EmpatheticDataError, match=r"valid\.csv, row 1, column 'utterance_idx'"):
        data.load_empathetic(original)


def test_header_without_required_columns_names_them(tmp_path):
    path = write_kaggle(tmp_path / "h.csv", [["a", "b"]], header=["text", "label"])
    with pytest.raises(data.EmpatheticDataError, match="situation"):
        data.load_empathetic(path)


def test_split_by_conversation_has_no_leak():
    df, _ = data.load_empathetic()
    splits = data.split_by_conversation(df, test_frac=0.25, val_frac=0.1, seed=1)
    ids = {name: set(part["conv_id"]) for name, part in splits.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"])
    assert sum(len(p) for p in splits.values()) == len(df)
    assert splits["test"].equals(data.split_by_conversation(df, 0.25, 0.1, seed=1)["test"])


def test_word_counts_keep_bangla_words():
    counts = data.word_counts(["আমার পরীক্ষা কাল", "the exam, my exam!"])
    assert counts["পরীক্ষা"] == 1 and counts["exam"] == 2 and "the" not in counts


def test_generation_config_finds_the_chat_adapter_and_demo_turns(tmp_path):
    cfg = config.EdGenerateConfig(CHECKPOINT_DIR=str(tmp_path / "ckpt"), CHAT_MESSAGES=" I won! | |Why me? ")
    assert cfg.chat_messages == ["I won!", "Why me?"]
    assert cfg.classifier_adapter() is None  # no 08 adapter yet: the base model labels the chat
    adapter = tmp_path / "ckpt" / "empathetic" / "emotion" / "adapter"
    adapter.mkdir(parents=True)
    assert cfg.classifier_adapter() is None  # a folder without weights does not count
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    assert cfg.classifier_adapter() == str(adapter)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes(b"x")
    assert config.EdGenerateConfig(CLASSIFIER_ADAPTER=str(other)).classifier_adapter() == str(other)

    replies = pd.DataFrame({"dialogue": ["d0", "d1", "d2"], "before": ["b0", "b1", "b2"], "after": ["a0", "a1", "a2"]})
    items = evaluate.rating_items(replies, "smollm2", 2)
    assert [i["id"] for i in items] == ["before-0", "before-1", "after-0", "after-1"]
    assert items[2] == {"id": "after-0", "model": "smollm2 (after)", "prompt": "d0", "response": "a0"}
    assert [i["id"] for i in evaluate.rating_items(replies.drop(columns="before"), "m", 5)] == ["after-0", "after-1", "after-2"]


@pytest.mark.parametrize("cls", [config.EdEdaConfig, config.EdClassifyConfig, config.EdGenerateConfig])
def test_every_parameter_has_help_and_the_smoke_limits_apply(cls):
    assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), "param(default, help) for every field"
    cfg = config.apply_smoke(params.build(cls, {"SMOKE": True}))
    assert cfg.ED_LIMIT == config.SMOKE_ROWS and config.apply_smoke(cls()) == cls()


def test_tracking_db_is_a_method_like_the_ecf_configs(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.DB_ENV, raising=False)
    cfg = config.EdClassifyConfig(TRAIN_DIR=str(tmp_path))
    assert cfg.tracking_db() == tmp_path / "experiments.sqlite"
    assert config.EdGenerateConfig(TRACKING_DB=str(tmp_path / "log.sqlite")).tracking_db() == tmp_path / "log.sqlite"


def test_fingerprint_changes_with_the_adapter_weights(tmp_path):
    base = evaluate.fingerprint("m", None)
    assert evaluate.fingerprint("m", tmp_path) == base  # a folder without weights is the base model
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    tuned = evaluate.fingerprint("m", tmp_path)
    assert tuned != base and len(tuned) == 12
    (tmp_path / "adapter_model.safetensors").write_bytes(b"other weights")
    assert evaluate.fingerprint("m", tmp_path) != tuned


def test_a_test_split_too_small_to_score_says_so_in_one_line(capsys):
    cfg = config.EdClassifyConfig()
    df = pd.DataFrame({"conv_id": [f"c{i}" for i in range(60)], "emotion": ["joy"] * 60})
    splits = config.splits_for(cfg, df)
    lines = capsys.readouterr().out.splitlines()
    n = len(splits["test"])
    assert len(lines) == 1 and lines[0].startswith(f"Only {n} test rows (one row moves accuracy by {100 / n:.0f} points")
    big = pd.DataFrame({"conv_id": [f"c{i}" for i in range(4000)], "emotion": ["joy"] * 4000})
    assert len(config.splits_for(cfg, big)["test"]) >= config.MIN_TEST_ROWS and capsys.readouterr().out == ""
