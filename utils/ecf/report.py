"""Notebook 06 and the training notebooks' figures: metric tables beside the baselines, error rows, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt

from utils.ecf.artifacts import gold_subset, unscored
from utils.ecf.baselines import majority_emotion, self_and_previous_causes
from utils.ecf.data import emotion_pairs, emotions_of, strip_labels, with_pairs
from utils.ecf.decision import emotion_weighted_f1
from utils.ecf import spans
from utils.ecf.metric import emotion_scores_convs, score_subtask1, score_subtask2
from utils.plots import save_figure


def plot_losses(history: list[dict], path: str | Path, title: str, show: bool = True) -> Path:
    """Training (and eval) loss against the optimizer step, saved as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, style in (("loss", "-o"), ("eval_loss", "--s")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=3)
    ax.set(title=title, xlabel="optimizer step", ylabel="loss (answer tokens)")
    ax.legend()
    return save_figure(fig, path, show)


def plot_thresholds(table: list[dict], path: str | Path, title: str, chosen: float | dict[str, float] | None = None,
                    show: bool = True) -> Path:
    """Weighted pair precision, recall and F1 against the P(yes) cut-off."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [row["threshold"] for row in table]
    for key in ("weighted_precision", "weighted_recall", "weighted_f1"):
        ax.plot(x, [row[key] for row in table], "-o", markersize=3, label=key.replace("weighted_", ""))
    if isinstance(chosen, dict):  # one cut-off per distance bucket: a line per bucket
        for k, (bucket, value) in enumerate(chosen.items()):
            ax.axvline(value, color=f"C{k + 3}", linestyle=":", label=f"cut-off, offset {bucket}: {value:g}")
    elif chosen is not None:
        ax.axvline(chosen, color="grey", linestyle="--", label=f"cut-off {chosen:g}")
    ax.set(title=title, xlabel="P(yes) cut-off", ylabel="weighted pair score", ylim=(0, 1))
    ax.legend(fontsize="small")
    return save_figure(fig, path, show)


def end_to_end_table(rule: dict) -> list[dict]:
    """One row per neutral shift of the end-to-end rule's val table: the pair weighted F1 of each fallback (its
    cut-offs chosen on val), the emotion weighted F1 and the share of utterances the cause model reads as emotional."""
    rows: dict[float, dict] = {}
    for r in rule["table"]:
        row = rows.setdefault(r["neutral_shift"], {"neutral shift": r["neutral_shift"],
                                                   "emotion weighted F1": round(r["emotion_weighted_f1"], 4),
                                                   "emotional utterances": f"{r['emotional_share']:.1%}"})
        row[f"pair F1, fallback {r['fallback']}"] = round(r["weighted_f1"], 4)
    return sorted(rows.values(), key=lambda row: -row["neutral shift"])


def plot_end_to_end(rule: dict, path: str | Path, title: str, show: bool = True) -> Path:
    """Val pair weighted F1 (one line per fallback) and emotion weighted F1 against the neutral shift, the
    chosen rule marked: where the two objectives part."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, fallback in enumerate(dict.fromkeys(r["fallback"] for r in rule["table"])):
        points = sorted((r["neutral_shift"], r["weighted_f1"]) for r in rule["table"] if r["fallback"] == fallback)
        ax.plot(*zip(*points), "-o", markersize=3, color=f"C{k}", label=f"pair F1, fallback {fallback}")
    emotion = sorted({(r["neutral_shift"], r["emotion_weighted_f1"]) for r in rule["table"]})
    ax.plot(*zip(*emotion), "--s", markersize=3, color="grey", label="emotion weighted F1")
    ax.axvline(rule["neutral_shift"], color="black", linestyle=":",
               label=f"chosen: {rule['neutral_shift']:+g}, {rule['fallback']}")
    ax.set(title=title, xlabel="shift of the neutral offset (negative: more utterances emotional)",
           ylabel="weighted F1 on val")
    ax.legend(fontsize="small")
    return save_figure(fig, path, show)


def error_rows(pred: list[dict], gold: list[dict]) -> list[dict]:
    """One row per misclassified utterance: conversation, utterance, speaker, text, gold, predicted."""
    rows = []
    for p, g in zip(pred, gold_subset(gold, pred)):
        for pu, gu in zip(p["conversation"], g["conversation"]):
            if pu["emotion"] != gu["emotion"]:
                rows.append({"conversation": g["conversation_ID"], "utterance": gu["utterance_ID"],
                             "speaker": gu["speaker"], "text": gu["text"], "gold": gu["emotion"],
                             "predicted": pu["emotion"]})
    return rows


