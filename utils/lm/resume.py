"""Which checkpoint a training run resumes from: the run's identity, and complete checkpoints only.

A run's identity is the model (its weights' hash when local), the settings that change the adapter and a
hash of the training examples (data, split, LIMIT, style and prompts all end up in the token ids). It is
written to ``run.json`` beside the checkpoints; a run resumes only from checkpoints its own identity wrote,
so a rerun with other data or settings starts over (with a line naming what differs) instead of handing
back the old adapter. A checkpoint a kill left half-written is skipped.

Nothing finished is lost to a run of another identity, nor left unusable by one that is stopped: that run trains
beside the finished one (``workspace``: ``<folder>.next-<its fingerprint>``, where a rerun resumes it), and only when
it has finished does ``promote`` move the finished run (its adapter, its ``run.json``, its summaries, everything in
its folder) aside to ``<folder>.kept-<its fingerprint>`` and the new one into its place, saying so. Only the
checkpoints of an unfinished run are removed, and only $EMOCAUSE_REPLACE=1 (``utils.run --replace``) lets a new
run replace a finished one (still only once it has finished).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from utils.env import REPLACE_ENV
from utils.lm.sources import model_identity

RUN_FILE = "run.json"  # beside the checkpoints: the identity of the run that wrote them
KEPT = ".kept-"  # <folder>.kept-<fingerprint>: a finished run moved aside by a run of another identity
NEXT = ".next-"  # <folder>.next-<fingerprint>: where a run trains while <folder> holds another finished run
ADAPTER_FILE = Path("adapter") / "adapter_model.safetensors"  # a folder holding it holds a finished run


REPLACE_HINT = f"{REPLACE_ENV}=1"  # how a notebook run alone asks to replace a finished run

CHECKPOINT_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")


# what changes the adapter a run produces (logging, saving and where it goes do not)
IDENTITY_SETTINGS = ("epochs", "max_steps", "learning_rate", "batch_size", "grad_accum", "max_length", "seed",
                     "warmup_share", "group_by_length", "lora", "answer_ids", "answer_weighting", "answer_scales",
                     "cpu_autocast")
# settings added later, left out of the identity at the value that means what runs did before them (cpu_autocast:
# bf16 autocast on the CPU, utils.lm.precision; a run in fp32 keeps the identity it had before)
LEFT_OUT = {"answer_weighting": "none", "answer_scales": (), "cpu_autocast": False}


def _examples_sha256(examples: Sequence[dict] | None) -> str | None:
    if not examples:
        return None
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([list(ex["input_ids"]), list(ex["labels"])]).encode())
    return digest.hexdigest()


def run_identity(model: str, settings: dict, train_examples: Sequence[dict],
                 eval_examples: Sequence[dict] | None) -> dict:
    """The model (its weights' hash when local), the ``settings`` that change the result (those named in
    IDENTITY_SETTINGS) and the examples' hash, with a short fingerprint of them all."""
    settings = {k: v for k, v in settings.items() if k in IDENTITY_SETTINGS
                and not (k in LEFT_OUT and v == LEFT_OUT[k])}  # at those values: the identity runs had before them
    identity = {"model": model_identity(model), "settings": settings,
                "train_examples_sha256": _examples_sha256(train_examples),
                "eval_examples_sha256": _examples_sha256(eval_examples)}
    identity = json.loads(json.dumps(identity))  # as run.json holds it (tuples are lists), so reruns compare alike
    identity["fingerprint"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return identity


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The fields where two identities differ, as 'name: old -> new'."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "fingerprint" or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}: {str(a)[:60]} -> {str(b)[:60]}")
    return out


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """checkpoint-N folders in output_dir, newest first."""
    folder = Path(output_dir)
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint-N folder in output_dir; newer incomplete ones (a kill while saving)
    are skipped with a line that names them."""
    for folder in checkpoints(output_dir):
        missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
        if not missing:
            return str(folder)
        print(f"[emocause] skipping {folder}: incomplete (no {missing[0]}), a run was stopped while saving it",
              flush=True)
    return None


def resume_plan(out: Path, identity: dict, resume: bool) -> tuple[str | None, list[Path], str]:
    """(the checkpoint to resume from, the checkpoints to remove first, why); reads only. A run resumes only
    from checkpoints written with its own identity; another run's (or any, without RESUME) are removed and
    this run starts over, with a line that says what differs."""
    found = checkpoints(out)
    previous = _recorded_identity(out)
    same = previous is not None and previous.get("fingerprint") == identity["fingerprint"]
    if not found or (resume and same):
        return (last_checkpoint(out) if found else None), [], ""
    if not resume:
        return None, found, "RESUME is off"
    what = "; ".join(_differences(previous, identity)) if previous else f"no {RUN_FILE}, an older version's run"
    return None, found, (f"they belong to another run ({what}); give this run another CHECKPOINT_DIR "
                         "to keep both")


def _recorded_identity(out: Path) -> dict | None:
    """The identity in ``out``'s run.json; None where there is none."""
    path = out / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def keep_finished(out: Path, identity: dict) -> tuple[Path, str] | None:
    """Move the finished run in ``out`` (an adapter there) aside when another identity wrote it: every entry of
    ``out`` but its lock goes to the sibling ``<out>.kept-<its fingerprint>``; returns (that folder, what differs).
    None where ``out`` holds no finished run, or this identity's own."""
    if not (out / ADAPTER_FILE).is_file():
        return None
    previous = _recorded_identity(out)
    if previous is not None and previous.get("fingerprint") == identity["fingerprint"]:
        return None
    tag = (previous or {}).get("fingerprint") or "unrecorded"
    kept, n = out.with_name(f"{out.name}{KEPT}{tag}"), 1
    while kept.exists():  # kept before: the earlier copy stays too
        n += 1
        kept = out.with_name(f"{out.name}{KEPT}{tag}-{n}")
    kept.mkdir(parents=True)
    for entry in sorted(out.iterdir()):
        if entry.name != ".lock":
            os.replace(entry, kept / entry.name)
    what = "; ".join(_differences(previous, identity)) if previous else f"no {RUN_FILE}, an older version's run"
    return kept, what


