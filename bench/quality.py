"""Quality runs on held-out conversations: ``python -m bench.quality {emotion,cause,spans} --help``.

One run trains one stage with the notebooks' own code (``utils.ecf.finetune``, ``utils.ecf.predict``), keeps a checkpoint
every ``--save-steps`` steps, and scores each checkpoint on the val and test splits: the raw
per-utterance log-probabilities (emotions) or P(yes) per candidate (causes) are saved, so every
decision rule is measured on the same model outputs, the rule's settings chosen on val only.
Writes ``<out>/quality.json``: one row per checkpoint and rule, with the training tokens seen,
for the learning curve. Nothing here is a constant: each number is this run's.

A finished run's ``<out>/ckpt`` is then what notebook 02 or 04 would have left: the adapter and a task
record (``task.json``) holding the rule the notebook chooses on val (per-emotion offsets for weighted F1;
per-distance cut-offs), taken from the last checkpoint's row. So notebooks 03, 05 and 06 run on a quality
run's models (``CHECKPOINT_DIR``), which is how ``utils.docs`` renders their pages. ``python -m
bench.quality export RUN`` writes that record for a run scored before it existed.

``spans`` trains the Subtask 1 span reads alone (``utils.ecf.spans.span_examples``: one yes/no per clause
candidate of each gold cause, a span-only adapter) and scores each checkpoint's spans with strict and
proportional F1 against a test file with spans (``Subtask_1_test.json``), on the gold pairs and, with
``--pairs-from`` a cause run, end to end on that run's pairs; every span rule is scored beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from utils.ecf import artifacts, baselines, config, data, decision, examples, finetune, predict, prompts
from utils.ecf import spans as span_reads
from utils.lm import modeling, training
from utils.lm.batch import ANSWER_WEIGHTINGS
from utils.io import read_json, write_json_atomic
from utils.ecf.metric import emotion_scores, score_subtask1, score_subtask2


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=("emotion", "cause", "spans"))
    ap.add_argument("--data", default=str(data.SAMPLE_PATH))
    ap.add_argument("--split", default="block", choices=data.SPLITS)
    ap.add_argument("--test-path", default="", help="a separate test file (the official evaluation set); "
                    "--data then gives train and val only")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="smollm2")
    d = config.FinetuneConfig  # the notebooks' defaults
    ap.add_argument("--epochs", type=float, default=d.EPOCHS)
    ap.add_argument("--max-steps", type=int, default=d.MAX_STEPS)
    ap.add_argument("--lr", type=float, default=d.LEARNING_RATE)
    ap.add_argument("--batch-size", type=int, default=d.BATCH_SIZE)
    ap.add_argument("--lora-r", type=int, default=d.LORA_R)
    ap.add_argument("--lora-alpha", type=int, default=d.LORA_ALPHA)
    ap.add_argument("--targets", default=d.LORA_TARGETS)
    ap.add_argument("--class-weighting", default=d.CLASS_WEIGHTING, choices=ANSWER_WEIGHTINGS,
                    help="emotion/cause: the loss weight of each label by its training frequency (CLASS_WEIGHTING)")
    ap.add_argument("--save-steps", type=int, default=70)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--limit", type=int, default=0, help="first N train conversations (0: all)")
    ap.add_argument("--eval-only", action="store_true", help="score the checkpoints already in --out")
    ap.add_argument("--train-out", default="", help="with --eval-only: the run whose checkpoints to score "
                    "(default: --out itself)")
    ap.add_argument("--emotions-from", default="", help="cause: an emotion run's folder; its test predictions "
                    "(best rule, last checkpoint) give the end-to-end inputs")
    ap.add_argument("--cause-layout", default=prompts.CAUSE_LAYOUT, choices=prompts.CAUSE_LAYOUTS,
                    help="cause: where the cause lines go (notebook 04's CAUSE_LAYOUT)")
    ap.add_argument("--pairs-from", default="", help="spans: a cause run scored with --emotions-from on the same test "
                    "conversations; its pairs (last checkpoint, notebook 04's rule) give the end-to-end rows")
    ap.add_argument("--cause-emotions", default="gold", choices=config.CAUSE_EMOTION_SOURCES,
                    help="cause: emotions the cause model trains on (predicted: --emotions-from's train labels, "
                    "from an emotion run with --label-train)")
    ap.add_argument("--emotion-format", default=prompts.EMOTION_FORMAT, choices=list(prompts.EMOTION_FORMATS),
                    help="emotion: the line format (notebook 02's EMOTION_FORMAT)")
    ap.add_argument("--label-train", action="store_true", help="emotion: the last checkpoint also labels the "
                    "train split (what a cause run with --cause-emotions predicted trains on, as notebook 03 does)")
    return ap.parse_args(argv)


def _config(a: argparse.Namespace, task: str):
    cls = config.FinetuneConfig if task == "emotion" else config.CauseFinetuneConfig
    extra = ({"EMOTION_FORMAT": getattr(a, "emotion_format", prompts.EMOTION_FORMAT)} if task == "emotion" else
             {"CAUSE_EMOTIONS": a.cause_emotions, "CAUSE_LAYOUT": getattr(a, "cause_layout", prompts.CAUSE_LAYOUT)})
    return cls(DATA_PATH=a.data, CHECKPOINT_DIR=str(Path(getattr(a, "train_out", "") or a.out) / "ckpt"), MODEL=a.model, SEED=a.seed, SPLIT=a.split,
               TEST_PATH=getattr(a, "test_path", ""),
               EPOCHS=a.epochs, MAX_STEPS=a.max_steps, LEARNING_RATE=a.lr, BATCH_SIZE=a.batch_size,
               LORA_R=a.lora_r, LORA_ALPHA=a.lora_alpha, LORA_TARGETS=a.targets, SAVE_STEPS=a.save_steps,
               LIMIT=a.limit, CLASS_WEIGHTING=getattr(a, "class_weighting", "none"), **extra)


# the rules notebooks 02 and 04 choose on val by default (tune_offsets' objective, CAUSE_CUTOFFS)
NOTEBOOK_RULES = {"emotion": f"offsets_{decision.OBJECTIVES[0]}", "cause": config.CauseFinetuneConfig.CAUSE_CUTOFFS}


PATH_ARGS = ("data", "test_path", "out", "train_out", "emotions_from", "pairs_from")


def export(run: Path) -> Path:
    """Write the task record notebooks 03 and 05 load beside a finished run's adapter: the run's settings,
    and the notebook's default rule as the last checkpoint's val chose it. Returns the record's path."""
    info = read_json(run / "quality.json")
    a = argparse.Namespace(**info["args"])
    task, cfg = a.task, _config(a, a.task)
    folder = artifacts.task_dir(cfg, task)
    rows = info.get("checkpoints") or []
    if not rows or not (folder / "adapter").is_dir():
        raise FileNotFoundError(f"{run}: no scored checkpoint or no {folder / 'adapter'}; finish the run first")
    last = rows[-1]
    if last["checkpoint"] != _checkpoints(folder)[-1].name:
        raise ValueError(f"{run}: the last scored row is {last['checkpoint']}, the adapter is "
                         f"{_checkpoints(folder)[-1].name}'s: score the run again (--eval-only)")
    rule = last["rules"][NOTEBOOK_RULES[task]]
    extra = {"offsets": rule["offsets"]} if task == "emotion" else {"threshold": rule["cutoffs"]}
    training_info = info.get("training", {})
    extra.update(train_tokens=last["tokens"], global_step=int(last["checkpoint"].split("-")[1]),
                 train_wall_s=training_info.get("train_wall_s"),
                 quality_run={"rule": NOTEBOOK_RULES[task], "val": rule["val"], "checkpoint": last["checkpoint"],
                              # files by name only: the record is shown in notebooks and rendered pages
                              "args": {k: Path(v).name if k in PATH_ARGS and v else v for k, v in info["args"].items()}})
    return artifacts.write_task(cfg, task, extra)


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def _tokens_seen(ckpt: Path) -> int:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen", 0))


