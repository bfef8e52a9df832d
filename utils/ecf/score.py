"""The official SemEval-2024 Task 3 scores from the shell.

    python -m utils.ecf.score --subtask 2 --pred Subtask_2_pred.json --gold Subtask_2_gold.json

prints one JSON object whose top-level keys are the official score names (plus per-emotion
tables). ``--emotions`` adds utterance-level emotion metrics when both files carry labels.

The gold file is validated as the data layer validates any ECF file (``utils.ecf.validate``); the
prediction is read as strictly as the organisers' scorer reads it, and whatever that scorer would
reject is an error naming the file, the conversation and the value. Predicted conversations that
the gold file lacks are ignored, as officially, with a warning that names them.
"""

from __future__ import annotations

import argparse
import json
import sys

from utils.ecf.data import DataError, load_ecf, read_ecf_json
from utils.ecf.metric import ScoreError, emotion_scores_convs, extra_conversations, score_subtask1, score_subtask2
from utils.io import OutputPathError, check_output, write_json_atomic
from utils.text import terminal_safe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.ecf.score", description=__doc__.splitlines()[0])
    parser.add_argument("--subtask", type=int, choices=(1, 2), required=True)
    parser.add_argument("--pred", required=True, help="prediction file in the official format")
    parser.add_argument("--gold", required=True, help="gold file in the official format")
    parser.add_argument("--emotions", action="store_true", help="also score utterance emotions")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    args = parser.parse_args(argv)
    try:
        if args.out:
            check_output(args.out, "--out", example="scores.json")  # before reading and scoring, not after
    except OutputPathError as e:
        print(f"error: {terminal_safe(str(e))}", file=sys.stderr)
        return 2
    try:
        gold = load_ecf(args.gold, require_labels=False)  # utterance emotions are optional, pairs are not
        unannotated = [c.get("conversation_ID") for c in read_ecf_json(args.gold) if "emotion-cause_pairs" not in c]
        if unannotated:
            raise DataError(args.gold, "missing key (a gold file needs the annotated pairs)", unannotated[0],
                            field="emotion-cause_pairs")
        pred = read_ecf_json(args.pred)
    except DataError as e:
        print(f"error: {terminal_safe(str(e))}", file=sys.stderr)  # it may quote the file's text
        return 2
    try:
        scores = (score_subtask1 if args.subtask == 1 else score_subtask2)(pred, gold)
        if args.emotions:
            scores["emotions"] = emotion_scores_convs(pred, gold)
    except ScoreError as e:
        print(terminal_safe(f"error: {args.gold if e.role == 'gold' else args.pred}: {e}"), file=sys.stderr)
        return 2
    extra = extra_conversations(pred, gold)
    if extra:
        print(f"warning: {args.pred}: {len(extra)} predicted conversation(s) are not in {args.gold} and are not "
              f"scored (the official scorer ignores them too): conversation_ID {extra[:10]}"
              f"{' ...' if len(extra) > 10 else ''}", file=sys.stderr)
    print(json.dumps(scores, indent=2, ensure_ascii=False))
    if args.out:
        try:
            write_json_atomic(args.out, scores)
        except OSError as e:
            print(f"error: --out {args.out}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
