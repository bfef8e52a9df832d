"""The official SemEval-2024 Task 3 scores from the shell.

    python -m utils.ecf.score --subtask 2 --pred Subtask_2_pred.json --gold Subtask_2_gold.json

prints one JSON object whose top-level keys are the official score names (plus per-emotion
tables). ``--emotions`` adds utterance-level emotion metrics when both files carry labels.
"""

from __future__ import annotations

import argparse
import json
import sys

from utils.io import read_json, write_json_atomic
from utils.ecf.metric import ScoreError, emotion_scores_convs, score_subtask1, score_subtask2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.ecf.score", description=__doc__.splitlines()[0])
    parser.add_argument("--subtask", type=int, choices=(1, 2), required=True)
    parser.add_argument("--pred", required=True, help="prediction file in the official format")
    parser.add_argument("--gold", required=True, help="gold file in the official format")
    parser.add_argument("--emotions", action="store_true", help="also score utterance emotions")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    args = parser.parse_args(argv)
    try:
        pred, gold = read_json(args.pred), read_json(args.gold)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read input: {e}", file=sys.stderr)
        return 2
    try:
        scores = (score_subtask1 if args.subtask == 1 else score_subtask2)(pred, gold)
        if args.emotions:
            scores["emotions"] = emotion_scores_convs(pred, gold)
    except ScoreError as e:
        print(f"error: {args.pred}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(scores, indent=2, ensure_ascii=False))
    if args.out:
        write_json_atomic(args.out, scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
