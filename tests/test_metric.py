"""The official pair metrics on hand-computed cases, malformed predictions, emotion metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from utils.ecf import baselines, data, metric
from utils.env import ROOT


def conv(cid, pairs, n=5):
    return {"conversation_ID": cid,
            "conversation": [{"utterance_ID": i, "text": f"u{i} word word", "speaker": "A"} for i in range(1, n + 1)],
            "emotion-cause_pairs": [list(p) for p in pairs]}


GOLD = [conv(1, [("2_joy", "1"), ("2_joy", "2"), ("4_anger", "3")]), conv(2, [("1_sadness", "1")])]


def test_hand_computed_subtask2():
    pred = [conv(1, [("2_joy", "1"), ("2_joy", "3"), ("4_sadness", "3"), ("1_neutral", "1"), ("2_joy", "1")]),
            conv(2, []), conv(3, [("1_joy", "1")])]  # conversation 3 is not in gold: ignored
    s = metric.score_subtask2(pred, GOLD)
    # joy: 1 correct of 2 predicted, 2 annotated; anger 0/0/1; sadness 0/1/1; weights 2/4, 1/4, 1/4.
    assert s["weighted_precision"] == pytest.approx(0.25, abs=1e-6)
    assert s["weighted_recall"] == pytest.approx(0.25, abs=1e-6)
    assert s["weighted_f1"] == pytest.approx(0.25, abs=1e-6)
    # micro over six emotions: 1 correct, 3 predicted (neutral excluded, duplicate once), 4 annotated.
    assert s["precision_pair"] == pytest.approx(1 / 3, abs=1e-6)
    assert s["recall_pair"] == pytest.approx(1 / 4, abs=1e-6)
    assert s["f1_pair"] == pytest.approx(2 / 7, abs=1e-6)
    assert s["per_emotion"]["joy"]["predicted"] == 2 and s["per_emotion"]["sadness"]["correct"] == 0


def test_perfect_prediction_scores_one_and_empty_scores_zero():
    perfect = metric.score_subtask2(GOLD, GOLD)
    assert all(perfect[k] == pytest.approx(1, abs=1e-6) for k in ("weighted_f1", "f1_pair", "weighted_precision"))
    empty = metric.score_subtask2([conv(1, []), conv(2, [])], GOLD)
    assert all(empty[k] == 0 for k in ("weighted_f1", "f1_pair", "precision_pair", "recall_pair"))


def test_neutral_pairs_are_ignored_in_the_weighted_score():
    base = [conv(1, [("2_joy", "1")]), conv(2, [])]
    noisy = [conv(1, [("2_joy", "1"), ("3_neutral", "1"), ("5_neutral", "2")]), conv(2, [("1_neutral", "1")])]
    assert metric.score_subtask2(noisy, GOLD) == metric.score_subtask2(base, GOLD) | {"n_pred_pairs": 4}


@pytest.mark.parametrize("pred, message", [
    ([conv(1, [])], "conversation_ID=2 is missing"),
    ([conv(1, [["2_joy", "1", "x"]]), conv(2, [])], "not a two-element list"),
    ([conv(1, [["2_happy", "1"]]), conv(2, [])], "unknown emotion 'happy'"),
    ([conv(1, [["2_joy", "one"]]), conv(2, [])], "is not an utterance id"),
    ([conv(1, []), conv(1, []), conv(2, [])], "conversation_ID=1 appears twice"),
    ([{"conversation_ID": 1}, conv(2, [])], "has no 'emotion-cause_pairs'"),
])
def test_malformed_subtask2_predictions_are_rejected(pred, message):
    with pytest.raises(metric.ScoreError, match=message):
        metric.score_subtask2(pred, GOLD)


def span_conv(cid, pairs, texts):
    return {"conversation_ID": cid,
            "conversation": [{"utterance_ID": i, "text": t, "speaker": "A"} for i, t in enumerate(texts, 1)],
            "emotion-cause_pairs": [list(p) for p in pairs]}


TEXTS = ["You made up ! I am so happy for you .", "Oh , thanks ! We talked all night .", "Great ."]


def test_span_cleaning_and_position():
    assert metric.clean_span("  ( You made up ! )  ") == "You made up"
    assert metric.clean_span("...") == ""
    assert metric.span_position("made up", TEXTS[0]) == (1, 3)
    assert metric.span_position("not there", TEXTS[0]) == (0, 0)


def test_hand_computed_subtask1():
    gold = [span_conv(1, [("2_joy", "1_You made up !"), ("2_joy", "2_We talked all night ."),
                          ("3_joy", "1_I am so happy for you")], TEXTS)]
    # gold tuples: (2,1,[0,3)), (2,2,[3,7)), (3,1,[4,10)); all joy.
    pred = [span_conv(1, [("2_joy", "1_0_3"), ("2_joy", "2_4_6"), ("3_joy", "1_4_8"), ("3_sadness", "1_4_10")], TEXTS)]
    s = metric.score_subtask1(pred, gold)
    # strict: 1 of 3 joy predictions exact; 1 sadness false positive; joy is the only gold emotion.
    assert s["weighted_strict_precision"] == pytest.approx(1 / 3, abs=1e-6)
    assert s["weighted_strict_recall"] == pytest.approx(1 / 3, abs=1e-6)
    assert s["strict_precision"] == pytest.approx(1 / 4, abs=1e-6)
    # proportional joy: predicted tokens 3+2+4 = 9, overlap 3+2+4 = 9, gold tokens 3+4+6 = 13.
    assert s["weighted_proportional_precision"] == pytest.approx(1.0, abs=1e-6)
    assert s["weighted_proportional_recall"] == pytest.approx(9 / 13, abs=1e-6)
    assert s["proportional_precision"] == pytest.approx(9 / 15, abs=1e-6)  # + 6 sadness tokens predicted
    assert s["weighted_Proportional_f1"] == s["weighted_proportional_f1"]


def test_subtask1_rejects_text_instead_of_indices():
    gold = [span_conv(1, [("2_joy", "1_You made up !")], TEXTS)]
    with pytest.raises(metric.ScoreError, match="not the text itself"):
        metric.score_subtask1([span_conv(1, [("2_joy", "1_You made up")], TEXTS)], gold)
    with pytest.raises(metric.ScoreError, match="'<utterance>_<start>_<end>'"):
        metric.score_subtask1([span_conv(1, [("2_joy", "1_0")], TEXTS)], gold)


def test_baseline_heuristic_scores_its_own_pairs_perfectly():
    convs = data.load_ecf(data.SAMPLE_PATH)
    heuristic = baselines.self_and_previous_causes(convs)
    s = metric.score_subtask2(heuristic, heuristic)
    assert s["weighted_f1"] == pytest.approx(1, abs=1e-6)
    real = metric.score_subtask2(heuristic, convs)
    assert 0.3 < real["weighted_f1"] < 1  # the sample has causes at distance 2 and ahead: not all found


def test_majority_baseline_and_emotion_scores():
    convs = data.load_ecf(data.SAMPLE_PATH)
    pred = baselines.majority_emotion(convs, convs)
    label = baselines.majority_label(convs)
    assert {u["emotion"] for c in pred for u in c["conversation"]} == {label}
    s = metric.emotion_scores_convs(pred, convs)
    gold = data.emotions_of(convs)
    assert s["accuracy"] == pytest.approx(gold.count(label) / len(gold))
    assert sum(map(sum, s["confusion_matrix"])) == len(gold)
    assert s["report"][label]["recall"] == 1.0 and 0 < s["weighted_f1"] < s["accuracy"]


def test_score_cli_prints_official_names(tmp_path):
    pred, gold = tmp_path / "Subtask_2_pred.json", tmp_path / "gold.json"
    pred.write_text(json.dumps(GOLD[:1]))
    gold.write_text(json.dumps(GOLD))
    res = subprocess.run([sys.executable, "-m", "utils.ecf.score", "--subtask", "2", "--pred", str(pred),
                          "--gold", str(gold)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "conversation_ID=2 is missing" in res.stderr
    pred.write_text(json.dumps(GOLD))
    res = subprocess.run([sys.executable, "-m", "utils.ecf.score", "--subtask", "2", "--pred", str(pred),
                          "--gold", str(gold)], cwd=ROOT, capture_output=True, text=True)
    out = json.loads(res.stdout)
    assert {"precision_pair", "recall_pair", "f1_pair", "weighted_precision", "weighted_recall",
            "weighted_f1"} <= set(out)
    assert out["weighted_f1"] == pytest.approx(1, abs=1e-6) and "joy" in out["per_emotion"]
