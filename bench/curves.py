"""``python -m bench.curves``: the val and test curves of the end-to-end rule (issue 23), by neutral shift.

Notebook 04 chooses the end-to-end rule on val: a shift of the neutral offset on top of 02's offsets for the
emotions the cause model reads, and the cut-offs on those emotions. This reads the official evaluation set
the same way at every shift of that grid (one cause pass per shift), with the cut-offs val chose for that
shift, and puts beside each point self + previous on the same emotions. The rule stays the one chosen on
val: the test points are a diagnosis (where the test's best shift lies, how far the model's margin over the
heuristic is from issue 23's +0.02 at any shift), not a choice. One more column per test shift (and on gold
emotions) gives cut-offs tuned on the test itself by the same coordinate ascent, labelled as such: roughly how
much a better-placed cut-off would give with these emotions and probabilities, not a bound.

Writes ``<out>/curves.json`` (every number, with the sha256 of both adapters' weights and of the test file)
and ``<out>/curves.png``; each shift's cause probabilities are kept under ``<out>/probs/`` with a digest of
the emotions they were read on, so a stopped run resumes at the next shift, and only for the same adapters,
test file and emotions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from utils.ecf import artifacts, baselines, config, data, decision
from utils.ecf.metric import score_subtask2
from utils.env import resolve
from utils.io import file_sha256, read_json, write_json_atomic

# the emotion curve is cheap (no cause pass): a finer grid than the cause passes'
EMOTION_SHIFTS = tuple(float(x) for x in np.round(np.arange(-3.0, 1.01, 0.25), 2))


def labelled_at(convs: list[dict], logprobs: dict[Any, list[list[float]]], offsets: dict[str, float] | None,
                shift: float) -> list[dict]:
    """``convs`` without pairs, their emotions decided from ``logprobs`` after ``offsets`` and ``shift``."""
    return [data.with_pairs(c, []) for c in decision.relabel(convs, logprobs, decision.shifted(offsets, shift))]


def emotion_curve(gold: list[dict], logprobs: dict[Any, list[list[float]]], offsets: dict[str, float] | None,
                  shifts: Sequence[float] = EMOTION_SHIFTS) -> list[dict]:
    """Per neutral shift: the emotion weighted F1 and the share of utterances read as emotional."""
    rows = []
    for shift in shifts:
        labelled = labelled_at(gold, logprobs, offsets, shift)
        rows.append({"neutral_shift": float(shift), "emotion_weighted_f1": decision.emotion_weighted_f1(labelled, gold),
                     "emotional_share": emotional_share(labelled)})
    return rows


def emotional_share(convs: list[dict]) -> float:
    utts = [u for c in convs for u in c["conversation"]]
    return sum(u.get("emotion", "neutral") != "neutral" for u in utts) / max(1, len(utts))


def heuristic_f1(labelled: list[dict], gold: list[dict]) -> float:
    """Self + previous on ``labelled``'s emotions, scored against ``gold``."""
    return score_subtask2(baselines.self_and_previous_causes(labelled), gold)["weighted_f1"]


def pair_row(labelled: list[dict], gold: list[dict], probs: list[list], cutoffs: float | dict[str, float],
             oracle: bool = False, fallback: str = "none") -> dict:
    """The model's pairs above ``cutoffs`` (with ``fallback`` for an emotional utterance left without one) and
    self + previous on the same emotions; with ``oracle``, also cut-offs of the same kind (one, or one per
    distance) tuned on ``gold`` itself (a diagnosis, never a rule)."""
    s = decision.pair_scores(labelled, probs, gold, cutoffs, fallback)
    row = {"threshold": cutoffs, "weighted_f1": s["weighted_f1"], "weighted_precision": s["weighted_precision"],
           "weighted_recall": s["weighted_recall"], "self_previous_f1": heuristic_f1(labelled, gold),
           "emotion_weighted_f1": decision.emotion_weighted_f1(labelled, gold),
           "emotional_share": emotional_share(labelled)}
    row["margin"] = row["weighted_f1"] - row["self_previous_f1"]
    if oracle:
        best = decision.choose_cutoffs(gold, probs, isinstance(cutoffs, dict), inputs=labelled, fallback=fallback)
        row.update(oracle_threshold=best["threshold"], oracle_f1=best["weighted_f1"])
    return row


def rule_rows(rule: dict) -> list[dict]:
    """04's end-to-end table rows of the fallback the rule chose, one per shift: the points of its curve."""
    return [r for r in rule["table"] if r["fallback"] == rule["fallback"]]