def _run_info(a: argparse.Namespace, splits: dict[str, list[dict]]) -> dict:
    """The head of a run's quality.json: the split, its sizes and the run's arguments."""
    return {"split": a.split, "sizes": {k: len(v) for k, v in splits.items()}, "args": vars(a)}


def _train(task: str, cfg, train_convs: list[dict]) -> dict:
    tokenizer = modeling.load_tokenizer(cfg.MODEL)
    if task == "spans":
        train_ex = span_reads.span_examples(train_convs, tokenizer, cfg.MAX_LENGTH)
        task = "cause"  # the span-only adapter goes where notebook 04's would
    else:
        train_ex = examples.task_examples(cfg, task, train_convs, tokenizer)
    tcfg = dataclasses.replace(finetune.train_config(cfg, task), save_total_limit=None)
    result = training.train(cfg.MODEL, train_ex, None, tcfg)  # val is scored below, per checkpoint
    return {"train_tokens": result.train_tokens, "train_wall_s": result.wall_s, "tokens_per_s": result.tokens_per_s,
            "global_step": result.global_step, "peak_memory_mb": result.peak_memory_mb,
            "examples": len(train_ex)}


# ---------------------------------------------------------------- emotions

def _flat(convs: list[dict], logprobs) -> tuple[np.ndarray, list[str]]:
    rows = np.array([row for conv_rows in logprobs for row in conv_rows])
    gold = [u["emotion"] for c in convs for u in c["conversation"]]
    return rows, gold


