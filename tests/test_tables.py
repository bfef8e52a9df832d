"""What the pages show of records and scores: readable tables, generated sentences, no empty tables."""

from __future__ import annotations

import pandas as pd

from utils import tables
from utils.ecf import config, report
from utils.ecf.config import CauseInferenceConfig


def test_facts_show_counts_as_integers_and_shares_as_percentages():
    shown = tables.facts({"utterances": 3101, "train_tokens": 204144.0, "invalid_output_share": 0.0123,
                          "wall_s": 12.3456, "offsets": {"anger": 0.5, "fear": 2.0}, "log_history": [1]},
                         skip=("log_history",))
    assert list(shown.index) == ["utterances", "train_tokens", "invalid_output_share", "wall_s", "offsets"]
    assert shown["value"].tolist() == ["3,101", "204,144", "1.2%", "12.35", "anger 0.5, fear 2"]


def test_changed_parameters_list_only_what_differs_from_the_defaults():
    shown = tables.changed_parameters(config.EmotionInferenceConfig(MODEL="smollm2", TEST_LIMIT=5))
    assert list(shown.index) == ["MODEL", "TEST_LIMIT"]  # MODEL's default is "auto"
    assert shown.loc["TEST_LIMIT"].tolist() == ["5", "0"]


def _scores(f1: float) -> dict:
    return {"weighted_f1": f1, "f1_pair": f1}


def test_the_cause_verdict_is_generated_from_the_scores():
    scores = {**_scores(0.249), "cause_emotions": "predicted", "model_gold_emotions": _scores(0.66),
              "baselines": {"self_and_previous_predicted_emotions": _scores(0.253),
                            "self_and_previous_gold_emotions": _scores(0.650)}}
    said = report.cause_verdict(scores)
    assert "With gold emotions the cause model scores 0.660 pair weighted F1 against 0.650" in said
    assert "(+0.010): it beats the heuristic" in said
    assert "it scores 0.249 against 0.253 for self + previous on the same emotions (-0.004)" in said
    assert "cost the model 0.411 and the heuristic 0.397" in said
    rows = report.cause_systems(scores, "conversation")
    assert list(rows) == ["model (conversation), predicted emotions", "self + previous, predicted emotions",
                          "model (conversation), gold emotions", "self + previous, gold emotions"]
    worse = {**scores, "model_gold_emotions": _scores(0.60)}
    assert "does not beat the heuristic" in report.cause_verdict(worse)
    gold_only = {**_scores(0.66), "cause_emotions": "gold", "baselines": {"self_and_previous_gold_emotions": _scores(0.65)}}
    assert report.cause_verdict(gold_only).startswith("With gold emotions the cause model scores 0.660")
    assert "End to end" not in report.cause_verdict(gold_only)


def test_no_span_table_without_gold_spans():
    assert report.span_table({"scored": False, "span_source": "longest_clause rule"}) is None
    scores = {"weighted_strict_f1": 0.5, "weighted_proportional_f1": 0.7, "strict_f1": 0.5, "proportional_f1": 0.7,
              "span_source": "longest_clause rule", "baselines": {}}
    table = report.span_table(scores)
    assert isinstance(table, pd.DataFrame) and table.loc["model pairs, longest_clause rule spans", "strict_f1"] == 0.5


