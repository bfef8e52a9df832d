"""ECF 2.0 (SemEval-2024 Task 3) data: load either official format, validate, split.

Everything downstream works on conversations in the official Subtask 2 format: causes are
utterance ids (``["3_joy", "2"]``) and utterances carry ``video_name``. Subtask 1 files (causes
are text spans, ``["3_joy", "2_You made up!"]``) are converted on load; their original span pairs
are kept under ``cause_spans`` for the Subtask 1 scorer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from utils.env import ROOT, resolve_artifact
from utils.io import atomic_path, file_sha256

EMOTIONS = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise")
SAMPLE_PATH = ROOT / "data" / "ecf_sample.json"
DATA_FOLDER = "data/ecf"  # downloads, under the persistent folder on a hosted runtime (env.resolve_artifact)
DATA_DIR = ROOT / DATA_FOLDER
# The organisers publish the data in their task repository; EMOCAUSE_ECF_URL overrides the base.
OFFICIAL_BASE_URL = "https://raw.githubusercontent.com/NUSTM/SemEval-2024_ECAC/main/data"
OFFICIAL_FILES = ("Subtask_2_train.json", "Subtask_1_train.json", "Subtask_2_test.json", "Subtask_1_test.json")
# sha256 of the released files: a download (or a file already in the data folder) must match
OFFICIAL_SHA256 = {
    "Subtask_1_train.json": "6b227b7fada28a194e63d8a8df6555956551eeda5432b49f45453e5d0f6b14f0",
    "Subtask_1_test.json": "3ef0461247483bfb173616177ead69cb9017032ae752d35c7cc246fb01394551",
    "Subtask_2_test.json": "d96afa90a1badcd56adbf9793d5ca11747fd2362a5f207b674b7c1a421663417",
}

_EMOTION_UTT = re.compile(r"^(\d+)_([A-Za-z]+)$")
_CAUSE_ID = re.compile(r"^U?(\d+)$")
_CAUSE_SPAN = re.compile(r"^(\d+)_(.*)$", re.DOTALL)


class DataError(ValueError):
    """Invalid ECF data; the message names the file, conversation, utterance and field."""

    def __init__(self, source: str, problem: str, conversation=None, utterance=None, field=None):
        where = [str(source)]
        if conversation is not None:
            where.append(f"conversation_ID={conversation}")
        if utterance is not None:
            where.append(f"utterance_ID={utterance}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(", ".join(where) + ": " + problem)
        self.source, self.conversation, self.utterance, self.field = source, conversation, utterance, field


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_emotion_utterance(text: Any, source: str, cid: Any) -> tuple[int, str]:
    """Parse ``"3_joy"`` into ``(3, "joy")``."""
    match = _EMOTION_UTT.match(text) if isinstance(text, str) else None
    if not match:
        raise DataError(source, f"emotion part {text!r} is not '<utterance>_<emotion>' like '3_joy'",
                        cid, field="emotion-cause_pairs")
    emotion = match.group(2)
    if emotion not in EMOTIONS:
        raise DataError(source, f"unknown emotion {emotion!r} in pair {text!r}; expected one of {list(EMOTIONS)}",
                        cid, field="emotion-cause_pairs")
    return int(match.group(1)), emotion


def parse_cause(text: Any, source: str, cid: Any) -> tuple[int, str | None]:
    """Parse a cause: ``"2"``/``"U2"`` (Subtask 2) or ``"2_some span"`` (Subtask 1) -> (2, span)."""
    if isinstance(text, str):
        if match := _CAUSE_ID.match(text.strip()):
            return int(match.group(1)), None
        if match := _CAUSE_SPAN.match(text):
            return int(match.group(1)), match.group(2)
    raise DataError(source, f"cause {text!r} is neither an utterance id like '2' nor '<utterance>_<span>'",
                    cid, field="emotion-cause_pairs")


def _check_utterance(utt: Any, index: int, cid: Any, source: str, require_labels: bool) -> None:
    """One utterance: keys, types, ids 1..n in order, known emotion, non-empty text."""
    if not isinstance(utt, dict):
        raise DataError(source, f"utterance #{index} is a {type(utt).__name__}, expected an object", cid,
                        field="conversation")
    uid = utt.get("utterance_ID")
    if "utterance_ID" not in utt:
        raise DataError(source, f"utterance #{index} has no 'utterance_ID'", cid, field="utterance_ID")
    if not _is_int(uid):
        raise DataError(source, f"expected an integer, got {uid!r}", cid, uid, "utterance_ID")
    if uid != index:
        raise DataError(source, f"utterance ids must be 1..n in order; position {index} holds {uid}",
                        cid, uid, "utterance_ID")
    required = ("text", "speaker", "emotion") if require_labels else ("text", "speaker")
    for key in required:
        if key not in utt:
            raise DataError(source, "missing key", cid, uid, key)
    for key in ("text", "speaker", "emotion", "video_name", "video_caption", "audio_caption"):
        if key in utt and not isinstance(utt[key], str):
            raise DataError(source, f"expected a string, got {type(utt[key]).__name__}", cid, uid, key)
    if not utt["text"].strip():
        raise DataError(source, "empty text", cid, uid, "text")
    if not utt["speaker"].strip():
        raise DataError(source, "empty speaker", cid, uid, "speaker")
    if "emotion" in utt and utt["emotion"] not in EMOTIONS:
        raise DataError(source, f"unknown emotion {utt['emotion']!r}; expected one of {list(EMOTIONS)}",
                        cid, uid, "emotion")


def _check_pairs(conv: dict, source: str, require_labels: bool) -> None:
    """Pairs: two strings each, utterances that exist, emotion agreeing with the utterance label."""
    cid = conv["conversation_ID"]
    pairs = conv.get("emotion-cause_pairs")
    if pairs is None:
        if require_labels:
            raise DataError(source, "missing key", cid, field="emotion-cause_pairs")
        return
    if not isinstance(pairs, list):
        raise DataError(source, f"expected a list, got {type(pairs).__name__}", cid, field="emotion-cause_pairs")
    n = len(conv["conversation"])
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(source, f"pair #{k + 1} {pair!r} is not a list of two strings", cid,
                            field="emotion-cause_pairs")
        emo_id, emotion = parse_emotion_utterance(pair[0], source, cid)
        cause_id, _ = parse_cause(pair[1], source, cid)
        for role, uid in (("emotion", emo_id), ("cause", cause_id)):
            if not 1 <= uid <= n:
                raise DataError(source, f"pair {pair!r} points at {role} utterance {uid}, which does not exist "
                                f"(the conversation has {n})", cid, uid, "emotion-cause_pairs")
        if emotion == "neutral":
            raise DataError(source, f"pair {pair!r} has emotion 'neutral'; only emotional utterances have causes",
                            cid, emo_id, "emotion-cause_pairs")
        label = conv["conversation"][emo_id - 1].get("emotion")
        if label is not None and label != emotion:
            raise DataError(source, f"pair {pair!r} says {emotion!r} but the utterance is labelled {label!r}",
                            cid, emo_id, "emotion-cause_pairs")


def validate_conversations(convs: Any, source: str = "<memory>", require_labels: bool = True) -> None:
    """Raise DataError on the first problem; return None when the data is valid."""
    if not isinstance(convs, list):
        raise DataError(source, f"top level must be a list of conversations, got {type(convs).__name__}")
    seen: set = set()
    for index, conv in enumerate(convs, 1):
        if not isinstance(conv, dict):
            raise DataError(source, f"conversation #{index} is a {type(conv).__name__}, expected an object")
        if "conversation_ID" not in conv:
            raise DataError(source, f"conversation #{index} has no 'conversation_ID'", field="conversation_ID")
        cid = conv["conversation_ID"]
        if not _is_int(cid):
            raise DataError(source, f"expected an integer, got {cid!r}", cid, field="conversation_ID")
        if cid in seen:
            raise DataError(source, "duplicate conversation id", cid, field="conversation_ID")
        seen.add(cid)
        utts = conv.get("conversation")
        if not isinstance(utts, list) or not utts:
            raise DataError(source, "expected a non-empty list of utterances", cid, field="conversation")
        for i, utt in enumerate(utts, 1):
            _check_utterance(utt, i, cid, source, require_labels)
        _check_pairs(conv, source, require_labels)


def _normalise(conv: dict, source: str) -> dict:
    """Copy of a valid conversation in Subtask 2 form: utterance causes, video names, spans kept."""
    conv = copy.deepcopy(conv)
    cid = conv["conversation_ID"]
    for utt in conv["conversation"]:
        utt.setdefault("video_name", f"dia{cid}utt{utt['utterance_ID']}.mp4")
    pairs, spans = [], []
    for emo, cause in conv.get("emotion-cause_pairs", []):
        cause_id, span = parse_cause(cause, source, cid)
        if span is not None:
            spans.append([emo, cause])
        pair = [emo, str(cause_id)]
        if pair not in pairs:  # several spans in one cause utterance give one utterance pair
            pairs.append(pair)
    conv["emotion-cause_pairs"] = pairs
    if spans:
        conv["cause_spans"] = spans
    return conv


def read_ecf_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, turning decode errors into DataError naming the file and position."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(str(path), "file not found; see data/README.md for getting the data") from None
    except IsADirectoryError:
        raise DataError(str(path), "is a folder; give the JSON file inside it") from None
    except UnicodeDecodeError as e:
        raise DataError(str(path), f"not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(str(path), f"cannot be read: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DataError(str(path), "JSON nested too deeply to be ECF data") from None


def load_ecf(path: str | os.PathLike | None = None, *, require_labels: bool = True) -> list[dict]:
    """Load and validate an ECF file (either official format); no path: the official training set."""
    if path is None:
        path = download_ecf()[0]
    raw = read_ecf_json(path)
    validate_conversations(raw, str(path), require_labels)
    return [_normalise(conv, str(path)) for conv in raw]


def download_ecf(dest: str | os.PathLike = DATA_DIR, files: Iterable[str] = OFFICIAL_FILES[:1],
                 base_url: str | None = None, timeout: float = 60) -> list[Path]:
    """Fetch the official files once (atomically) and return their paths; needs the network. A file
    whose sha256 is recorded (``OFFICIAL_SHA256``) must match it, downloaded or already there."""
    base_url = base_url or os.environ.get("EMOCAUSE_ECF_URL", OFFICIAL_BASE_URL)
    paths = []
    for name in files:
        target, expected = Path(dest) / name, OFFICIAL_SHA256.get(name)
        if target.exists():
            if expected and file_sha256(target) != expected:
                raise DataError(str(target), f"sha256 {file_sha256(target)} is not the official {name}'s "
                                f"{expected}: delete it to download it again")
            paths.append(target)
            continue
        try:
            with urllib.request.urlopen(f"{base_url}/{name}", timeout=timeout) as response:
                raw = response.read()
        except OSError as e:
            raise DataError(str(target), f"could not download {base_url}/{name} ({e}); download it by hand "
                            "as data/README.md describes and pass its path") from None
        got = hashlib.sha256(raw).hexdigest()
        if expected and got != expected:
            raise DataError(str(target), f"the download from {base_url}/{name} has sha256 {got}, not the "
                            f"official {name}'s {expected}: a changed file or a wrong EMOCAUSE_ECF_URL")
        try:
            json.loads(raw.decode("utf-8"))  # refuse to store a truncated or HTML error page
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(str(target), f"the download from {base_url}/{name} is not JSON ({e})") from None
        with atomic_path(target) as tmp:
            tmp.write_bytes(raw)
        paths.append(target)
    return paths


def official_file(name: str) -> Path:
    """DATA_PATH / TEST_PATH "ecf:<name>": the official file in the (persistent) data folder, downloaded
    and checked the first time."""
    if name not in OFFICIAL_SHA256:
        raise DataError(f"ecf:{name}", f"not an official file with a known checksum; use one of "
                        f"{[f'ecf:{n}' for n in OFFICIAL_SHA256]}")
    return download_ecf(resolve_artifact(DATA_FOLDER), [name])[0]


def emotion_pairs(conv: dict) -> list[tuple[int, str, int]]:
    """The conversation's (emotion_utterance, emotion, cause_utterance) triples, deduplicated."""
    triples: list[tuple[int, str, int]] = []
    for emo, cause in conv.get("emotion-cause_pairs", []):
        emo_id, emotion = parse_emotion_utterance(emo, "<memory>", conv.get("conversation_ID"))
        cause_id, _ = parse_cause(cause, "<memory>", conv.get("conversation_ID"))
        if (emo_id, emotion, cause_id) not in triples:
            triples.append((emo_id, emotion, cause_id))
    return triples