def _emotion_rules(val_lp, val_gold, test_lp, test_gold) -> dict[str, dict]:
    rules = {"argmax": None}
    for objective in decision.OBJECTIVES:
        rules[f"offsets_{objective}"] = decision.tune_offsets(val_lp, val_gold, objective)["offsets"]
    out = {}
    for name, offsets in rules.items():
        vec = decision.offsets_vector(offsets)
        test = emotion_scores(test_gold, decision.decide(test_lp, vec))
        val = emotion_scores(val_gold, decision.decide(val_lp, vec))
        out[name] = {"offsets": offsets,
                     "val": {k: val[k] for k in ("accuracy", "weighted_f1", "macro_f1")},
                     "test": {k: test[k] for k in ("accuracy", "weighted_f1", "macro_f1")},
                     "test_per_class_f1": {e: test["report"][e]["f1-score"] for e in data.EMOTIONS},
                     "test_pred_share": {e: float(np.mean([p == e for p in decision.decide(test_lp, vec)]))
                                         for e in data.EMOTIONS}}
    return out


def emotion(a) -> dict:
    out = Path(a.out)
    cfg = _config(a, "emotion")
    splits = artifacts.load_splits(cfg)
    info = _run_info(a, splits)
    if not a.eval_only:
        info["training"] = _train("emotion", cfg, splits["train"])
    tokenizer = modeling.load_tokenizer(cfg.MODEL)
    rows = []
    ckpts = _checkpoints(artifacts.task_dir(cfg, "emotion"))
    for ckpt in ckpts:
        t0 = time.perf_counter()
        model = modeling.load_model(cfg.MODEL, adapter=ckpt)
        names = ("val", "test", "train") if a.label_train and ckpt == ckpts[-1] else ("val", "test")
        lp = {name: predict.emotion_logprobs(model, tokenizer, data.strip_labels(splits[name]), cfg.MAX_LENGTH,
                                             fmt=cfg.EMOTION_FORMAT)
              for name in names}
        write_json_atomic(out / "scores" / ckpt.name / "logprobs.json", lp)
        val_lp, val_gold = _flat(splits["val"], lp["val"])
        test_lp, test_gold = _flat(splits["test"], lp["test"])
        rules = _emotion_rules(val_lp, val_gold, test_lp, test_gold)
        row = {"checkpoint": ckpt.name, "tokens": _tokens_seen(ckpt), "score_s": round(time.perf_counter() - t0, 1),
               "rules": rules}
        rows.append(row)
        print(json.dumps({"checkpoint": ckpt.name, "tokens": row["tokens"],
                          **{r: v["test"] for r, v in rules.items()}}), flush=True)
    majority = baselines.majority_label(splits["train"])
    info["majority"] = {k: emotion_scores([u["emotion"] for c in splits["test"] for u in c["conversation"]],
                                          [majority] * sum(len(c["conversation"]) for c in splits["test"]))[k]
                        for k in ("accuracy", "weighted_f1", "macro_f1")}
    info["checkpoints"] = rows
    write_json_atomic(out / "quality.json", info)
    if not a.eval_only:
        export(out)
    return info


