"""Validate ECF files from the shell: ``python -m utils.ecf.validate FILE...``.

Exit 0 with a one-line summary per valid file; exit 1 with the first error otherwise.
"""

from __future__ import annotations

import argparse
import sys

from utils.ecf.data import DataError, load_ecf, summary
from utils.text import terminal_safe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.ecf.validate", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="ECF JSON files (Subtask 1 or Subtask 2 format)")
    parser.add_argument("--unlabelled", action="store_true", help="accept files without emotions/pairs")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            counts = summary(load_ecf(path, require_labels=not args.unlabelled))
        except DataError as e:
            print(f"INVALID {terminal_safe(str(e))}", file=sys.stderr)  # it may quote the file's text
            status = 1
            continue
        print(f"OK {path}: {counts['conversations']} conversations, {counts['utterances']} utterances, "
              f"{counts['pairs']} pairs")
    return status


if __name__ == "__main__":
    sys.exit(main())
