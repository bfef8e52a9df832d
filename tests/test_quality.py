"""bench.quality: a stage trained with the notebooks' code, every checkpoint scored, rules chosen on val."""

from __future__ import annotations

import json

import pytest

from bench import quality


@pytest.mark.slow
def test_emotion_then_cause_runs_score_every_checkpoint(tiny_model_dir, tmp_path, capsys):
    emo, cause = tmp_path / "emotion", tmp_path / "cause"
    common = ["--model", str(tiny_model_dir), "--max-steps", "2", "--save-steps", "1", "--lr", "1e-2"]
    assert quality.main(["emotion", "--out", str(emo), *common]) == 0
    info = json.loads((emo / "quality.json").read_text(encoding="utf-8"))
    rows = info["checkpoints"]
    assert [r["checkpoint"] for r in rows] == ["checkpoint-1", "checkpoint-2"]
    assert 0 < rows[0]["tokens"] < rows[1]["tokens"]  # the learning curve's x axis
    for row in rows:
        rules = row["rules"]
        assert set(rules) == {"argmax", "offsets_weighted_f1", "offsets_macro_f1"}
        # offsets are chosen on val: there they can only match or beat the plain argmax
        assert rules["offsets_weighted_f1"]["val"]["weighted_f1"] >= rules["argmax"]["val"]["weighted_f1"]
        assert sum(rules["argmax"]["test_pred_share"].values()) == pytest.approx(1.0)
    assert (emo / "scores" / "checkpoint-2" / "logprobs.json").is_file()
    # the run's ckpt folder is what notebook 02 leaves: its adapter and the rule 02 chooses on val
    task = json.loads((emo / "ckpt" / "emotion" / "conversation" / "task.json").read_text(encoding="utf-8"))
    assert task["offsets"] == rows[-1]["rules"]["offsets_weighted_f1"]["offsets"]
    assert task["train_tokens"] == rows[-1]["tokens"] and task["model"] == str(tiny_model_dir)
    assert task["quality_run"]["args"]["out"] == "emotion"  # no machine path in a record pages show

    assert quality.main(["cause", "--out", str(cause), "--emotions-from", str(emo), *common]) == 0
    info = json.loads((cause / "quality.json").read_text(encoding="utf-8"))
    last = info["checkpoints"][-1]["rules"]
    assert set(last) == {"one", "per_distance"}
    assert set(last["per_distance"]["cutoffs"]) == {"0", "-1", "-2", "other"}
    assert {"test_gold", "test_predicted", "val"} <= set(last["one"])
    assert last["per_distance"]["val"]["weighted_f1"] >= last["one"]["val"]["weighted_f1"]  # starts from it
    assert {"self_and_previous_gold", "self_and_previous_predicted"} <= set(info["baselines"])
    task_file = cause / "ckpt" / "cause" / "conversation" / "task.json"
    task = json.loads(task_file.read_text(encoding="utf-8"))
    assert task["threshold"] == last["per_distance"]["cutoffs"] and task["cause_layout"] == "inline"
    # the saved P(yes) rescored against another annotation of the same conversations: here the same one
    from utils.ecf import artifacts

    splits = artifacts.load_splits(quality._config(quality._args(["cause", "--out", str(cause), *common]), "cause"))
    same = tmp_path / "test_gold.json"
    same.write_text(json.dumps(splits["test"]), encoding="utf-8")
    again = quality.rescore(cause, str(same))
    assert again["checkpoints"][-1]["per_distance"]["test_gold"] == pytest.approx(last["per_distance"]["test_gold"]["weighted_f1"])
    assert again["baselines"]["self_and_previous_gold"] == pytest.approx(info["baselines"]["self_and_previous_gold"]["weighted_f1"])
    same.write_text(json.dumps(splits["test"][1:]), encoding="utf-8")
    with pytest.raises(ValueError, match="not the conversations of"):
        quality.rescore(cause, str(same))
    task_file.unlink()  # a run scored before the record existed gets it from `export`
    assert quality.main(["export", str(cause)]) == 0
    assert json.loads(task_file.read_text(encoding="utf-8"))["threshold"] == task["threshold"]

    # Subtask 1: span reads trained alone, scored on the gold pairs and end to end on the cause run's pairs
    spans = tmp_path / "spans"
    assert quality.main(["spans", "--out", str(spans), "--pairs-from", str(cause), *common]) == 0
    info = json.loads((spans / "quality.json").read_text(encoding="utf-8"))
    assert [r["checkpoint"] for r in info["checkpoints"]] == ["checkpoint-1", "checkpoint-2"]
    assert set(info["rules"]) == {"gold_pairs", "end_to_end"} and info["val_rule"] in info["rules"]["gold_pairs"]
    for scores in [*(r[n] for r in info["checkpoints"] for n in info["rules"]),
                   *(v for by_rule in info["rules"].values() for v in by_rule.values())]:
        assert set(scores) == set(quality.SPAN_SCORES) and all(0 <= v <= 1 for v in scores.values())
    # with the gold pairs, the whole utterance holds every gold span: proportional credit where strict has none
    whole = info["rules"]["gold_pairs"]["whole"]
    assert whole["weighted_proportional_f1"] > whole["weighted_strict_f1"]
    assert info["rules"]["gold_pairs"][info["val_rule"]]["weighted_strict_f1"] > whole["weighted_strict_f1"]
    no_spans = tmp_path / "no_spans.json"
    no_spans.write_text(json.dumps([{**{k: v for k, v in c.items() if k != "cause_spans"}, "conversation_ID": 1000 + k}
                                    for k, c in enumerate(splits["test"])]), encoding="utf-8")  # ids apart from training
    with pytest.raises(ValueError, match=r"no_spans\.json: its test conversations carry no cause spans"):
        quality.main(["spans", "--out", str(tmp_path / "none"), "--test-path", str(no_spans), *common])
    with pytest.raises(ValueError, match="--pairs-from takes a finished cause run"):
        quality.main(["spans", "--out", str(tmp_path / "none"), "--pairs-from", str(emo), *common])

    capsys.readouterr()
    assert quality.main(["report", str(emo), str(cause), str(spans)]) == 0
    table = capsys.readouterr().out
    assert "| emotion | " in table and "| majority class |" in table and "self_and_previous_gold" in table
    assert "| spans | " in table and " (val) | " in table