def with_pairs(conv: dict, pairs: Iterable[tuple[int, str, int]]) -> dict:
    """Copy of ``conv`` whose pairs are ``pairs`` in the official Subtask 2 format."""
    conv = copy.deepcopy(conv)
    out: list[list[str]] = []
    for emo_id, emotion, cause_id in pairs:
        pair = [f"{emo_id}_{emotion}", str(cause_id)]
        if pair not in out:
            out.append(pair)
    conv["emotion-cause_pairs"] = out
    conv.pop("cause_spans", None)
    return conv


def with_emotions(conv: dict, emotions: list[str]) -> dict:
    """Copy of ``conv`` with ``emotions[i]`` as the label of utterance i+1."""
    if len(emotions) != len(conv["conversation"]):
        raise ValueError(f"conversation {conv['conversation_ID']}: {len(emotions)} labels for "
                         f"{len(conv['conversation'])} utterances")
    conv = copy.deepcopy(conv)
    for utt, emotion in zip(conv["conversation"], emotions):
        utt["emotion"] = emotion
    return conv


def strip_labels(convs: list[dict]) -> list[dict]:
    """Copies without emotions or pairs: what a model sees at test time."""
    out = []
    for conv in convs:
        conv = copy.deepcopy(conv)
        for utt in conv["conversation"]:
            utt.pop("emotion", None)
        conv["emotion-cause_pairs"] = []
        conv.pop("cause_spans", None)
        out.append(conv)
    return out


