"""Subtask 1 spans and the submission files: encoding as the official scorer reads it, valid spans,
the zip read back in the organisers' layout, and the series with a separate test file (issue 11)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from utils.ecf import data, spans
from utils.ecf.metric import _gold_span_tuples, score_subtask1, score_subtask2
from utils.run import run_series


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return data.load_ecf(data.SAMPLE_PATH)


def test_a_span_encodes_as_the_scorer_reads_gold_spans(sample):
    assert spans.has_spans(sample)
    for conv in sample:
        official = {(t[1], t[2], t[3], t[4]) for t in _gold_span_tuples(conv["conversation_ID"], conv)}
        ours = {(i, j, *where) for i, _, j, where in spans._gold_spans(conv)}
        assert ours == official
    utterance = "Guess what , I got the job at the museum !"
    assert spans.encode("I got the job at the museum", utterance) == (3, 10)
    assert spans.encode("I got the job at the museum !", utterance) == (3, 10)  # punctuation the scorer strips
    assert spans.encode(", I got the job at the museum", utterance) == (3, 10)
    assert spans.encode("not in it", utterance) == (0, 0)
    assert spans.clauses(utterance) == [(0, 3), (3, 11)]


@pytest.mark.parametrize("rule", list(spans.RULES))
def test_every_predicted_span_lies_inside_its_cause_utterance(sample, rule):
    predicted = spans.subtask1_predictions(sample, rule)
    assert len(predicted) == len(sample)
    for conv, gold in zip(predicted, sample):
        assert len(conv["emotion-cause_pairs"]) == len(data.emotion_pairs(gold))
        for emo, cause in conv["emotion-cause_pairs"]:
            j, start, end = (int(x) for x in cause.split("_"))
            n = len(gold["conversation"][j - 1]["text"].split())
            assert 0 <= start <= end <= n and emo.split("_")[1] in data.EMOTIONS


def test_the_rule_is_chosen_on_val_and_beats_or_ties_the_whole_utterance(sample):
    rule, accuracy = spans.choose_rule(sample[:20])
    assert accuracy[rule] == max(accuracy.values()) >= accuracy["whole"]
    assert spans.choose_rule([data.with_pairs(c, []) for c in sample[:3]])[0] == "longest_clause"  # no spans


def test_span_reads_are_trained_on_gold_spans_and_always_give_a_valid_span(sample, tiny_model_dir):
    from utils.ecf import predict, prompts
    from utils.lm.modeling import label_token_ids, load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    yes, no = label_token_ids(tok, prompts.ANSWERS)
    examples = spans.span_examples(sample, tok, 1024)
    answers = [lab for e in examples for lab in e["labels"] if lab != -100]
    assert answers and set(answers) <= {yes, no}
    gold = sum(len(spans._gold_by_pair(c)) for c in sample)
    assert 0 < answers.count(yes) <= gold  # at most one candidate per gold pair matches its span
    assert spans.span_examples([data.with_pairs(c, []) for c in sample], tok, 1024) == []  # no spans, no reads
    model = load_model(str(tiny_model_dir))
    predicted = spans.predict_spans(predict.reader(model, tok), tok, sample[:6], 1024)
    for conv, gold_conv in zip(predicted, sample[:6]):
        assert len(conv["emotion-cause_pairs"]) == len(data.emotion_pairs(gold_conv))
        for emo, cause in conv["emotion-cause_pairs"]:
            j, start, end = (int(x) for x in cause.split("_"))
            text = gold_conv["conversation"][j - 1]["text"]
            options = {spans.encode(" ".join(text.split()[a:b]), text) for a, b in spans.candidates(text)}
            assert (start, end) in options  # one of the candidates, by construction


def _official_layout_scores(folder: Path) -> dict:
    """What the organisers' script does: res/Subtask_N_pred.json scored against ref/Subtask_N_gold.json."""
    out = {}
    for n, score in ((1, score_subtask1), (2, score_subtask2)):
        res = folder / "res" / f"Subtask_{n}_pred.json"
        if res.is_file():
            out[n] = score(json.loads(res.read_text()), json.loads((folder / "ref" / f"Subtask_{n}_gold.json").read_text()))
    return out


def test_the_zip_reads_back_in_the_organisers_layout(tmp_path, sample):
    test = sample[-6:]
    pred2 = [data.with_pairs(c, [p for p in data.emotion_pairs(c) if p[2] == p[0]]) for c in test]  # self causes only
    pred1 = spans.subtask1_predictions(pred2, "longest_clause")
    (tmp_path / "Subtask_2_pred.json").write_text(json.dumps(pred2))
    (tmp_path / "Subtask_1_pred.json").write_text(json.dumps(pred1))
    archive = spans.write_submission(tmp_path)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["Subtask_1_pred.json", "Subtask_2_pred.json"]  # top level, no folder
        z.extractall(tmp_path / "codalab" / "res")
    (tmp_path / "codalab" / "ref").mkdir()
    for name, gold in spans.gold_files(test).items():
        (tmp_path / "codalab" / "ref" / name).write_text(json.dumps(gold))
    scores = _official_layout_scores(tmp_path / "codalab")
    gold_files = spans.gold_files(test)
    assert scores[2] == score_subtask2(pred2, gold_files["Subtask_2_gold.json"])
    assert scores[1] == score_subtask1(pred1, gold_files["Subtask_1_gold.json"])
    assert 0 < scores[1]["strict_f1"] <= scores[1]["proportional_f1"] <= 1