def val_rows(val: list[dict], logprobs: dict[Any, list[list[float]]], rule: dict) -> list[dict]:
    """Per shift of 04's end-to-end table (the rows of the rule's fallback: model pair F1 and the cut-offs val
    chose), with self + previous on the same val emotions beside each. The table's numbers are 04's; the
    emotions are decided again here, and must be the ones 04 scored (same val, same logprobs)."""
    if len(val) != rule.get("conversations", len(val)):
        raise ValueError(f"val has {len(val)} conversations, 04 chose its end-to-end rule on {rule['conversations']}: "
                         "run with the DATA_PATH, SPLIT, SEED, VAL_FRAC and LIMIT notebook 04 used")
    offsets = _base_offsets(rule)
    rows = []
    for r in rule_rows(rule):
        labelled = labelled_at(val, logprobs, offsets, r["neutral_shift"])
        emotion_f1 = decision.emotion_weighted_f1(labelled, val)
        if abs(emotion_f1 - r["emotion_weighted_f1"]) > 1e-9:
            raise ValueError(f"shift {r['neutral_shift']:+g}: the val emotions decided here score {emotion_f1:.6f}, "
                             f"04 recorded {r['emotion_weighted_f1']:.6f}: 02's record changed after 04 chose its rule")
        sp = heuristic_f1(labelled, val)
        rows.append({**{k: r[k] for k in ("neutral_shift", "threshold", "weighted_f1", "weighted_precision",
                                            "weighted_recall", "emotion_weighted_f1", "emotional_share")},
                     "self_previous_f1": sp, "margin": r["weighted_f1"] - sp})
    return rows


def _base_offsets(rule: dict) -> dict[str, float]:
    """02's offsets: the rule's offsets less its neutral shift."""
    return decision.shifted(rule["offsets"], -rule["neutral_shift"])


def test_rows(test: list[dict], logprobs: dict[Any, list[list[float]]], rule: dict,
              cause_probs: Callable[[float, list[dict]], list[list]]) -> list[dict]:
    """Per shift of 04's table: the test's emotions at that shift, the cause model's P(yes) on them
    (``cause_probs(shift, conversations)``), scored with the cut-offs val chose for that shift."""
    offsets, rows = _base_offsets(rule), []
    for r in rule_rows(rule):
        labelled = labelled_at(test, logprobs, offsets, r["neutral_shift"])
        rows.append({"neutral_shift": r["neutral_shift"],
                     **pair_row(labelled, test, cause_probs(r["neutral_shift"], labelled), r["threshold"], oracle=True,
                                fallback=rule["fallback"])})
    return rows


def plot(record: dict, path: str | Path, show: bool = False) -> Path:
    """Three panels by neutral shift, val and test: emotion weighted F1; pair weighted F1 of the model and of self +
    previous; the model's margin over the heuristic against issue 23's +0.02."""
    import matplotlib.pyplot as plt

    from utils.plots import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    chosen = record["rule"]["neutral_shift"]
    for split, style in (("val", "-"), ("test", "--")):
        e = record[split]["emotion_curve"]
        axes[0].plot([r["neutral_shift"] for r in e], [r["emotion_weighted_f1"] for r in e], style, marker=".",
                     label=f"{split}")
        rows = record[split]["pairs"]
        x = [r["neutral_shift"] for r in rows]
        axes[1].plot(x, [r["weighted_f1"] for r in rows], style, marker="o", color="C0", label=f"model, {split}")
        axes[1].plot(x, [r["self_previous_f1"] for r in rows], style, marker="s", color="C1",
                     label=f"self + previous, {split}")
        axes[2].plot(x, [r["margin"] for r in rows], style, marker="o", color="C2" if split == "val" else "C3",
                     label=f"model - self + previous, {split}")
        gold = record[split].get("gold_emotions")
        if gold:
            axes[2].axhline(gold["margin"], linestyle=style, color="grey", linewidth=1,
                            label=f"the same on gold emotions, {split}")
    test_oracle = record["test"]["pairs"]
    axes[1].plot([r["neutral_shift"] for r in test_oracle], [r["oracle_f1"] for r in test_oracle], ":", marker="^",
                 color="C0", label="model, test, cut-offs chosen on the test")
    axes[2].axhline(0.02, color="black", linewidth=1, label="issue 23's target, +0.02")
    axes[2].axhline(0.0, color="black", linewidth=0.5)
    titles = ("emotion weighted F1", "pair weighted F1 (end to end)", "model's margin over self + previous")
    for ax, title in zip(axes, titles):
        ax.axvline(chosen, color="grey", linewidth=0.8, linestyle=":")
        ax.set(title=title, xlabel="neutral shift (negative: more utterances emotional)")
        ax.legend(fontsize=7)
    fig.suptitle(f"End-to-end rule chosen on val (shift {chosen:+g}, dotted line); test: the official evaluation set")
    fig.tight_layout()
    return save_figure(fig, path, show=show)


