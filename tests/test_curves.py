"""The val/test curves of the end-to-end rule (bench/curves.py), on the bundled sample with stand-in models."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import curves
from utils.ecf import baselines, data, decision
from utils.ecf.data import EMOTIONS
from utils.ecf.metric import score_subtask2

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gold() -> list[dict]:
    return data.load_ecf(ROOT / "data" / "ecf_sample.json")[:12]  # the cut-off ascent rescores ~170 rules per read


def _logprobs(convs: list[dict]) -> dict:
    """An emotion model that knows every gold label by one nat, so a neutral shift of +2 makes everything neutral."""
    out = {}
    for conv in convs:
        rows = []
        for u in conv["conversation"]:
            row = [-3.0] * len(EMOTIONS)
            row[EMOTIONS.index(u["emotion"])] = -2.0
            rows.append(row)
        out[conv["conversation_ID"]] = rows
    return out


def _self_previous_model(p_true: float = 1.0):
    """A cause model whose P(yes) is ``p_true`` for an emotional utterance's self and previous candidates, 0 else."""
    def probs(convs: list[dict]) -> list[list]:
        rows = []
        for conv in convs:
            n = len(conv["conversation"])
            for u in conv["conversation"]:
                i = u["utterance_ID"]
                if u["emotion"] == "neutral":
                    continue
                for j in range(max(1, i - 5), min(n, i + 2) + 1):
                    rows.append([conv["conversation_ID"], i, j, p_true if j in (i, i - 1) else 0.0])
        return rows
    return probs


@pytest.fixture(scope="module")
def rule(gold) -> dict:
    return decision.choose_end_to_end(gold, _logprobs(gold), None, _self_previous_model(), shifts=(0.0, -1.0, 2.0))


def test_emotion_curve_follows_the_shift(gold):
    rows = {r["neutral_shift"]: r for r in curves.emotion_curve(gold, _logprobs(gold), None, (0.0, 2.0))}
    assert rows[0.0]["emotion_weighted_f1"] == pytest.approx(1.0)
    all_neutral = [data.with_emotions(c, ["neutral"] * len(c["conversation"])) for c in gold]
    assert rows[2.0]["emotional_share"] == 0.0
    assert rows[2.0]["emotion_weighted_f1"] == pytest.approx(decision.emotion_weighted_f1(all_neutral, gold))


def test_a_model_that_guesses_self_and_previous_has_no_margin(gold, rule):
    val = {r["neutral_shift"]: r for r in curves.val_rows(gold, _logprobs(gold), rule)}
    assert sorted(val) == [-1.0, 0.0, 2.0]
    sp = score_subtask2(baselines.self_and_previous_causes(gold), gold)["weighted_f1"]
    assert val[0.0]["self_previous_f1"] == pytest.approx(sp)
    assert val[0.0]["weighted_f1"] == pytest.approx(sp)  # the model's pairs are the heuristic's
    assert val[2.0]["weighted_f1"] == val[2.0]["self_previous_f1"] == 0.0  # nothing emotional: no pairs
    thresholds = {r["neutral_shift"]: r["threshold"] for r in rule["table"] if r["fallback"] == "none"}
    assert {s: r["threshold"] for s, r in val.items()} == thresholds

    test = curves.test_rows(gold, _logprobs(gold), rule, lambda shift, convs: _self_previous_model()(convs))
    assert all(r["margin"] == pytest.approx(0.0) for r in test)


def test_test_rows_keep_vals_cutoffs_and_show_the_tests_own_beside_them(gold, rule):
    """A test whose P(yes) are all lower than val's: val's cut-offs lose every pair, the test's own would not."""
    seen = []

    def weak(shift, convs):
        seen.append(shift)
        return _self_previous_model(0.04)(convs)

    rows = {r["neutral_shift"]: r for r in curves.test_rows(gold, _logprobs(gold), rule, weak)}
    assert seen == [0.0, -1.0, 2.0]  # one cause pass per shift, in the table's order
    assert rows[0.0]["weighted_f1"] == 0.0
    assert rows[0.0]["oracle_f1"] > 0.5
    assert rows[0.0]["margin"] == pytest.approx(-rows[0.0]["self_previous_f1"])