def best_emotion_predictions(run: Path, split: str = "test", rule: str = "offsets_weighted_f1") -> list[dict]:
    """An emotion run's labelled ``split`` conversations (last checkpoint, ``rule``)."""
    info = read_json(run / "quality.json")
    a = argparse.Namespace(**info["args"])
    splits = artifacts.load_splits(_config(a, "emotion"))
    last = info["checkpoints"][-1]
    saved = read_json(run / "scores" / last["checkpoint"] / "logprobs.json")
    if split not in saved:
        raise ValueError(f"{run}: its last checkpoint did not label the {split} split; run it again with "
                         f"--eval-only --label-train" if split == "train" else f"{run}: no {split} log-probs")
    lp = saved[split]
    vec = decision.offsets_vector(last["rules"][rule]["offsets"])
    return [data.with_pairs(data.with_emotions(c, decision.decide(np.array(rows), vec)), [])
            for c, rows in zip(splits[split], lp)]


# ---------------------------------------------------------------- causes

def _cause_rules(val: list[dict], val_probs: list[list]) -> dict:
    """The single val cut-off and the per-distance ones (notebook 04's two CAUSE_CUTOFFS rules)."""
    tuning = decision.choose_cutoffs(val, val_probs)
    return {"one": tuning["single_threshold"], "per_distance": tuning["threshold"]}


def _score(inputs: list[dict], probs: list[list], gold: list[dict], cut) -> dict:
    s = decision.pair_scores(inputs, probs, gold, cut)
    return {k: s[k] for k in ("weighted_f1", "weighted_precision", "weighted_recall", "f1_pair", "n_pred_pairs")}


def _cause_probs(model, tokenizer, convs: list[dict], cfg) -> dict:
    return predict.predict_causes(model, tokenizer, [data.with_pairs(c, []) for c in convs],
                                  "conversation", 8, None, cfg.MAX_LENGTH, layout=cfg.CAUSE_LAYOUT).probs


def cause(a) -> dict:
    out = Path(a.out)
    cfg = _config(a, "cause")
    splits = artifacts.load_splits(cfg)
    predicted = best_emotion_predictions(Path(a.emotions_from)) if a.emotions_from else None
    info = _run_info(a, splits)
    if not a.eval_only:
        train_convs = splits["train"]
        if a.cause_emotions == "predicted":
            train_convs = best_emotion_predictions(Path(a.emotions_from), "train")
            train_convs = artifacts.with_predicted_emotions(splits["train"], train_convs)
        info["training"] = _train("cause", cfg, train_convs)
    tokenizer = modeling.load_tokenizer(cfg.MODEL)
    test_sets = {"gold": splits["test"]}
    if predicted is not None:
        test_sets["predicted"] = artifacts.with_predicted_emotions(splits["test"], predicted)
    rows = []
    for ckpt in _checkpoints(artifacts.task_dir(cfg, "cause")):
        t0 = time.perf_counter()
        model = modeling.load_model(cfg.MODEL, adapter=ckpt)
        val_probs = _cause_probs(model, tokenizer, splits["val"], cfg)
        rules = _cause_rules(splits["val"], val_probs)
        row = {"checkpoint": ckpt.name, "tokens": _tokens_seen(ckpt), "rules": {}}
        probs = {}
        for name, convs in test_sets.items():
            probs[name] = _cause_probs(model, tokenizer, convs, cfg)
        write_json_atomic(out / "scores" / ckpt.name / "probs.json", {"val": val_probs, **probs})
        for rule, cut in rules.items():
            row["rules"][rule] = {"cutoffs": cut, "val": _score(splits["val"], val_probs, splits["val"], cut),
                                  **{f"test_{n}": _score(test_sets[n], probs[n], splits["test"], cut) for n in probs}}
        row["score_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps({"checkpoint": ckpt.name, "tokens": row["tokens"],
                          **{r: {k: v[k]["weighted_f1"] for k in v if k.startswith(("test", "val"))}
                             for r, v in row["rules"].items()}}), flush=True)
    info["baselines"] = {f"self_and_previous_{n}": {k: score_subtask2(baselines.self_and_previous_causes(c),
                                                                      splits["test"])[k]
                                                     for k in ("weighted_f1", "f1_pair", "n_pred_pairs")}
                         for n, c in test_sets.items()}
    info["baselines"]["self_and_previous_val"] = score_subtask2(
        baselines.self_and_previous_causes(splits["val"]), splits["val"])["weighted_f1"]
    info["checkpoints"] = rows
    write_json_atomic(out / "quality.json", info)
    print(json.dumps(info["baselines"]), flush=True)
    if not a.eval_only:
        export(out)
    return info


