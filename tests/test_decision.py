"""Decision rules chosen on val: emotion offsets and cause cut-offs (utils.ecf.decision)."""

from __future__ import annotations

import numpy as np
import pytest

from utils.ecf import config, data, decision, predict, prompts
from utils.ecf.data import EMOTIONS


def _skewed(n: int = 400, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Log-probs of a model that knows the label but over-calls neutral by a margin of 1.5 nats."""
    rng = np.random.default_rng(seed)
    gold = [EMOTIONS[k] for k in rng.integers(0, len(EMOTIONS), n)]
    scores = rng.normal(0, 0.3, (n, len(EMOTIONS)))
    for row, label in zip(scores, gold):
        row[EMOTIONS.index(label)] += 1.0
    scores[:, 0] += 1.5  # the prior: neutral wins unless the evidence is strong
    return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True)), gold


def test_decide_adds_offsets_before_the_argmax():
    lp = np.log(np.array([[0.5, 0.3, 0.2, 0, 0, 0, 0], [0.1, 0.8, 0.1, 0, 0, 0, 0]]) + 1e-9)
    assert decision.decide(lp) == ["neutral", "anger"]
    offsets = decision.offsets_vector({"anger": 1.0})
    assert decision.decide(lp, offsets) == ["anger", "anger"]
    with pytest.raises(ValueError, match="unknown labels \\['joyful'\\]"):
        decision.offsets_vector({"joyful": 1.0})
    assert decision.offsets_vector(None) is None


@pytest.mark.parametrize("objective", decision.OBJECTIVES)
def test_tuned_offsets_undo_a_label_prior(objective):
    lp, gold = _skewed()
    tuning = decision.tune_offsets(lp, gold, objective)
    assert tuning["offsets"]["neutral"] == 0.0
    assert all(tuning["offsets"][e] > 0 for e in EMOTIONS[1:])  # every emotion pushed up against neutral
    assert tuning["val_after"] > tuning["val_before"] + 0.1
    # the offsets carry over to fresh data from the same model: they fix the prior, not the sample
    test_lp, test_gold = _skewed(seed=1)
    from sklearn.metrics import f1_score

    avg = objective.split("_")[0]
    before = f1_score(test_gold, decision.decide(test_lp), average=avg)
    after = f1_score(test_gold, decision.decide(test_lp, decision.offsets_vector(tuning["offsets"])), average=avg)
    assert after > before + 0.1


def test_tune_offsets_keeps_zero_when_nothing_helps_and_checks_shapes():
    gold = list(EMOTIONS) * 3
    lp = np.log(np.eye(len(EMOTIONS))[[EMOTIONS.index(g) for g in gold]] * 0.9 + 0.1 / 7)  # already perfect
    tuning = decision.tune_offsets(lp, gold)
    assert tuning["offsets"] == dict.fromkeys(EMOTIONS, 0.0) and tuning["val_after"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        decision.tune_offsets(lp[:3], gold)
    with pytest.raises(ValueError, match="objective"):
        decision.tune_offsets(lp, gold, "accuracy")


def test_per_distance_cutoffs_and_the_pairs_they_keep():
    assert [decision.distance_bucket(5, j) for j in (5, 4, 3, 2, 6)] == ["0", "-1", "-2", "other", "other"]
    assert decision.cutoff_for(0.4, 5, 1) == 0.4
    assert decision.cutoff_for({"0": 0.1, "-1": 0.2, "-2": 0.3, "other": 0.9}, 5, 6) == 0.9
    conv = data.with_pairs({"conversation_ID": 1, "conversation": [
        {"utterance_ID": k, "speaker": "A", "text": "x", "emotion": "joy" if k == 3 else "neutral"} for k in (1, 2, 3, 4)]},
        [])
    probs = [[3, 3, 0.3], [3, 2, 0.3], [3, 1, 0.3], [3, 4, 0.3]]
    assert decision.pairs_above(conv, probs, 0.5) == []
    kept = decision.pairs_above(conv, probs, {"0": 0.2, "-1": 0.2, "-2": 0.5, "other": 0.5})
    assert kept == [(3, "joy", 3), (3, "joy", 2)]


def test_tune_cutoffs_finds_each_buckets_best_value():
    target = {"0": 0.1, "-1": 0.3, "-2": 0.6, "other": 0.9}

    def score(cut):  # peaks exactly at target, one bucket at a time
        return -sum(abs(cut[k] - v) for k, v in target.items())

    assert decision.tune_cutoffs(score, 0.5) == pytest.approx(target)
    flat = decision.tune_cutoffs(lambda cut: 1.0, 0.45)  # nothing helps: nothing moves
    assert flat == dict.fromkeys(decision.CUTOFF_BUCKETS, 0.45)


def test_inference_takes_the_recorded_rules_unless_told_not_to():
    import dataclasses

    cause_cfg = config.CauseInferenceConfig(CAUSE_THRESHOLD=0.7)
    per = {"0": 0.1, "-1": 0.3, "-2": 0.6, "other": 0.9}
    assert predict.cause_threshold(cause_cfg, {"threshold": per}) == per
    assert predict.cause_threshold(dataclasses.replace(cause_cfg, USE_VAL_THRESHOLD=False), {"threshold": per}) == 0.7
    emo_cfg = config.EmotionInferenceConfig()
    assert predict.emotion_offsets(emo_cfg, {"offsets": {"joy": 1.0}}) == {"joy": 1.0}
    assert predict.emotion_offsets(emo_cfg, {}) is None
    assert predict.emotion_offsets(dataclasses.replace(emo_cfg, USE_VAL_OFFSETS=False), {"offsets": {"joy": 1.0}}) is None
    with pytest.raises(ValueError, match="CAUSE_CUTOFFS='both'"):
        config.CauseFinetuneConfig(CAUSE_CUTOFFS="both")
    with pytest.raises(ValueError, match="SPLIT='episodes'"):
        config.SeriesConfig(SPLIT="episodes")


# ---------------------------------------------------------------- the end-to-end rule

def _conv(cid: int, emotions: list[str], pairs: list[tuple[int, int]]) -> dict:
    utts = [{"utterance_ID": k + 1, "speaker": "AB"[k % 2], "text": f"words {k}", "emotion": e}
            for k, e in enumerate(emotions)]
    conv = {"conversation_ID": cid, "conversation": utts}
    return data.with_pairs(conv, [(i, emotions[i - 1], j) for i, j in pairs])


def _hesitant_logprobs(convs: list[dict], margin: float) -> dict:
    """Log-probs that know every label but put neutral ``margin`` nats above each emotional utterance's
    emotion: the emotion stage's argmax calls every one of them neutral."""
    out = {}
    for conv in convs:
        rows = []
        for utt in conv["conversation"]:
            row = np.full(len(EMOTIONS), -6.0)
            row[EMOTIONS.index(utt["emotion"])] = -1.0
            if utt["emotion"] != "neutral":
                row[0] = -1.0 + margin
            rows.append(row.tolist())
        out[conv["conversation_ID"]] = rows
    return out


def _oracle_cause_probs(gold: list[dict]):
    """cause_probs for choose_end_to_end: every emotional utterance of the conversations it is given asks its
    window; P(yes) is 0.9 for a gold pair and 0.1 otherwise (a perfect cause model), and the calls are counted."""
    truth = {c["conversation_ID"]: {tuple(map(int, (e.split("_")[0], j))) for e, j in c["emotion-cause_pairs"]}
             for c in gold}
    calls = []

    def probs(labelled: list[dict]) -> list[list]:
        calls.append(labelled)
        out = []
        for conv in labelled:
            for i, _ in prompts.emotional_utterances(conv):
                for j in prompts.cause_candidates(i, len(conv["conversation"])):
                    out.append([conv["conversation_ID"], i, j, 0.9 if (i, j) in truth[conv["conversation_ID"]] else 0.1])
        return out
    return probs, calls


def test_the_end_to_end_rule_reads_more_emotions_when_the_emotion_stage_hesitates():
    gold = [_conv(k, ["neutral", "joy", "neutral", "anger", "sadness"], [(2, 1), (4, 4), (5, 4)]) for k in range(6)]
    logprobs = _hesitant_logprobs(gold, margin=0.8)  # every emotional utterance read neutral at shift 0
    cause_probs, calls = _oracle_cause_probs(gold)
    rule = decision.choose_end_to_end(gold, logprobs, None, cause_probs, shifts=(0.0, -0.5, -1.0),
                                      stage_cutoffs=0.5)
    assert len(calls) == 3  # one cause pass per shift, the fallbacks and cut-offs are rescoring
    assert len(rule["table"]) == 3 * len(decision.FALLBACKS)
    assert rule["neutral_shift"] == -1.0  # the only shift that makes the emotional utterances emotional
    assert rule["offsets"]["neutral"] == -1.0 and rule["offsets"]["joy"] == 0.0
    assert rule["weighted_f1"] == pytest.approx(1.0, abs=1e-6)
    assert rule["emotion_weighted_f1"] == pytest.approx(1.0)
    assert rule["stage_wise"]["weighted_f1"] == pytest.approx(0.0) and rule["stage_wise"]["emotion_weighted_f1"] < 0.5
    assert rule["fallback"] == "none"  # ties go to no fallback
    shift_0 = [r for r in rule["table"] if r["neutral_shift"] == 0.0]
    assert {r["emotional_share"] for r in shift_0} == {0.0}


def test_the_end_to_end_rule_keeps_the_stage_emotions_when_they_are_right():
    gold = [_conv(k, ["neutral", "joy", "neutral", "anger"], [(2, 2), (4, 3)]) for k in range(5)]
    logprobs = _hesitant_logprobs(gold, margin=-2.0)  # confident and right: shifting only adds false emotions
    cause_probs, _ = _oracle_cause_probs(gold)
    rule = decision.choose_end_to_end(gold, logprobs, None, cause_probs, shifts=(0.5, 0.0, -3.0, -6.0))
    assert rule["neutral_shift"] == 0.0 and rule["weighted_f1"] == pytest.approx(1.0, abs=1e-6)
    assert rule["stage_wise"] is None  # no stage cut-offs given


def test_fallback_pairs_go_only_to_emotional_utterances_left_with_none():
    conv = _conv(1, ["neutral", "joy", "anger", "neutral"], [(3, 2)])  # 3 has a pair, 2 has none
    assert decision.with_fallback([conv], "none") == [conv]
    self_only = decision.with_fallback([conv], "self")[0]["emotion-cause_pairs"]
    assert self_only == [["3_anger", "2"], ["2_joy", "2"]]
    both = decision.with_fallback([conv], "self_previous")[0]["emotion-cause_pairs"]
    assert both == [["3_anger", "2"], ["2_joy", "2"], ["2_joy", "1"]]
    first = _conv(2, ["surprise", "neutral"], [])
    assert decision.with_fallback([first], "self_previous")[0]["emotion-cause_pairs"] == [["1_surprise", "1"]]
    with pytest.raises(ValueError, match="fallback 'all'"):
        decision.with_fallback([conv], "all")


def test_relabel_decides_again_and_names_the_conversation_it_cannot():
    conv = _conv(7, ["neutral", "joy"], [])
    lp = {7: [[-0.1] + [-5.0] * 6, [-0.5, -5.0, -5.0, -5.0, -0.9, -5.0, -5.0]]}  # joy 0.4 nats below neutral
    assert [u["emotion"] for u in decision.relabel([conv], lp, None)[0]["conversation"]] == ["neutral", "neutral"]
    shifted = decision.relabel([conv], lp, decision.shifted({"joy": 0.1}, -0.5))
    assert [u["emotion"] for u in shifted[0]["conversation"]] == ["neutral", "joy"]
    with pytest.raises(ValueError, match="conversation 7: 1 rows of emotion log-probs for 2 utterances"):
        decision.relabel([conv], {7: lp[7][:1]}, None)
    with pytest.raises(ValueError, match="conversation 7: none"):
        decision.relabel([conv], {}, None)


def test_notebook_05_takes_the_end_to_end_rule_only_where_it_applies():
    import dataclasses

    conv = data.with_pairs(_conv(3, ["neutral", "neutral"], []), [])
    lp = {3: [[-0.1] + [-5.0] * 6, [-0.5, -5.0, -5.0, -5.0, -0.9, -5.0, -5.0]]}
    e2e = {"neutral_shift": -1.0, "offsets": decision.shifted(None, -1.0), "threshold": {"0": 0.2, "-1": 0.4,
           "-2": 0.6, "other": 0.9}, "fallback": "self", "weighted_f1": 0.31, "stage_wise": {"weighted_f1": 0.25}}
    task = {"threshold": 0.45, "end_to_end": e2e}
    cfg = config.CauseInferenceConfig()
    rule = predict.cause_rule(cfg, task, [conv], lp)
    assert rule.name == "end_to_end" and rule.fallback == "self" and rule.threshold == e2e["threshold"]
    assert [u["emotion"] for u in rule.inputs[0]["conversation"]] == ["neutral", "joy"]
    assert "0.3100 against 0.2500 stage-wise" in rule.note
    for changes, why in (({"DECISION_RULE": "stage_wise"}, "DECISION_RULE"), ({"CAUSE_EMOTIONS": "gold"}, "gold"),
                         ({"USE_VAL_THRESHOLD": False}, "USE_VAL_THRESHOLD")):
        other = predict.cause_rule(dataclasses.replace(cfg, **changes), task, [conv], lp)
        assert other.name == "stage_wise" and why in other.note and other.fallback == "none"
        assert other.inputs == [conv]
    assert predict.cause_rule(cfg, {"threshold": 0.45}, [conv], lp).threshold == 0.45
    assert "log-probs" in predict.cause_rule(cfg, task, [conv], None).note
    with pytest.raises(ValueError, match="DECISION_RULE='best'"):
        config.CauseInferenceConfig(DECISION_RULE="best")


def _val(conversations: int, utterances: int = 10, pairs: int = 3) -> list[dict]:
    """``conversations`` val conversations of ``utterances`` each, with ``pairs`` gold pairs each."""
    return [{"conversation_ID": c, "conversation": [{"utterance_ID": k, "speaker": "A", "text": "x", "emotion": "joy"}
                                                    for k in range(1, utterances + 1)],
             "emotion-cause_pairs": [[f"{k}_joy", str(k)] for k in range(1, pairs + 1)]} for c in range(conversations)]


def test_rules_are_chosen_only_on_a_val_split_big_enough_to_carry_them():
    small, big = _val(3), _val(40)
    assert "3 conversations, 30 utterances (the floor for offsets: 300)" in decision.below_floor(small, "offsets")
    assert "9 gold pairs (the floor for cut-offs: 100)" in decision.below_floor(small, "cut-offs")
    both = decision.below_floor(small, "the end-to-end rule")
    assert "30 utterances" in both and "9 gold pairs" in both
    assert decision.below_floor(big, "offsets") is None and decision.below_floor(big, "the end-to-end rule") is None
    assert "(the floor for cut-offs: 100)" in decision.below_floor(_val(40, pairs=2), "cut-offs")  # 80 pairs


def test_notebooks_02_and_04_keep_the_defaults_below_the_floor_and_record_why(tmp_path, capsys):
    """Below the floor no model is even loaded: 02 records no offsets (03 takes the argmax), 04 no cut-offs and no
    end-to-end rule (05 takes 0.5 and the stage-wise rule); each says so in a line. SMOKE runs the code anyway."""
    import json

    from utils.ecf import finetune

    for task, cls in (("emotion", config.FinetuneConfig), ("cause", config.CauseFinetuneConfig)):
        folder = tmp_path / task / "conversation"
        folder.mkdir(parents=True)
        (folder / "task.json").write_text(json.dumps({"task": task}))
        cfg = cls(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path))
        assert finetune.tune_rule(cfg, task, None, _val(3)) is None
        record = json.loads((folder / "task.json").read_text())
        assert "offsets" not in record and "threshold" not in record and "end_to_end" not in record
        skipped = record["offset_tuning" if task == "emotion" else "threshold_tuning"]["skipped"]
        assert skipped.startswith("the val split has 3 conversations")
    said = capsys.readouterr().out
    assert "no offsets chosen: the val split has 3 conversations, 30 utterances (the floor for offsets: 300)" in said
    assert "no cut-offs chosen" in said and "stage-wise rule" in said
    smoke = config.FinetuneConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path), SMOKE=True)
    assert finetune.too_small(smoke, _val(3), "offsets", "") is None
    assert "SMOKE: offsets chosen anyway" in capsys.readouterr().out