def emotions_of(convs: list[dict]) -> list[str]:
    """All utterance labels, conversation by conversation, in order."""
    return [utt["emotion"] for conv in convs for utt in conv["conversation"]]


SPLITS = ("block", "random")


def split_conversations(convs: list[dict], test_frac: float = 0.1, val_frac: float = 0.1,
                        seed: int = 42, mode: str = "block") -> dict[str, list[dict]]:
    """Deterministic conversation-level split into train, val and test.

    ``block``: test is the last ``test_frac`` of the conversations by id and val the block before
    it, so held-out conversations come from later episodes, as the official evaluation set's do.
    ``random``: test first, then val from the rest, shuffled with ``seed`` (as MECPE did). Either
    way the split does not depend on file order. Both flatter: the same model scored 0.586
    (random), 0.564 (block) and 0.451 (official evaluation set) emotion weighted F1, so set
    TEST_PATH for numbers worth quoting (bench/RESULTS.md section 5)."""
    if not (0 <= test_frac < 1 and 0 <= val_frac < 1):
        raise ValueError(f"fractions must lie in [0, 1): test_frac={test_frac}, val_frac={val_frac}")
    if mode not in SPLITS:
        raise ValueError(f"SPLIT={mode!r}: use one of {list(SPLITS)}")
    ids = sorted(conv["conversation_ID"] for conv in convs)
    n_test = round(len(ids) * test_frac)
    n_val = round((len(ids) - n_test) * val_frac)
    if mode == "random":
        random.Random(seed).shuffle(ids)  # sorted first: the split does not depend on file order
        test_ids, val_ids = set(ids[:n_test]), set(ids[n_test:n_test + n_val])
    else:
        rest = len(ids) - n_test
        test_ids, val_ids = set(ids[rest:]), set(ids[rest - n_val:rest])
    split: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for conv in convs:  # keep file order inside each split
        cid = conv["conversation_ID"]
        split["test" if cid in test_ids else "val" if cid in val_ids else "train"].append(conv)
    return split


def emotions_digest(convs: list[dict]) -> str:
    """A short digest of the emotions in ``convs`` (what a saved cause read depends on besides the model)."""
    emotions = [[u.get("emotion") for u in c["conversation"]] for c in convs]
    return hashlib.sha256(json.dumps(emotions).encode("utf-8")).hexdigest()[:16]


def summary(convs: list[dict]) -> dict[str, int]:
    """Counts for a one-line report."""
    return {
        "conversations": len(convs),
        "utterances": sum(len(c["conversation"]) for c in convs),
        "pairs": sum(len(emotion_pairs(c)) for c in convs),
    }