def _same_conversations(convs: list[dict], test: list[dict], what: str, test_name: str) -> None:
    if [c["conversation_ID"] for c in convs] != [c["conversation_ID"] for c in test]:
        raise ValueError(f"{what}: not the conversations of {test_name}, in the same order")


def rescore(run: Path, gold_path: str) -> dict:
    """A finished cause run's saved test P(yes), at the cut-offs its val chose, scored against another
    annotation of the same test conversations (``Subtask_1_test.json``: the causes with a text span, the
    definition the training file follows), beside self + previous on the same inputs."""
    info = read_json(run / "quality.json")
    a = argparse.Namespace(**info["args"])
    if a.task != "cause":
        raise ValueError(f"{run}: rescore takes a cause run, this is a {a.task} run")
    splits = artifacts.load_splits(_config(a, "cause"))
    gold = data.load_ecf(gold_path)
    _same_conversations(gold, splits["test"], gold_path, a.test_path or "the run's test split")
    inputs = {"gold": splits["test"]}
    if a.emotions_from:
        inputs["predicted"] = artifacts.with_predicted_emotions(splits["test"], best_emotion_predictions(Path(a.emotions_from)))
    out = {"gold_file": Path(gold_path).name, "checkpoints": []}
    for row in info["checkpoints"]:
        probs = read_json(run / "scores" / row["checkpoint"] / "probs.json")
        out["checkpoints"].append({"checkpoint": row["checkpoint"], "tokens": row["tokens"], **{
            rule: {f"test_{n}": _score(convs, probs[n], gold, r["cutoffs"])["weighted_f1"] for n, convs in inputs.items()}
            for rule, r in row["rules"].items()}})
    out["baselines"] = {f"self_and_previous_{n}": score_subtask2(baselines.self_and_previous_causes(convs), gold)["weighted_f1"]
                        for n, convs in inputs.items()}
    return out


# ---------------------------------------------------------------- spans (Subtask 1)

SPAN_SCORES = ("weighted_strict_f1", "weighted_proportional_f1", "strict_f1", "proportional_f1")


def _span_scores(pred: list[dict], gold: list[dict]) -> dict:
    s = score_subtask1(pred, gold)
    return {k: s[k] for k in SPAN_SCORES}


def end_to_end_pairs(run: Path) -> list[dict]:
    """A cause run's end-to-end prediction of its test conversations: its emotion run's labels, and the pairs
    whose P(yes) (last checkpoint) passes the cut-offs of notebook 04's rule as val chose them."""
    info = read_json(run / "quality.json")
    a = argparse.Namespace(**info["args"])
    if a.task != "cause" or not a.emotions_from or not info.get("checkpoints"):
        raise ValueError(f"{run}: --pairs-from takes a finished cause run scored with --emotions-from")
    splits = artifacts.load_splits(_config(a, "cause"))
    last = info["checkpoints"][-1]
    cut = last["rules"][NOTEBOOK_RULES["cause"]]["cutoffs"]
    probs = read_json(run / "scores" / last["checkpoint"] / "probs.json")["predicted"]
    inputs = artifacts.with_predicted_emotions(splits["test"], best_emotion_predictions(Path(a.emotions_from)))
    return decision.with_pairs_above(inputs, probs, cut)