def test_plot_writes_a_png(gold, rule, tmp_path):
    lp = _logprobs(gold)
    model = _self_previous_model()
    pairs = [{**r, "oracle_f1": r["weighted_f1"]} for r in curves.val_rows(gold, lp, rule)]  # no cause pass
    record = {"rule": rule,
              "val": {"emotion_curve": curves.emotion_curve(gold, lp, None, (0.0, 2.0)), "pairs": pairs,
                      "gold_emotions": None},
              "test": {"emotion_curve": curves.emotion_curve(gold, lp, None, (0.0, 2.0)), "pairs": pairs,
                       "gold_emotions": curves.pair_row(gold, gold, model(gold), 0.5)}}
    path = curves.plot(record, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "margin +0.0000" in curves.summary(record)


def test_saved_reads_resume_only_for_the_adapters_that_made_them(tmp_path):
    mine, other = {"emotion": "e1", "cause": "c1"}, {"emotion": "e1", "cause": "c2"}
    curves.claim_out(tmp_path, mine)
    curves.claim_out(tmp_path, mine)  # a resumed run of the same adapters goes on
    with pytest.raises(SystemExit, match="other adapters"):
        curves.claim_out(tmp_path, other)
    unstamped = tmp_path / "old"
    (unstamped / "probs").mkdir(parents=True)
    (unstamped / "probs" / "val_shift_0.0.json").write_text("[]")
    with pytest.raises(SystemExit, match="unknown"):
        curves.claim_out(unstamped, mine)
    assert not (unstamped / "adapters.json").exists()


def _with_cutoff_at(rule: dict, shift: float, cutoff: float) -> dict:
    table = [{**r, "threshold": cutoff} if r["neutral_shift"] == shift else r for r in rule["table"]]
    return {**rule, "table": table}


def test_each_shift_is_scored_with_the_cutoffs_val_chose_for_it(gold, rule):
    """Val chose cut-off 1.0 at shift -1 (nothing passes) and kept its own elsewhere: only that point loses its pairs."""
    strict = _with_cutoff_at(rule, -1.0, 1.0)
    rows = {r["neutral_shift"]: r for r in curves.test_rows(gold, _logprobs(gold), strict,
                                                            lambda shift, convs: _self_previous_model()(convs))}
    assert rows[-1.0]["weighted_f1"] == 0.0 and rows[-1.0]["self_previous_f1"] > 0.5
    assert rows[0.0]["weighted_f1"] == pytest.approx(rows[0.0]["self_previous_f1"])
    table = {r["neutral_shift"]: r["threshold"] for r in curves.rule_rows(strict)}
    assert {s: r["threshold"] for s, r in rows.items()} == table


def test_the_curve_follows_the_fallback_the_rule_chose(gold, rule):
    """Val's cut-off 1.0 keeps no pair, but a rule whose fallback is self + previous gives the heuristic's pairs."""
    strict = {**rule, "table": [{**r, "threshold": 1.0} for r in rule["table"]]}
    model = lambda shift, convs: _self_previous_model()(convs)  # noqa: E731
    none = {r["neutral_shift"]: r for r in curves.test_rows(gold, _logprobs(gold), strict, model)}
    fallback = {r["neutral_shift"]: r for r in curves.test_rows(gold, _logprobs(gold), {**strict, "fallback": "self_previous"}, model)}
    assert none[0.0]["weighted_f1"] == 0.0
    assert fallback[0.0]["weighted_f1"] == pytest.approx(fallback[0.0]["self_previous_f1"]) and fallback[0.0]["weighted_f1"] > 0.5
    assert len(curves.rule_rows({**rule, "fallback": "self"})) == 3  # one row per shift, of that fallback only


def test_val_rows_refuse_emotions_that_04_did_not_score(gold, rule):
    with pytest.raises(ValueError, match="conversations"):
        curves.val_rows(gold[:-1], _logprobs(gold), rule)
    wrong = _logprobs(gold)
    first = gold[0]["conversation_ID"]
    wrong[first] = [[-3.0] * len(EMOTIONS) for _ in wrong[first]]  # ties: this conversation reads as neutral
    with pytest.raises(ValueError, match="04 recorded"):
        curves.val_rows(gold, wrong, rule)


def test_saved_probs_resume_only_on_the_same_emotions(gold, tmp_path):
    reads = []

    def read(convs):
        reads.append(len(convs))
        return _self_previous_model()(convs)

    path = tmp_path / "probs" / "shift_+0.json"
    first = curves.saved_probs(path, gold, read)
    assert curves.saved_probs(path, gold, read) == first and reads == [len(gold)]  # resumed, not read again
    neutral = [data.with_emotions(c, ["neutral"] * len(c["conversation"])) for c in gold]
    assert curves.saved_probs(path, neutral, read) == [] and reads == [len(gold)] * 2  # other emotions: read again
    path.write_text("[[1, 1, 1, 0.9]]")  # a bare list from before the digest: not trusted
    assert curves.saved_probs(path, gold, read) == first and len(reads) == 3


def test_an_empty_stamp_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        curves.claim_out(tmp_path, {"emotion": None, "cause": "c1"})
