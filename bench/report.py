"""Markdown tables of one benchmark record (the JSON that bench.run.run_bench returns)."""

from __future__ import annotations

from typing import Any, Sequence

SCORE_NAMES = {"emotion": "emotion weighted F1", "cause": "pair weighted F1 (gold emotions)",
               "both": "pair weighted F1 (end to end)"}


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    """A table cell: thousands separators for integers, fixed decimals for floats, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def tokens_table(record: dict) -> str:
    """Training tokens per epoch, per stage and style (tokenization only)."""
    rows = [[v["stage"], v["style"], fmt(v["examples"]), fmt(v["tokens"]), fmt(v["answer_tokens"]),
             fmt(v["padded_tokens_grouped"]), fmt(v["padded_tokens_random"]), fmt(v["longest"]),
             fmt(v["steps_per_epoch"])] for v in record["variants"]]
    return table(["stage", "style", "sequences", "tokens / epoch", "loss tokens / epoch",
                  "padded, length-grouped", "padded, random", "longest", "steps / epoch"], rows)


def training_table(record: dict) -> str:
    """The timed training runs and the epoch time they project."""
    rows = []
    for v in record["variants"]:
        t = v["train"]
        rows.append([v["stage"], v["style"], fmt(t["steps"]), fmt(t["session_tokens"]), fmt(t["wall_s"]),
                     fmt(t["tokens_per_s"]), fmt(t["steady_tokens_per_s"]), fmt(t["steady_tokens_per_cpu_s"]),
                     fmt(t["projected_epoch_s"], 0),
                     f"{fmt(t['peak_mb'], 0)} ({fmt(t['delta_mb'], 0)})",
                     fmt(t["mfu"] * 100 if t["mfu"] is not None else None, 1, "%"),
                     f"{fmt(t['loss_first'], 2)} → {fmt(t['loss_last'], 2)}"])
    return table(["stage", "style", "steps", "tokens trained", "measured s", "tokens/s",
                  "tokens/s after step 1", "tokens / CPU-s after step 1", "projected s / epoch",
                  "peak MiB (phase Δ)", "MFU", "loss"], rows)


def inference_table(record: dict) -> str:
    """Inference over the eval conversations and the scores, baselines beside."""
    rows = []
    for v in record["variants"]:
        i, s = v["inference"], v["score"]
        base = s["baseline"] or {}
        rows.append([v["stage"], v["style"], fmt(i["n_prompts"]), fmt(i["prompt_tokens"]), fmt(i["wall_s"], 2),
                     fmt(i["cpu_s"], 1),
                     fmt(i["utterances_per_s"], 2), f"{fmt(i['valid_output_share'], 3)} ({i['n_outputs']:,})",
                     f"{fmt(i['peak_mb'], 0)} ({fmt(i['delta_mb'], 0)})",
                     f"{SCORE_NAMES[v['stage']]} {fmt(s['value'], 3)}",
                     f"{base.get('name', '-')} {fmt(base.get('value'), 3)}"])
    return table(["stage", "style", "prompts", "prompt tokens", "wall s", "CPU s", "utterances/s",
                  "valid share (outputs)", "peak MiB (phase Δ)", "score", "baseline"], rows)


def ratios_table(record: dict) -> str:
    """per_utterance ÷ conversation, per stage and overall (> 1: the default costs less)."""
    keys = [("train_tokens_ratio", "training tokens ÷"), ("loss_tokens_ratio", "loss tokens ÷"),
            ("padded_tokens_ratio", "padded tokens ÷"), ("projected_epoch_time_ratio", "projected epoch time ÷"),
            ("projected_epoch_cpu_time_ratio", "projected epoch CPU time ÷"),
            ("train_peak_memory_ratio", "training peak memory ÷"), ("inference_speedup", "inference speed-up"),
            ("inference_cpu_time_speedup", "inference CPU-time speed-up"),
            ("valid_output_share", "valid share, conversation"),
            ("valid_output_share_per_utterance", "valid share, per_utterance"),
            ("score_difference", "score, conversation − per_utterance")]
    stages = list(record["ratios"])
    present = [(k, name) for k, name in keys if any(k in record["ratios"][s] for s in stages)]
    overall = {"train_tokens_ratio": record["train_tokens_ratio"], "inference_speedup": record["inference_speedup"],
               "valid_output_share": record["valid_output_share"]}
    rows = []
    for key, name in present:
        digits = 3 if key.startswith(("valid", "score")) else 2
        suffix = "" if key.startswith(("valid", "score")) else "×"
        rows.append([name, *(fmt(record["ratios"][s].get(key), digits, suffix) for s in stages),
                     fmt(overall.get(key), digits, suffix)])
    return table(["per_utterance ÷ conversation", *stages, "both stages"], rows)


def fused_table(record: dict) -> str:
    """per_utterance (both stages) ÷ fused."""
    f = record["fused"]
    rows = [["training tokens ÷", fmt(f["train_tokens_ratio"], 2, "×")],
            ["inference speed-up", fmt(f["inference_speedup"], 2, "×")],
            ["valid share, fused", fmt(f["valid_output_share"], 3)]]
    return table(["per_utterance ÷ fused", "both stages"], rows)


def markdown(record: dict) -> str:
    """All tables with a header naming the machine, model, data and command."""
    m, d = record["machine"], record["data"]
    device = m["gpu"] or (f"{m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} torch threads, "
                          f"OMP_WAIT_POLICY={m.get('omp_wait_policy')})")
    lines = [f"## emocause benchmark · {m['date']}",
             "",
             f"`{record['command']}`",
             "",
             f"Machine: {device}, {m['ram_gib']} GiB RAM; torch {m['torch']}; load average "
             f"{record['load_average_start']} → {record['load_average_end']}.",
             f"Model: {record['model']} ({record['parameters']['base']:,} parameters + "
             f"{record['parameters']['lora']:,} LoRA), strategy {record['strategy']['name']} on "
             f"{record['strategy']['device']}, precision {record['strategy']['precision']}; conversation-style "
             f"loss: {record['config'].get('conversation_loss', 'answers')}.",
             "Code: commit {} + working tree; sha256[:12] {}.".format(
                 record["code"]["git_commit"], ", ".join(f"{k} {v}" for k, v in record["code"]["sha256_12"].items())),
             f"Data: {d['train_conversations']} training conversations, {d['eval_conversations']} eval "
             f"conversations ({d['eval_utterances']} utterances).",
             "",
             "### Training tokens per epoch",
             "",
             tokens_table(record)]
    if record["variants"] and "train" in record["variants"][0]:
        lines += ["", "### Training (timed run; projected epoch = tokens / epoch ÷ tokens/s after step 1)", "",
                  training_table(record)]
    if record["variants"] and "inference" in record["variants"][0]:
        lines += ["", "### Inference and scores", "", inference_table(record)]
    lines += ["", "### Ratios", "", ratios_table(record), ""]
    if record.get("fused"):
        lines += ["### Fused (one adapter, one read) against per_utterance, both stages", "", fused_table(record), ""]
    if record["variants"] and "train" in record["variants"][0]:
        lines.append(f"Peak memory: {record['variants'][0]['train']['memory_kind']}; Δ is the growth over the "
                     "phase's start (CPU RSS is process-wide: freed heap is returned and the peak mark reset "
                     "before each phase).")
    lines.append(f"Total wall time {record['total_wall_s']:.1f} s.")
    return "\n".join(lines)