def test_notebook_05_leaves_an_end_to_end_rule_chosen_for_another_emotion_adapter(tmp_path):
    """02 retrained alone: 04's rule holds the previous emotion adapter's offsets; 05 says so and goes stage-wise."""
    import json

    (tmp_path / "emotion" / "conversation").mkdir(parents=True)
    (tmp_path / "emotion" / "conversation" / "task.json").write_text(json.dumps({"fingerprint": "new1"}))
    conv = data.with_pairs(_conv(3, ["neutral", "joy"], []), [])
    lp = {3: [[-0.1] + [-5.0] * 6, [-0.5, -5.0, -5.0, -5.0, -0.9, -5.0, -5.0]]}
    e2e = {"neutral_shift": -1.0, "offsets": decision.shifted(None, -1.0), "threshold": 0.2, "fallback": "self",
           "weighted_f1": 0.31, "emotion_fingerprint": "old1"}
    cfg = config.CauseInferenceConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path))
    rule = predict.cause_rule(cfg, {"threshold": 0.45, "end_to_end": e2e}, [conv], lp)
    assert rule.name == "stage_wise" and rule.threshold == 0.45 and rule.fallback == "none"
    assert "chose its end-to-end rule for the emotion adapter old1, not this one (new1)" in rule.note
    assert "rerun notebook 04" in rule.note
    same = predict.cause_rule(cfg, {"threshold": 0.45, "end_to_end": {**e2e, "emotion_fingerprint": "new1"}}, [conv], lp)
    assert same.name == "end_to_end"
    below = predict.cause_rule(cfg, {"end_to_end_tuning": {"skipped": "the val split has 3 conversations"}}, [conv], lp)
    assert "notebook 04 chose no end-to-end rule: the val split has 3 conversations" in below.note