def workspace(out: Path, identity: dict) -> Path:
    """Where a run of ``identity`` trains: ``out``, or beside it (``<out>.next-<its fingerprint>``) where ``out``
    holds a finished run of another identity, which stays usable in place until this run finishes."""
    if not (out / ADAPTER_FILE).is_file():
        return out
    previous = _recorded_identity(out)
    if previous is not None and previous.get("fingerprint") == identity["fingerprint"]:
        return out
    return out.with_name(f"{out.name}{NEXT}{identity['fingerprint']}")


def _kept_line(out: Path, kept: Path, what: str) -> str:
    return (f"kept the finished run that was in {out} ({what}): its adapter and {RUN_FILE} are now in {kept}; "
            f"python -m utils.run --replace (or {REPLACE_HINT}) replaces a finished run instead, python -m utils.kept "
            "lists kept runs and removes them")


def promote(stage: Path, out: Path, identity: dict, replace: bool = False) -> list[str]:
    """Move the finished run of ``identity`` in ``stage`` into ``out``, once it has finished: the finished run
    there is first kept aside (``keep_finished``) or, with ``replace``, removed; returns the lines that say so."""
    lines = []
    if replace and (out / ADAPTER_FILE).is_file():
        for entry in out.iterdir():
            if entry.name != ".lock":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        lines.append(f"replaced the finished run in {out}, as asked ({REPLACE_HINT})")
    kept = None if replace else keep_finished(out, identity)
    if kept:
        lines.append(_kept_line(out, *kept))
    # the adapter last: a folder with an adapter holds a whole run, even if this is stopped half way
    for entry in sorted(stage.iterdir(), key=lambda e: e.name == "adapter"):
        target = out / entry.name
        if entry.name == ".lock":
            continue
        if target.is_dir():  # left in ``out`` by no finished run (what one had is kept or removed above)
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(stage, ignore_errors=True)
    return lines


def make_room(out: Path, identity: dict, stale: Sequence[Path], why: str, replace: bool = False) -> list[str]:
    """Clear ``out`` for a run of ``identity`` before it writes there, and return the lines that say what moved
    or went: a finished run of another identity is kept aside (``keep_finished``) unless ``replace``; the
    ``stale`` checkpoints still there (an unfinished run's, or any without RESUME) are removed."""
    lines = []
    kept = None if replace else keep_finished(out, identity)
    if kept:
        lines.append(_kept_line(out, *kept))
    elif replace and (out / ADAPTER_FILE).is_file():
        previous = _recorded_identity(out)
        if previous is None or previous.get("fingerprint") != identity["fingerprint"]:
            lines.append(f"replacing the finished run in {out}, as asked ({REPLACE_HINT})")
    left = [folder for folder in stale if folder.is_dir()]
    if left:
        lines.append(f"starting over in {out}: removing {len(left)} checkpoint(s), {why}")
    for folder in left:
        shutil.rmtree(folder)
    return lines


def checkpoint_state(checkpoint: str | None) -> dict:
    """A checkpoint's trainer_state.json ({} without a checkpoint)."""
    if checkpoint is None:
        return {}
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