@pytest.mark.slow
def test_a_cause_run_trains_on_the_emotion_runs_train_labels(tiny_model_dir, tmp_path, monkeypatch):
    emo, cause = tmp_path / "emotion", tmp_path / "cause"
    common = ["--model", str(tiny_model_dir), "--max-steps", "2", "--save-steps", "1", "--lr", "1e-2"]
    assert quality.main(["emotion", "--out", str(emo), "--emotion-format", "marked", *common]) == 0
    with pytest.raises(ValueError, match="did not label the train split.*--eval-only --label-train"):
        quality.main(["cause", "--out", str(cause), "--emotions-from", str(emo), "--cause-emotions", "predicted",
                      *common])
    assert quality.main(["emotion", "--out", str(emo), "--emotion-format", "marked", "--eval-only", "--label-train",
                         *common]) == 0
    task = json.loads((emo / "ckpt" / "emotion" / "conversation" / "task.json").read_text(encoding="utf-8"))
    assert task["emotion_format"] == "marked"
    splits = quality.artifacts.load_splits(quality._config(quality._args(["emotion", "--out", str(emo), *common]),
                                                            "emotion"))
    first, last = ((json.loads((emo / "scores" / c / "logprobs.json").read_text(encoding="utf-8")))
                   for c in ("checkpoint-1", "checkpoint-2"))
    assert set(first) == {"val", "test"} and set(last) == {"val", "test", "train"}  # the last checkpoint only
    assert [len(rows) for rows in last["train"]] == [len(c["conversation"]) for c in splits["train"]]
    labelled = quality.best_emotion_predictions(emo, "train")
    assert [c["conversation_ID"] for c in labelled] == [c["conversation_ID"] for c in splits["train"]]
    assert quality.main(["cause", "--out", str(cause), "--emotions-from", str(emo), "--cause-emotions", "predicted",
                         *common]) == 0
    info = json.loads((cause / "quality.json").read_text(encoding="utf-8"))
    assert info["args"]["cause_emotions"] == "predicted" and len(info["checkpoints"]) == 2