def pair_error_rows(pred: list[dict], gold: list[dict]) -> list[dict]:
    """Pairs the model missed (false negatives) or invented (false positives), per conversation."""
    rows = []
    for p, g in zip(pred, gold_subset(gold, pred)):
        gold_pairs, pred_pairs = set(emotion_pairs(g)), set(emotion_pairs(p))
        text = {u["utterance_ID"]: u["text"] for u in g["conversation"]}
        for kind, pairs in (("missed", gold_pairs - pred_pairs), ("invented", pred_pairs - gold_pairs)):
            for i, emotion, j in sorted(pairs):
                rows.append({"conversation": g["conversation_ID"], "kind": kind, "emotion_utterance": i,
                             "emotion": emotion, "cause_utterance": j, "emotion_text": text[i], "cause_text": text[j]})
    return rows


def emotion_metrics(pred: list[dict], gold_split: list[dict], train: list[dict],
                    inference_stats: dict | None = None) -> dict:
    """The model's emotion scores (top level) and the majority baseline's, on the same conversations."""
    gold = gold_subset(gold_split, pred)
    out = emotion_scores_convs(pred, gold)
    out["baselines"] = {"majority": emotion_scores_convs(majority_emotion(train, strip_labels(gold)), gold)}
    out["inference"] = inference_stats or {}
    return out


def cause_metrics(pred: list[dict], inputs: list[dict], gold_split: list[dict], cause_emotions: str,
                  inference_stats: dict | None = None, gold_emotion_pred: list[dict] | None = None,
                  stage_wise: tuple[list[dict], list[dict]] | None = None) -> dict:
    """Official Subtask 2 scores of the model (top level) and of the self+previous baseline, both with
    the emotions the model saw and with gold emotions; ``gold_emotion_pred``: the model's pairs when it is
    given the gold emotions (``model_gold_emotions``), beside the heuristic on the same; ``stage_wise``: (pairs,
    inputs) of the stage-wise rule on 03's emotions when ``pred`` used the end-to-end rule (``model_stage_wise``,
    beside the heuristic on 03's emotions). With predicted emotions, the emotion weighted F1 of each set of
    emotions the cause model read. Where the model decided the emotions itself (the fused one read with the
    end-to-end rule), the heuristic and the emotion score take the emotions in ``pred``, the ones it read, not
    ``inputs``'."""
    gold = gold_subset(gold_split, pred)
    if [emotions_of([c]) for c in inputs] != [emotions_of([c]) for c in pred]:
        inputs = [with_pairs(c, []) for c in pred]
    out = score_subtask2(pred, gold)
    out["baselines"] = {
        f"self_and_previous_{cause_emotions}_emotions": score_subtask2(self_and_previous_causes(inputs), gold),
        "self_and_previous_gold_emotions": score_subtask2(self_and_previous_causes(gold), gold),
    }
    if cause_emotions != "gold":
        out["emotion_weighted_f1"] = emotion_weighted_f1(inputs, gold)
    if gold_emotion_pred is not None and cause_emotions != "gold":
        out["model_gold_emotions"] = score_subtask2(gold_emotion_pred, gold)
    if stage_wise is not None:
        stage_pred, stage_inputs = stage_wise
        out["model_stage_wise"] = {**score_subtask2(stage_pred, gold),
                                   "emotion_weighted_f1": emotion_weighted_f1(stage_inputs, gold)}
        out["baselines"]["self_and_previous_stage_wise"] = score_subtask2(self_and_previous_causes(stage_inputs), gold)
    out["cause_emotions"] = cause_emotions
    out["inference"] = inference_stats or {}
    return out


def cause_systems(scores: dict, style: str) -> dict[str, dict]:
    """The pair-score rows notebooks 05 and 06 show, each model beside the heuristic on the same emotions."""
    emotions = scores["cause_emotions"]
    rule = scores.get("inference", {}).get("decision_rule")
    tag = " (end-to-end rule)" if rule == "end_to_end" else ""
    rows = {f"model ({style}), {emotions} emotions{tag}": scores}
    baselines = dict(scores.get("baselines", {}))
    rows[f"self + previous, {emotions} emotions{tag}"] = baselines.pop(f"self_and_previous_{emotions}_emotions", None)
    if "model_stage_wise" in scores:
        rows[f"model ({style}), 03's emotions (stage-wise rule)"] = scores["model_stage_wise"]
        rows["self + previous, 03's emotions"] = baselines.pop("self_and_previous_stage_wise", None)
    if "model_gold_emotions" in scores:
        rows[f"model ({style}), gold emotions"] = scores["model_gold_emotions"]
    rows.update({name.replace("self_and_previous_", "self + previous, ").replace("_emotions", " emotions"): s
                 for name, s in baselines.items()})
    return {name: s for name, s in rows.items() if s}


