"""Notebooks 02-06 and 11 run in order under papermill (through utils.run) and leave valid artifacts."""

from __future__ import annotations

import csv
import json

import pytest

from utils.ecf import artifacts, config, data
from utils import io, run
from utils.ecf.data import EMOTIONS

OFFICIAL_PAIR_KEYS = {"precision_pair", "recall_pair", "f1_pair", "weighted_precision", "weighted_recall", "weighted_f1"}
EMOTION_KEYS = {"accuracy", "weighted_f1", "macro_f1", "report", "confusion_matrix", "labels"}


# conversation: the cause model trained and run on predicted emotions (03 labels the train split too);
# per_utterance: the original recipe, whose untrained outputs never parse, so every emotion falls back to
# neutral and the cause model needs gold emotions (in 04 and 05) to have anything to work on; its 03 keeps
# LABEL_TRAIN at its default (off)
# fused: one adapter (02) reads both stages, 04 trains nothing, 05 reads the test conversations again with the
# end-to-end rule's offsets
# each style on another family, so the series runs off Llama too at no extra cost: GPT-2 (Conv1D c_attn, no pad,
# no BOS, no chat template: the recipe's plain prompts) and Phi-3 (fused qkv_proj, SentencePiece with BOS)
STYLES = [("conversation", "predicted", "llama"), ("per_utterance", "gold", "gpt2"), ("fused", "predicted", "phi3")]

# 11 reads the adapters 02 and 04 left (the conversation style's; another style: a line that says so)
BOOKS = ("02", "03", "04", "05", "06", "11")


@pytest.fixture(scope="module", params=STYLES, ids=[f"{s}-{a}" for s, _, a in STYLES])
def series(request, tiny_family, tmp_path_factory):
    """Run 02-06 once per style with a tiny model in SMOKE mode; every output goes to a temp folder."""
    style, cause_emotions, arch = request.param
    out = tmp_path_factory.mktemp(f"series_{style}")
    params = {"MODEL": str(tiny_family(arch)), "SMOKE": True, "STYLE": style, "TRAIN_DIR": str(out / "results_train"),
              "TEST_DIR": str(out / "results_test"), "CHECKPOINT_DIR": str(out / "checkpoints"),
              "LEARNING_RATE": 1e-2, "LOGGING_STEPS": 1, "CAUSE_EMOTIONS": cause_emotions}
    if style == "conversation":  # 04 trains on 03's labels of the train split
        params["LABEL_TRAIN"] = True
    summary = run.run_series(params, only=list(BOOKS))
    return out, summary, style


def _gold_test():
    cfg = config.EmotionInferenceConfig(SMOKE=True)
    return artifacts.load_splits(config.apply_smoke(cfg))["test"]


def test_series_ran_every_notebook_in_order(series):
    out, summary, _ = series
    assert [n["notebook"][:2] for n in summary["notebooks"]] == list(BOOKS)
    for entry in summary["notebooks"]:  # each executed copy ran every code cell, none raised
        nb = json.loads((out / "results_test" / "executed" / entry["notebook"]).read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["execution_count"] for c in code), entry["notebook"]
        assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"], entry["notebook"]


@pytest.mark.parametrize("task", ["emotion", "cause"])
def test_training_lowered_the_loss_and_saved_the_adapter(series, task):
    out, _, style = series
    folder = out / "checkpoints" / task / style
    if style == "fused" and task == "cause":  # nothing trained: the record points at 02's adapter
        record = json.loads((folder / "task.json").read_text(encoding="utf-8"))
        assert record["task"] == "cause" and record["style"] == "fused" and record["cause_layout"] == "fused"
        assert record["adapter"] == str(out / "checkpoints" / "emotion" / "fused" / "adapter")
        assert record["train_tokens"] == json.loads((out / "checkpoints" / "emotion" / "fused" / "task.json")
                                                    .read_text(encoding="utf-8"))["train_tokens"]
        assert not (folder / "adapter").exists() and "threshold" in record and "end_to_end" in record
        return
    summary = json.loads((folder / "train_summary.json").read_text(encoding="utf-8"))
    assert summary["global_step"] == 8 and summary["train_tokens"] > 0
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    task_record = json.loads((folder / "task.json").read_text(encoding="utf-8"))
    assert task_record["style"] == style and task_record["task"] == task
    if task == "cause":
        assert task_record["cause_emotions"] == ("predicted" if style == "conversation" else "gold")
    assert (out / "results_train" / "figures" / f"{task}_{style}_loss.png").stat().st_size > 1000