@pytest.mark.slow
def test_the_series_with_a_separate_test_file_writes_both_prediction_files(tmp_path, tiny_model_dir, sample):
    """02-06 with an annotated test file (scored, the learnt span reads), then 03, 05 and 06 again on the same
    conversations as the competition gives them, unannotated (predictions only), with the same adapters."""
    train, test = sample[:28], sample[28:]
    (tmp_path / "train.json").write_text(json.dumps(train))
    raw_test = json.loads(data.SAMPLE_PATH.read_text(encoding="utf-8"))[28:]  # Subtask 1 format, spans kept
    (tmp_path / "test.json").write_text(json.dumps(raw_test))
    bare = [{"conversation_ID": c["conversation_ID"],
             "conversation": [{k: u[k] for k in ("utterance_ID", "text", "speaker")} for u in c["conversation"]]}
            for c in raw_test]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    common = {"MODEL": str(tiny_model_dir), "SMOKE": True, "DATA_PATH": str(tmp_path / "train.json"),
              "CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    training = {"LOGGING_STEPS": 1, "CAUSE_SPANS": True}  # the adapters learn the span reads too
    for annotated, name, only in ((True, "test.json", ["02", "03", "04", "05", "06"]), (False, "bare.json", ["03", "05", "06"])):
        out = tmp_path / name.split(".")[0]
        params = {**common, **(training if annotated else {}), "TEST_PATH": str(tmp_path / name),
                  "TRAIN_DIR": str(out / "results_train"), "TEST_DIR": str(out / "results_test")}
        run_series(params, only=only)
        results = out / "results_test"
        pred1 = json.loads((results / "Subtask_1_pred.json").read_text())
        pred2 = json.loads((results / "Subtask_2_pred.json").read_text())
        assert [c["conversation_ID"] for c in pred1] == [c["conversation_ID"] for c in pred2] == [c["conversation_ID"] for c in test][:4]
        with zipfile.ZipFile(results / "submission.zip") as z:
            assert sorted(z.namelist()) == ["Subtask_1_pred.json", "Subtask_2_pred.json"]
        span_scores = json.loads((results / "subtask1_scores.json").read_text())
        pair_scores = json.loads((results / "subtask2_scores.json").read_text())
        assert pair_scores["test_set"]["source"] == str(tmp_path / name)
        assert span_scores["span_source"] == "model"  # the adapter learnt the span reads
        if annotated:
            assert "weighted_strict_f1" in span_scores and "weighted_f1" in pair_scores
            assert len(span_scores["baselines"]) == len(spans.RULES)
            assert (results / "Subtask_1_gold.json").is_file() and (results / "Subtask_2_gold.json").is_file()
        else:
            assert span_scores["scored"] is False and pair_scores["scored"] is False
            assert not (results / "Subtask_1_gold.json").exists()
            assert pred2 == json.loads((tmp_path / "test" / "results_test" / "Subtask_2_pred.json").read_text())


def test_notebook_05_takes_the_learnt_spans_only_from_an_adapter_that_learnt_them(sample, tiny_model_dir, tmp_path, capsys):
    from utils.ecf import predict, report
    from utils.lm.modeling import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    lm = predict.reader(load_model(str(tiny_model_dir)), tok)
    ruled, source, accuracy = spans.subtask1(lm, tok, sample[:4], sample[4:20], {"max_length": 1024})
    assert source == f"{max(accuracy, key=accuracy.get)} rule" and ruled == spans.subtask1_predictions(sample[:4], source.split()[0])
    learnt, source, _ = spans.subtask1(lm, tok, sample[:4], sample[4:20], {"max_length": 1024, "spans": True})
    assert source == "model" and len(learnt) == 4
    annotated = {"source": "x", "conversations": 4, "annotated": True, "spans": True}
    record = report.subtask1_record(learnt, source, sample[:4], sample, accuracy, annotated)
    assert "weighted_strict_f1" in record and record["span_source"] == "model" and record["test_set"] == annotated
    pairs_only = {**annotated, "spans": False}
    record = report.subtask1_record(learnt, source, sample[:4], sample, accuracy, pairs_only)
    said = capsys.readouterr().out
    assert record["scored"] is False and "x has utterance pairs only" in said and "no annotations" not in said