def _cfg(args: argparse.Namespace) -> config.CauseInferenceConfig:
    return config.CauseInferenceConfig(DATA_PATH=args.data_path, TEST_PATH=args.test_path,
                                       CHECKPOINT_DIR=args.checkpoint_dir, MODEL=args.model, STYLE="conversation")


def inputs_stamp(cfg: config.CauseInferenceConfig) -> dict[str, str]:
    """sha256 of both adapters' weights and of the test file: what the saved reads under ``--out`` depend on
    (the task records' fingerprints hash the settings, which a retraining with the same settings keeps)."""
    from utils.lm import modeling

    stamp = {}
    for task in ("emotion", "cause"):
        weights = artifacts.adapter_dir(cfg, task) / modeling.ADAPTER_WEIGHTS
        if not weights.is_file():
            raise SystemExit(f"bench.curves: no {weights}: train the {task} adapter first (README, Rendered pages)")
        stamp[task] = file_sha256(weights)
    stamp["test"] = file_sha256(resolve(cfg.TEST_PATH))
    return stamp


def claim_out(out: Path, adapters: dict[str, Any]) -> None:
    """Stamp ``out`` with ``adapters`` (inputs_stamp); refuse a folder whose saved reads were made from other
    (or unknown) inputs.

    The saved reads are resumed only for the inputs that made them: a stopped run resumes, but a rerun after
    retraining into the same ``--out`` would otherwise mix the old model's probabilities into the new curves.
    """
    if not adapters or not all(adapters.values()):
        raise ValueError(f"bench.curves: an empty stamp {adapters} would match any other")
    stamp = out / "adapters.json"
    if stamp.is_file():
        if read_json(stamp) != adapters:
            raise SystemExit(f"bench.curves: {out} holds the reads of other adapters ({read_json(stamp)}, these are "
                             f"{adapters}): choose another --out or empty it")
    elif (out / "test_emotion_logprobs.json").exists() or any((out / "probs").glob("*.json")):
        raise SystemExit(f"bench.curves: {out} holds saved reads without {stamp.name}, so which adapters made them is "
                         "unknown: choose another --out or empty it")
    write_json_atomic(stamp, adapters)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", required=True, help="the training file the adapters were trained on (its val split)")
    p.add_argument("--test-path", required=True, help="the annotated evaluation file, e.g. data/ecf/Subtask_2_test.json")
    p.add_argument("--checkpoint-dir", required=True, help="where 02 and 04 left their adapters (CHECKPOINT_DIR)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--out", default="results_test/curves")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)

    from utils.ecf import finetune, predict
    from utils.lm import modeling

    cfg, out = _cfg(args), Path(args.out)
    splits = artifacts.load_splits(cfg)
    val, test = splits["val"], splits["test"]
    emotion_task, why = finetune.emotion_val_record(cfg, val)
    if emotion_task is None:
        raise SystemExit(f"bench.curves: {why}")
    cause_task = artifacts.read_task(cfg, "cause")
    rule = cause_task.get("end_to_end")
    if not rule:
        raise SystemExit(f"bench.curves: {artifacts.task_dir(cfg, 'cause')} has no end-to-end rule: run notebook 04")
    adapters = inputs_stamp(cfg)
    claim_out(out, adapters)
    tokenizer = modeling.load_tokenizer(cfg.MODEL)
    t0 = time.perf_counter()

    logprobs_path = out / "test_emotion_logprobs.json"
    test_logprobs = artifacts.read_logprobs(logprobs_path)
    if test_logprobs is None:
        model = modeling.load_model(cfg.MODEL, adapter=artifacts.adapter_dir(cfg, "emotion"))
        rows = predict.emotion_logprobs(model, tokenizer, data.strip_labels(test), emotion_task["max_length"],
                                        args.batch_size, **predict.recorded(emotion_task))
        artifacts.write_logprobs(logprobs_path, test, rows)
        test_logprobs = artifacts.read_logprobs(logprobs_path)
        del model
    loaded: list = []  # the cause model, loaded at the first shift not saved yet

    def read_causes(convs: list[dict]) -> list[list]:
        if not loaded:
            loaded.append(modeling.load_model(cfg.MODEL, adapter=artifacts.adapter_dir(cfg, "cause")))
        found = predict.predict_causes(loaded[0], tokenizer, convs, "conversation", args.batch_size, None,
                                       cause_task["max_length"], 0.5, cause_task["window_before"],
                                       cause_task["window_after"], **predict.recorded(cause_task))
        print(f"[curves] {time.perf_counter() - t0:.0f} s", flush=True)
        return found.probs

    def cause_probs(tag: str, convs: list[dict]) -> list[list]:
        return saved_probs(out / "probs" / f"{tag}.json", convs, read_causes)

    base = _base_offsets(rule)
    gold_test = [data.with_pairs(c, []) for c in test]
    record = {
        "rule": {k: rule[k] for k in ("neutral_shift", "threshold", "fallback", "weighted_f1", "emotion_weighted_f1")},
        "adapters": adapters,
        "val": {"conversations": len(val), "emotion_curve": emotion_curve(val, emotion_task["val_logprobs"], base),
                "pairs": val_rows(val, emotion_task["val_logprobs"], rule),
                "gold_emotions": _gold_val(val, cause_task)},
        "test": {"conversations": len(test), "emotion_curve": emotion_curve(test, test_logprobs, base),
                 "pairs": test_rows(test, test_logprobs, rule, lambda s, c: cause_probs(f"shift_{s:+g}", c)),
                 "gold_emotions": pair_row(gold_test, test, cause_probs("gold", gold_test),
                                           cause_task["threshold"], oracle=True)},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_json_atomic(out / "curves.json", record)
    plot(record, out / "curves.png")
    print(summary(record))
    return 0


def saved_probs(path: Path, convs: list[dict], read: Callable[[list[dict]], list[list]]) -> list[list]:
    """The cause probabilities saved at ``path`` if they were read on ``convs``' emotions, else ``read(convs)``
    saved there (atomically) with the digest of those emotions: a stopped run goes on from the next shift."""
    digest = data.emotions_digest(convs)
    if path.is_file():
        saved = read_json(path)
        if isinstance(saved, dict) and saved.get("emotions") == digest:
            return saved["probs"]
        print(f"[curves] {path} was read on other emotions: reading again", flush=True)
    probs = read(convs)
    write_json_atomic(path, {"emotions": digest, "probs": probs})
    return probs


def _gold_val(val: list[dict], cause_task: dict) -> dict | None:
    """Val on gold emotions, as 04 recorded it (its cut-offs chosen there), beside self + previous."""
    tuning = cause_task.get("threshold_tuning") or {}
    if "weighted_f1" not in tuning:
        return None
    sp = heuristic_f1([data.with_pairs(c, []) for c in val], val)
    return {"weighted_f1": tuning["weighted_f1"], "self_previous_f1": sp, "margin": tuning["weighted_f1"] - sp}


def summary(record: dict) -> str:
    """One line per split and shift: what the closing note and RESULTS quote."""
    lines = [f"rule chosen on val: shift {record['rule']['neutral_shift']:+g}, cut-offs {record['rule']['threshold']}"]
    for split in ("val", "test"):
        best = max(record[split]["emotion_curve"], key=lambda r: r["emotion_weighted_f1"])
        lines.append(f"{split}: best emotion weighted F1 {best['emotion_weighted_f1']:.4f} at shift "
                     f"{best['neutral_shift']:+g} ({best['emotional_share']:.1%} emotional)")
        for r in record[split]["pairs"]:
            extra = f", cut-offs chosen on the test {r['oracle_f1']:.4f}" if "oracle_f1" in r else ""
            lines.append(f"  shift {r['neutral_shift']:+g}: emotion {r['emotion_weighted_f1']:.4f}, model "
                         f"{r['weighted_f1']:.4f}, self + previous {r['self_previous_f1']:.4f}, margin "
                         f"{r['margin']:+.4f}{extra}")
        gold = record[split].get("gold_emotions")
        if gold:
            lines.append(f"  gold emotions: model {gold['weighted_f1']:.4f}, self + previous "
                         f"{gold['self_previous_f1']:.4f}, margin {gold['margin']:+.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