def spans(a) -> dict:
    out = Path(a.out)
    cfg = _config(a, "cause")
    splits = artifacts.load_splits(cfg)
    test, test_name = splits["test"], a.test_path or "the test split"
    for name, where in (("train", a.data), ("test", test_name)):
        if not span_reads.has_spans(splits[name]):
            raise ValueError(f"{where}: its {name} conversations carry no cause spans (cause_spans): give a Subtask 1 file")
    inputs = {"gold_pairs": test}
    if a.pairs_from:
        inputs["end_to_end"] = end_to_end_pairs(Path(a.pairs_from))
        _same_conversations(inputs["end_to_end"], test, a.pairs_from, test_name)
    gold = span_reads.gold_files(test)["Subtask_1_gold.json"]
    chosen, _ = span_reads.choose_rule(splits["val"])
    info = {**_run_info(a, splits), "val_rule": chosen,
            "rules": {n: {r: _span_scores(span_reads.subtask1_predictions(convs, r), gold) for r in span_reads.RULES}
                      for n, convs in inputs.items()}}
    if not a.eval_only:
        info["training"] = _train("spans", cfg, splits["train"])
    tokenizer = modeling.load_tokenizer(cfg.MODEL)
    rows = []
    for ckpt in _checkpoints(artifacts.task_dir(cfg, "cause")):
        t0 = time.perf_counter()
        lm = predict.reader(modeling.load_model(cfg.MODEL, adapter=ckpt), tokenizer)
        row = {"checkpoint": ckpt.name, "tokens": _tokens_seen(ckpt),
               **{n: _span_scores(span_reads.predict_spans(lm, tokenizer, convs, cfg.MAX_LENGTH), gold)
                  for n, convs in inputs.items()}}
        row["score_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    info["checkpoints"] = rows
    write_json_atomic(out / "quality.json", info)
    return info


def report(runs: list[str]) -> str:
    """Markdown rows of finished runs: one per checkpoint and rule, test scores beside val."""
    lines = []
    for run in runs:
        info = read_json(Path(run) / "quality.json")
        name = Path(run).name
        if info["args"]["task"] == "spans":  # strict and proportional weighted F1 per test set
            sets = list(info["rules"])
            for row in info["checkpoints"]:
                lines.append(f"| {name} | {row['tokens']:,} | span reads | " + " | ".join(
                    f"{row[n]['weighted_strict_f1']:.3f} | {row[n]['weighted_proportional_f1']:.3f}" for n in sets) + " |")
            for rule in span_reads.RULES:
                lines.append(f"| {name} | | {rule}{' (val)' if rule == info['val_rule'] else ''} | " + " | ".join(
                    f"{info['rules'][n][rule]['weighted_strict_f1']:.3f} | {info['rules'][n][rule]['weighted_proportional_f1']:.3f}"
                    for n in sets) + " |")
            continue
        for row in info["checkpoints"]:
            for rule, r in row["rules"].items():
                if "test" in r:  # emotions
                    cells = [r["val"]["weighted_f1"], r["test"]["weighted_f1"], r["test"]["macro_f1"],
                             r["test"]["accuracy"], r["test_pred_share"]["neutral"]]
                else:  # causes
                    cells = [r["val"]["weighted_f1"]] + [r[k]["weighted_f1"] for k in r if k.startswith("test_")]
                lines.append(f"| {name} | {row['tokens']:,} | {rule} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        if "majority" in info:
            m = info["majority"]
            lines.append(f"| {name} | | majority class | | {m['weighted_f1']:.3f} | {m['macro_f1']:.3f} | {m['accuracy']:.3f} |")
        for key, value in info.get("baselines", {}).items():
            v = value["weighted_f1"] if isinstance(value, dict) else value
            lines.append(f"| {name} | | {key} | {v:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        print(report(argv[1:]))
        return 0
    if argv[:1] == ["rescore"]:
        ap = argparse.ArgumentParser(prog="python -m bench.quality rescore")
        ap.add_argument("run")
        ap.add_argument("--gold", required=True, help="another annotation of the run's test conversations")
        r = ap.parse_args(argv[1:])
        print(json.dumps(rescore(Path(r.run), r.gold), indent=1))
        return 0
    if argv[:1] == ["export"]:
        for run in argv[1:]:
            print(f"[emocause] {export(Path(run))}", flush=True)
        return 0
    a = _args(argv)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    {"emotion": emotion, "cause": cause, "spans": spans}[a.task](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