def test_the_gold_emotion_run_is_skipped_where_it_adds_nothing():
    from utils.ecf import predict

    assert predict.gold_emotion_run(CauseInferenceConfig(CAUSE_EMOTIONS="gold"), None, None, [], {}, "x") is None
    e2e = predict.CauseRule("end_to_end", [], 0.5, "self", "")
    bare = [{"conversation_ID": 1, "conversation": [{"utterance_ID": 1, "speaker": "A", "text": "x"}]}]
    assert predict.stage_wise_run(CauseInferenceConfig(), None, None, bare, bare, e2e, {}, "x") is None  # nothing to score
    gold = [{"conversation_ID": 1, "conversation": [{"utterance_ID": 1, "speaker": "A", "text": "x", "emotion": "joy"}]}]
    assert predict.stage_wise_run(CauseInferenceConfig(STAGE_WISE_RUN=False), None, None, gold, gold, e2e, {}, "x") is None
    stage = predict.CauseRule("stage_wise", [], 0.5, "none", "")
    assert predict.stage_wise_run(CauseInferenceConfig(), None, None, gold, gold, stage, {}, "x") is None
    assert predict.gold_emotion_run(CauseInferenceConfig(GOLD_EMOTION_RUN=False), None, None, [], {}, "x") is None
    unannotated = [{"conversation_ID": 1, "conversation": [{"utterance_ID": 1, "text": "hi", "speaker": "A"}]}]
    assert predict.gold_emotion_run(CauseInferenceConfig(), None, None, unannotated, {}, "x") is None


def test_the_end_to_end_rule_is_scored_beside_the_stage_wise_one():
    from utils.ecf import data

    gold = [data.with_pairs({"conversation_ID": 1, "conversation": [
        {"utterance_ID": k, "speaker": "A", "text": "x", "emotion": e} for k, e in ((1, "neutral"), (2, "joy"), (3, "anger"))]},
        [(2, "joy", 2), (3, "anger", 2)])]
    stage_inputs = [data.with_pairs(data.with_emotions(gold[0], ["neutral", "neutral", "anger"]), [])]
    e2e_inputs = [data.with_pairs(gold[0], [])]  # the shifted offsets found utterance 2's joy
    stage_pred = [data.with_pairs(stage_inputs[0], [(3, "anger", 2)])]
    e2e_pred = [data.with_pairs(e2e_inputs[0], [(2, "joy", 2), (3, "anger", 2)])]
    scores = report.cause_metrics(e2e_pred, e2e_inputs, gold, "predicted", {"decision_rule": "end_to_end"},
                                  stage_wise=(stage_pred, stage_inputs))
    assert scores["weighted_f1"] > scores["model_stage_wise"]["weighted_f1"] > 0
    assert scores["emotion_weighted_f1"] == 1.0 > scores["model_stage_wise"]["emotion_weighted_f1"]
    rows = report.cause_systems(scores, "conversation")
    assert list(rows) == ["model (conversation), predicted emotions (end-to-end rule)",
                          "self + previous, predicted emotions (end-to-end rule)",
                          "model (conversation), 03's emotions (stage-wise rule)", "self + previous, 03's emotions",
                          "self + previous, gold emotions"]
    said = report.cause_verdict(scores)
    assert "with the end-to-end rule (emotions and cut-offs chosen together on val)" in said
    assert (f"The stage-wise rule (03's emotions, cut-offs chosen on gold emotions) scores "
            f"{scores['model_stage_wise']['weighted_f1']:.3f}") in said
    assert "score 1.000 emotion weighted F1 against" in said
    stage_only = report.cause_metrics(stage_pred, stage_inputs, gold, "predicted", {"decision_rule": "stage_wise"})
    assert "model_stage_wise" not in stage_only and "stage-wise rule" not in report.cause_verdict(stage_only)
    assert list(report.cause_systems(stage_only, "conversation"))[0] == "model (conversation), predicted emotions"


def test_the_end_to_end_table_has_one_row_per_shift():
    rule = {"neutral_shift": -1.0, "fallback": "self", "table": [
        {"neutral_shift": s, "fallback": f, "weighted_f1": 0.3 + 0.01 * k, "emotion_weighted_f1": 0.48,
         "emotional_share": 0.4512} for k, (s, f) in enumerate((x, y) for x in (0.0, -1.0) for y in ("none", "self"))]}
    table = report.end_to_end_table(rule)
    assert [r["neutral shift"] for r in table] == [0.0, -1.0]
    assert table[1] == {"neutral shift": -1.0, "emotion weighted F1": 0.48, "emotional utterances": "45.1%",
                        "pair F1, fallback none": 0.32, "pair F1, fallback self": 0.33}
