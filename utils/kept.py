"""Runs kept aside, listed and removed when a user says so.

    python -m utils.kept                                  # each kept run: name, size, date, what made it
    python -m utils.kept --remove results_test.kept-20261207-101010 checkpoints/cause/conversation.kept-3f2a9c

Two things keep a run instead of overwriting it: ``utils.run`` copies a run's results beside them before a run
with other parameters (``results_test.kept-<run id>``, ``results_train.kept-<run id>``), and a training run moves
a finished adapter of another identity aside (``checkpoints/<task>/<STYLE>.kept-<fingerprint>``,
``utils.lm.resume``). Both are found under the artifact folder (PERSIST_DIR's, else the repository), ``runs/smoke/``
included. Names are as listed, relative to that folder; a name that is not a kept run is refused, and nothing is
removed then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.env import artifact_root
from utils.text import terminal_safe

KEPT = ".kept-"  # the marker utils.run and utils.lm.resume put in a kept folder's name
DEPTH = 5  # runs/smoke/checkpoints/<task>/<STYLE>.kept-<fingerprint> is the deepest a kept run lies
SKIPPED = ("__pycache__", "node_modules", "data")  # never hold one; hidden folders (.git) are skipped too


class KeptError(ValueError):
    """A name that is not a kept run."""


@dataclass(frozen=True)
class Kept:
    """One kept run: its folder, its name (relative to the artifact folder), size, date and what made it."""

    path: Path
    name: str
    size: int  # bytes
    kept_at: float  # the folder's modification time: when it was copied or moved aside
    what: str


def _candidates(root: Path) -> list[Path]:
    """The folders under ``root`` (at most DEPTH deep) whose name marks a kept run; not inside one."""
    found = []
    for here, folders, _ in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        for name in sorted(folders):
            if KEPT in name and not name.startswith("."):  # ".<name>.partial": a copy still under way
                found.append(Path(here) / name)
        folders[:] = [] if depth + 1 >= DEPTH else sorted(
            f for f in folders if KEPT not in f and not f.startswith(".") and f not in SKIPPED
            and not f.startswith("checkpoint-"))
    return found


def _size(folder: Path) -> int:
    return sum((Path(here) / f).stat().st_size for here, _, files in os.walk(folder) for f in files
               if not (Path(here) / f).is_symlink())


def describe(folder: Path) -> str:
    """What made a kept run: an adapter's model and fingerprint (run.json), or a results copy's run and track
    with its parameters (run_summary.json); the name's tag where neither is there."""
    tag = folder.name.split(KEPT, 1)[1]
    run_file, summary_file = folder / "run.json", folder / "run_summary.json"
    try:
        if run_file.is_file():
            identity = json.loads(run_file.read_text(encoding="utf-8"))
            model = identity.get("model")
            model = model.get("model") if isinstance(model, dict) else model  # resume.run_identity's "model"
            return f"adapter of {model or 'an unrecorded model'}, fingerprint {identity.get('fingerprint', tag)}"
        if summary_file.is_file():
            tracks = json.loads(summary_file.read_text(encoding="utf-8")).get("tracks", {})
            track, entry = max(tracks.items(), key=lambda t: str(t[1].get("run_id")), default=("?", {}))
            shown = ", ".join(f"{k}={v}" for k, v in sorted((entry.get("parameters") or {}).items())
                              if not k.endswith("_DIR")) or "defaults"
            return f"results of {track} run {entry.get('run_id', tag)} ({shown})"
    except (OSError, ValueError, AttributeError):
        pass
    return f"adapter, tag {tag}" if (folder / "adapter").is_dir() else f"results of run {tag}"


def kept_runs(root: Path | None = None) -> list[Kept]:
    """Every kept run under ``root`` (default: the artifact folder), oldest first."""
    root = root or artifact_root()
    found = [Kept(p, p.relative_to(root).as_posix(), _size(p), p.stat().st_mtime, describe(p))
             for p in _candidates(root)]
    return sorted(found, key=lambda k: (k.kept_at, k.name))


def remove(names: list[str], root: Path | None = None) -> list[Kept]:
    """Remove the kept runs ``names`` (as listed, or their paths); KeptError naming each other name, before any
    is removed."""
    root = root or artifact_root()
    runs = kept_runs(root)
    by_name = {k.name: k for k in runs} | {str(k.path.resolve()): k for k in runs}
    chosen, refused = [], []
    for name in names:
        key = name.rstrip("/")
        hit = by_name.get(key) or by_name.get(str(Path(key).resolve()))
        (chosen if hit else refused).append(hit or name)
    if refused:
        raise KeptError(f"not a kept run under {root}: {', '.join(map(repr, refused))}; nothing removed "
                        "(python -m utils.kept lists them)")
    for run in dict.fromkeys(chosen):
        shutil.rmtree(run.path)
    return list(dict.fromkeys(chosen))


def _size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.kept", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--remove", nargs="+", metavar="NAME", help="remove these kept runs (names as listed)")
    parser.add_argument("--root", help="the artifact folder to look in (default: PERSIST_DIR's, else the repository)")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else None
    if args.remove:
        try:
            gone = remove(args.remove, root)
        except KeptError as e:
            print(f"error: {terminal_safe(str(e))}", file=sys.stderr)
            return 2
        for run in gone:
            print(terminal_safe(f"removed {run.name} ({_size_text(run.size)})"))
        return 0
    runs = kept_runs(root)
    if not runs:
        print(f"no kept runs under {root or artifact_root()}")
        return 0
    width = max(len(k.name) for k in runs)
    for k in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(k.kept_at))
        print(terminal_safe(f"{k.name:<{width}}  {_size_text(k.size):>10}  {when}  {k.what}"))
    print(f"{len(runs)} kept, {_size_text(sum(k.size for k in runs))}; python -m utils.kept --remove NAME... removes them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