def test_emotion_files_hold_a_valid_label_for_every_utterance(series):
    out, _, style = series
    gold = _gold_test()
    test = json.loads((out / "results_test" / "emotion_labelled_data.json").read_text(encoding="utf-8"))
    assert [c["conversation_ID"] for c in test] == [c["conversation_ID"] for c in gold]
    train_file = out / "results_train" / "emotion_labelled_data.json"
    labelled = [test]
    if style == "conversation":  # LABEL_TRAIN on: 04 trained on these labels
        labelled.append(json.loads(train_file.read_text(encoding="utf-8")))
    else:  # 03's default labels the test split only
        assert not train_file.exists()
    for convs in labelled:
        data.validate_conversations(convs)  # official format, every emotion one of the seven labels
        assert all(u["emotion"] in EMOTIONS for c in convs for u in c["conversation"])
    metrics = json.loads((out / "results_test" / "emotion_metrics.json").read_text(encoding="utf-8"))
    assert EMOTION_KEYS <= set(metrics) and EMOTION_KEYS <= set(metrics["baselines"]["majority"])
    assert metrics["n"] == data.summary(gold)["utterances"]
    inference = metrics["inference"]
    assert inference["invalid_output_share"] == inference["invalid_outputs"] / inference["n_outputs"]
    if style != "per_utterance":  # only generation can fail to parse
        assert inference["invalid_outputs"] == 0


def test_pair_predictions_are_official_and_scored(series):
    out, _, style = series
    gold = _gold_test()
    pred = json.loads((out / "results_test" / "Subtask_2_pred.json").read_text(encoding="utf-8"))
    data.validate_conversations(pred)  # pairs point at existing utterances with their predicted emotion
    assert {c["conversation_ID"] for c in gold} <= {c["conversation_ID"] for c in pred}
    for conv in pred:
        assert all(isinstance(p, list) and len(p) == 2 and p[1].isdigit() for p in conv["emotion-cause_pairs"])
    scores = json.loads((out / "results_test" / "subtask2_scores.json").read_text(encoding="utf-8"))
    assert OFFICIAL_PAIR_KEYS <= set(scores)
    assert scores["n_gold_pairs"] == sum(len(data.emotion_pairs(c)) for c in gold)
    for baseline in scores["baselines"].values():
        assert OFFICIAL_PAIR_KEYS <= set(baseline)
    assert scores["baselines"]["self_and_previous_gold_emotions"]["weighted_f1"] > 0
    if scores["cause_emotions"] == "predicted":  # the cause model alone, on the gold emotions too
        gold_run = json.loads((out / "results_test" / "Subtask_2_pred_gold_emotions.json").read_text(encoding="utf-8"))
        data.validate_conversations(gold_run)
        assert OFFICIAL_PAIR_KEYS <= set(scores["model_gold_emotions"])


