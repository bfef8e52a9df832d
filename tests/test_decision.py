"""Decision rules chosen on val: emotion offsets and cause cut-offs (utils.ecf.decision)."""

from __future__ import annotations

import numpy as np
import pytest

from utils.ecf import config, data, decision, predict
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