def cause_verdict(scores: dict, key: str = "weighted_f1") -> str:
    """What the pair scores mean, in words generated from them: the cause model against self + previous with
    gold emotions (the cause model alone) and end to end (what the emotion stage leaves it)."""
    base = scores.get("baselines", {})
    heuristic_gold = base.get("self_and_previous_gold_emotions", {}).get(key)
    model_gold = scores.get(key) if scores.get("cause_emotions") == "gold" else scores.get("model_gold_emotions", {}).get(key)
    said = []
    if model_gold is not None and heuristic_gold is not None:
        said.append(f"With gold emotions the cause model scores {model_gold:.3f} pair weighted F1 against "
                    f"{heuristic_gold:.3f} for self + previous ({model_gold - heuristic_gold:+.3f}): it "
                    f"{'beats' if model_gold > heuristic_gold else 'does not beat'} the heuristic on its own task.")
    heuristic_e2e = base.get("self_and_previous_predicted_emotions", {}).get(key)
    end_to_end = scores.get("inference", {}).get("decision_rule") == "end_to_end"
    if scores.get("cause_emotions") == "predicted" and heuristic_e2e is not None:
        model = scores[key]
        where = ("with the end-to-end rule (emotions and cut-offs chosen together on val)" if end_to_end
                 else "on notebook 03's emotions")
        sentence = (f"End to end, {where}, it scores {model:.3f} against {heuristic_e2e:.3f} for self + "
                    f"previous on the same emotions ({model - heuristic_e2e:+.3f})")
        if model_gold is not None:
            sentence += (f"; the predicted emotions cost the model {model_gold - model:.3f} and the heuristic "
                         f"{heuristic_gold - heuristic_e2e:.3f}, so the emotion stage sets the end-to-end score")
        said.append(sentence + ".")
    stage = scores.get("model_stage_wise")
    if stage is not None and end_to_end:
        said.append(f"The stage-wise rule (03's emotions, cut-offs chosen on gold emotions) scores {stage[key]:.3f} "
                    f"({scores[key] - stage[key]:+.3f} for the end-to-end rule); the emotions the cause model read "
                    f"score {scores.get('emotion_weighted_f1', float('nan')):.3f} emotion weighted F1 against "
                    f"{stage['emotion_weighted_f1']:.3f} for 03's.")
    return " ".join(said)


def span_table(span_scores: dict):
    """Notebook 05/06's Subtask 1 table (strict and proportional F1, weighted and micro), or None where the test
    file has no gold spans to score against (then there is no table to show)."""
    import pandas as pd

    if not span_scores or "weighted_strict_f1" not in span_scores:
        return None
    systems = {f"model pairs, {span_scores.get('span_source')} spans": span_scores, **span_scores.get("baselines", {})}
    return pd.DataFrame(score_table(systems, SPAN_KEYS)).set_index("system")


def score_table(named_scores: dict[str, dict], keys: Sequence[str]) -> list[dict]:
    """Rows {system, key...} for a side-by-side table of several systems' scores."""
    return [{"system": name, **{k: round(float(s[k]), 4) for k in keys if k in s}}
            for name, s in named_scores.items()]


SPAN_KEYS = ("weighted_strict_f1", "weighted_proportional_f1", "strict_f1", "proportional_f1")


def subtask1_metrics(span_pred: list[dict], span_source: str, pred: list[dict], gold_split: list[dict],
                     val_accuracy: dict[str, float]) -> dict:
    """Official Subtask 1 scores of ``span_pred`` (the predicted pairs with their spans from ``span_source``:
    the model, or a rule) at the top level; each span rule on the same pairs as the baselines; and the rules
    on the gold pairs (the span choice alone)."""
    gold = spans.gold_files(gold_subset(gold_split, pred))["Subtask_1_gold.json"]
    out = score_subtask1(span_pred, gold)
    out["span_source"], out["val_rule_accuracy"] = span_source, val_accuracy
    out["baselines"] = {f"model pairs, {rule} spans": score_subtask1(spans.subtask1_predictions(pred, rule), gold)
                        for rule in spans.RULES if f"{rule} rule" != span_source}
    gold_pairs = gold_subset(gold_split, pred)
    out["gold_pairs"] = {r: {k: score_subtask1(spans.subtask1_predictions(gold_pairs, r), gold)[k] for k in SPAN_KEYS}
                         for r in spans.RULES}
    return out


def subtask1_record(span_pred: list[dict], span_source: str, pred: list[dict], test: list[dict],
                    val_accuracy: dict[str, float], test_set: dict) -> dict:
    """What notebook 05 writes to subtask1_scores.json: the scores where the test file has gold spans,
    else a record that says why there is nothing to score."""
    if test_set["annotated"] and test_set["spans"]:
        out = subtask1_metrics(span_pred, span_source, pred, test, val_accuracy)
    elif test_set["annotated"]:
        print(f"[emocause] {test_set['source']} has utterance pairs only (Subtask 2): Subtask_1_pred.json written, "
              "no gold spans to score it against")
        out = {"scored": False, "span_source": span_source, "val_rule_accuracy": val_accuracy}
    else:
        out = {**unscored("Subtask_1_pred.json", test_set), "span_source": span_source, "val_rule_accuracy": val_accuracy}
    return {**out, "test_set": test_set}