def test_the_end_to_end_rule_is_chosen_on_val_and_used_on_test(series):
    out, _, style = series
    cause_task = json.loads((out / "checkpoints" / "cause" / style / "task.json").read_text(encoding="utf-8"))
    scores = json.loads((out / "results_test" / "subtask2_scores.json").read_text(encoding="utf-8"))
    if style == "per_utterance":  # the recipe generates: no log-probs, no cut-offs, the stage-wise rule
        assert "end_to_end" not in cause_task and scores["inference"]["decision_rule"] == "stage_wise"
        return
    from utils.ecf import decision

    val_lp = artifacts.read_logprobs(out / "checkpoints" / "emotion" / style / artifacts.LOGPROBS_FILE)  # 02's
    rule = cause_task["end_to_end"]
    assert len(rule["table"]) == len(decision.NEUTRAL_SHIFTS) * len(decision.FALLBACKS)
    assert rule["conversations"] == len(val_lp)
    assert rule["weighted_f1"] == max(r["weighted_f1"] for r in rule["table"])
    assert rule["weighted_f1"] >= rule["stage_wise"]["weighted_f1"]  # the stage-wise rule is one of its candidates
    assert (out / "results_train" / "figures" / "cause_val_end_to_end.png").stat().st_size > 1000
    # 05 decided the cause stage's emotions again from 03's test log-probs with the rule's offsets
    labelled = json.loads((out / "results_test" / "emotion_labelled_data.json").read_text(encoding="utf-8"))
    test_lp = artifacts.read_logprobs(out / "results_test" / artifacts.LOGPROBS_FILE)
    assert [len(test_lp[c["conversation_ID"]]) for c in labelled] == [len(c["conversation"]) for c in labelled]
    pred = json.loads((out / "results_test" / "Subtask_2_pred.json").read_text(encoding="utf-8"))
    if style == "fused":  # the one read ran again with the rule's offsets: it decided these emotions
        from utils.ecf import predict
        from utils.lm.modeling import load_model, load_tokenizer

        model_dir = json.loads((out / "results_test" / "executed" / "05_cause_inference.ipynb").read_text(
            encoding="utf-8"))["metadata"]["papermill"]["parameters"]["MODEL"]
        model = load_model(model_dir, adapter=out / "checkpoints" / "emotion" / "fused" / "adapter")
        want = predict.predict_causes(model, load_tokenizer(model_dir), data.strip_labels(labelled), "fused",
                                      decide_offsets=rule["offsets"]).convs
    else:
        want = decision.relabel(labelled, test_lp, rule["offsets"])
    assert [[u["emotion"] for u in c["conversation"]] for c in pred] == [[u["emotion"] for u in c["conversation"]] for c in want]
    assert scores["inference"]["decision_rule"] == "end_to_end" and scores["inference"]["fallback"] == rule["fallback"]
    stage = json.loads((out / "results_test" / "Subtask_2_pred_stage_wise.json").read_text(encoding="utf-8"))
    assert [[u["emotion"] for u in c["conversation"]] for c in stage] == [[u["emotion"] for u in c["conversation"]] for c in labelled]
    assert OFFICIAL_PAIR_KEYS <= set(scores["model_stage_wise"]) and "emotion_weighted_f1" in scores


def test_evaluation_wrote_tables_and_figures(series):
    out, _, style = series
    folder = out / "results_test"
    assert (folder / "figures" / "emotion_confusion.png").stat().st_size > 1000
    with open(folder / "emotion_errors.csv", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["conversation", "utterance", "speaker", "text", "gold", "predicted"]
    summary = json.loads((folder / "evaluation_summary.json").read_text(encoding="utf-8"))
    assert {"pairs", "emotions", "inference"} <= set(summary)
    # predicted emotions (the end-to-end rule): the model and self + previous on them, both again on 03's emotions
    # (the stage-wise rule) and on gold emotions
    assert len(summary["pairs"]) == (2 if style == "per_utterance" else 6)
    executed = folder / "executed" / "06_evaluation.ipynb"
    assert executed.is_file()
    from utils import tracking

    kinds = set(tracking.query_runs(tracking.db_path(None, out / "results_train"))["kind"])
    assert {"emotion_train", "emotion_inference", "cause_train", "cause_inference"} <= kinds


def test_your_conversation_is_read_with_the_series_adapters_and_shown_whole(series):
    """Notebook 11: MY_CONVERSATION labelled by 02's and 04's adapters, in the Subtask 2 JSON and in the view."""
    import html
    import re

    out, _, style = series
    folder = out / "results_test"
    executed = json.loads((folder / "executed" / "11_your_conversation.ipynb").read_text(encoding="utf-8"))
    if style != "conversation":  # analyse reads the conversation style's adapters only: said, nothing written
        from utils import docs

        assert f"this run has STYLE={style!r}: nothing to show" in "\n".join(docs.output_texts(executed))
        assert not (folder / "your_conversation.json").exists() and not (folder / "your_conversation.html").exists()
        return
    lines = config.ConversationConfig().MY_CONVERSATION.splitlines()
    result = json.loads((folder / "your_conversation.json").read_text(encoding="utf-8"))
    data.validate_conversations(result)  # the official format: every emotion a label, pairs inside the conversation
    (conv,) = result
    assert [f"{u['speaker']}: {u['text']}" for u in conv["conversation"]] == lines
    assert all(0 < u["emotion_probability"] <= 1 and set(u["emotion_probabilities"]) == set(EMOTIONS)
               for u in conv["conversation"])
    assert len(conv["pair_probabilities"]) == len(conv["emotion-cause_pairs"])
    page = (folder / "your_conversation.html").read_text(encoding="utf-8")
    shown = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())  # the words a reader sees
    for utt in conv["conversation"]:
        assert f"U{utt['utterance_ID']} {utt['speaker']} {' '.join(utt['text'].split())} {utt['emotion']}" in shown
    # the same page inline, in a frame, at the end of the executed notebook
    inline = ["".join(o["data"]["text/html"]) for o in executed["cells"][-1]["outputs"]
              if "text/html" in o.get("data", {})]
    assert len(inline) == 1 and "<iframe srcdoc=" in inline[0] and html.escape(page) in inline[0]


def test_the_model_pages_render_from_the_series_adapters_without_the_corpus_text(series, tmp_path):
    """utils.docs renders 03, 05 and 06 on the adapters notebooks 02 and 04 left (issue 12, item 7)."""
    out, _, style = series
    if style != "conversation":
        pytest.skip("the pages are rendered from the default style's adapters")
    from utils import docs

    test_file = tmp_path / "test.json"  # a separate test file, as the official evaluation set is
    held_out = [{**c, "conversation_ID": 1000 + i} for i, c in enumerate(data.load_ecf(data.SAMPLE_PATH)[-4:])]
    test_file.write_text(json.dumps(held_out), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no emotion adapter with its task.json"):
        docs.render(str(data.SAMPLE_PATH), tmp_path / "none", ("06",), str(test_file), str(tmp_path))
    record = docs.render(str(data.SAMPLE_PATH), tmp_path / "docs", ("03", "05", "06"), str(test_file),
                         str(out / "checkpoints"))
    assert [p["notebook"][:2] for p in record["pages"]] == ["03", "05", "06"]
    models = record["pages"][1]["models"]  # 05 shows both adapters (03 the emotion one)
    assert models["cause"]["cause_layout"] == "inline" and models["emotion"]["train_tokens"] > 0
    assert record["commit"] and record["data_sha256"]["test.json"] == io.file_sha256(test_file)
    assert all(p["code_sha256"] == docs.code_digest(run.NOTEBOOK_DIR / p["notebook"]) for p in record["pages"])
    page = json.loads((tmp_path / "docs" / "06_evaluation.ipynb").read_text(encoding="utf-8"))
    shown = "\n".join(docs.output_texts(page))
    assert "test.json, 4 conversations" in shown and str(tmp_path) not in shown  # the file by name only
    assert any("image/png" in o.get("data", {}) for c in page["cells"] for o in c.get("outputs", []))
    assert not [o for c in page["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    params = page["metadata"]["papermill"]["parameters"]
    assert params["ERROR_ROWS"] == 0 and params["TEST_PATH"] == "test.json"


@pytest.mark.slow
def test_a_model_per_stage_trains_and_reads_each_stage_on_its_own_model(tiny_family, tmp_path):
    """EMOTION_MODEL on Llama, CAUSE_MODEL on Qwen2: 04's examples, adapter and cut-offs and 05's reads are the
    cause model's, 02's and 03's the emotion model's; 11 reads with both."""
    emotion, cause = str(tiny_family("llama")), str(tiny_family("qwen2"))
    params = {"MODEL": emotion, "CAUSE_MODEL": cause, "SMOKE": True, "TRAIN_DIR": str(tmp_path / "results_train"),
              "TEST_DIR": str(tmp_path / "results_test"), "CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
              "LEARNING_RATE": 1e-2, "CAUSE_EMOTIONS": "gold"}
    summary = run.run_series(params, only=["02", "03", "04", "05", "11"])
    assert [n["notebook"][:2] for n in summary["notebooks"]] == ["02", "03", "04", "05", "11"]
    for task, model in (("emotion", emotion), ("cause", cause)):
        folder = tmp_path / "checkpoints" / task / "conversation"
        assert json.loads((folder / "task.json").read_text(encoding="utf-8"))["model"] == model
        assert json.loads((folder / "run.json").read_text(encoding="utf-8"))["model"]["model"] == model
        assert json.loads((folder / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == model
    cause_task = json.loads((tmp_path / "checkpoints" / "cause" / "conversation" / "task.json").read_text())
    assert "threshold" in cause_task and "end_to_end" in cause_task  # 02's val log-probs matched the emotion stage
    assert json.loads((tmp_path / "results_test" / "Subtask_2_pred.json").read_text(encoding="utf-8"))
    assert (tmp_path / "results_test" / "your_conversation.json").is_file()
