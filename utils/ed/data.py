"""EmpatheticDialogues data: read the Kaggle CSV or the original release, clean it with a report, split it.

Both formats become one frame with a row per (speaker turn, listener reply):
``conv_id, situation, emotion, dialogue, response, source_row`` (+ ``split`` for the original
release, + ``text_length`` after cleaning). ``dialogue`` is what the speaker ("Customer") said,
``response`` the listener's ("Agent") reply. Text in any script is kept exactly as read.
"""

from __future__ import annotations

import csv
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import pandas as pd

from utils.text import STOPWORDS, words
from utils.env import ROOT

EMOTIONS_32 = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive", "ashamed", "caring",
    "confident", "content", "devastated", "disappointed", "disgusted", "embarrassed", "excited",
    "faithful", "furious", "grateful", "guilty", "hopeful", "impressed", "jealous", "joyful",
    "lonely", "nostalgic", "prepared", "proud", "sad", "sentimental", "surprised", "terrified",
    "trusting",
)
SAMPLE_PATH = ROOT / "data" / "empathetic_sample.csv"
ORIGINAL_SAMPLE_DIR = ROOT / "data" / "empathetic_sample_original"
TEXT_COLUMNS = ("situation", "emotion", "dialogue", "response")
KAGGLE_COLUMNS = {"situation": "situation", "emotion": "emotion",
                  "empathetic_dialogues": "dialogue", "labels": "response"}
ORIGINAL_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance")
ORIGINAL_SPLITS = ("train", "valid", "test")
# "Customer :" / "Agent :" open a line in the Kaggle CSV; a bare trailing "Agent :" ends the turn
_MARKER = re.compile(r"^[ \t]*(?:Customer|Agent)[ \t]*:[ \t]*", re.IGNORECASE | re.MULTILINE)

Policy = Literal["raise", "drop"]


class EmpatheticDataError(ValueError):
    """A malformed EmpatheticDialogues row; the message names the file, row (1 = the first record
    after the header, 0 = the header) and column."""

    def __init__(self, source: str | os.PathLike, problem: str, row: int | None = None,
                 column: str | None = None):
        where = [str(source)] + ([f"row {row}"] if row is not None else [])
        where += [f"column '{column}'"] if column is not None else []
        super().__init__(", ".join(where) + ": " + problem)
        self.source, self.row, self.column = str(source), row, column


@dataclass
class CleaningReport:
    """One line per cleaning step: rows before and after, cells or rows changed, a note."""

    steps: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # every dropped malformed row and why

    def add(self, step: str, before: int, after: int, changed: int, note: str = "") -> None:
        self.steps.append(dict(step=step, rows_before=before, rows_after=after, changed=changed, note=note))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps, columns=["step", "rows_before", "rows_after", "changed", "note"])


# ---------------------------------------------------------------- reading
def _malformed(report: CleaningReport, policy: Policy, source, problem: str, row: int | None = None,
               column: str | None = None) -> None:
    """Raise, or record the drop so that no row disappears silently."""
    if policy == "raise":
        raise EmpatheticDataError(source, problem + " (on_error='drop', the notebooks' ON_ERROR, drops and "
                                  "counts such rows instead)", row, column)
    error = EmpatheticDataError(source, problem, row, column)
    report.dropped.append(dict(source=error.source, row=row, column=column, problem=str(error)))


def detect_format(path: str | os.PathLike) -> str:
    """'original' for a folder or a csv whose header starts with conv_id, else 'kaggle'."""
    path = Path(path)
    if path.is_dir():
        return "original"
    with open(path, encoding="utf-8-sig") as f:
        header = f.readline().strip().lower()
    return "original" if header.startswith("conv_id,") else "kaggle"


def _kaggle_header(header: list[str], path: Path) -> dict[str, int]:
    """Map our column names to positions; an index column or empty 'Unnamed' columns are ignored."""
    names = [h.strip().lower() for h in header]
    positions = {ours: names.index(theirs) for theirs, ours in KAGGLE_COLUMNS.items() if theirs in names}
    missing = [theirs for theirs, ours in KAGGLE_COLUMNS.items() if ours not in positions]
    if missing:
        raise EmpatheticDataError(path, f"header {header} lacks column(s) {missing}; expected "
                                  f"{list(KAGGLE_COLUMNS)} (the Kaggle EmpatheticDialogues CSV)", row=0)
    return positions


def read_kaggle_csv(path: str | os.PathLike, report: CleaningReport, on_error: Policy = "raise") -> pd.DataFrame:
    """Read the Kaggle CSV; a row with too few fields or text in an unnamed column is malformed."""
    path = Path(path)
    rows, conv, last_key = [], 0, None
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise EmpatheticDataError(path, "the file is empty; expected a header row", row=0)
        positions = _kaggle_header(header, path)
        used = set(positions.values()) | {i for i, h in enumerate(header) if h.strip().lower() in ("", "unnamed: 0")}
        for number, record in enumerate(reader, 1):
            if not any(cell.strip() for cell in record):
                continue  # csv writers leave blank lines at the end; they are not rows
            if len(record) < len(header):
                _malformed(report, on_error, path, f"{len(record)} fields where the header has {len(header)}", number)
                continue
            extra = [i for i, cell in enumerate(record) if cell.strip() and i not in used]
            if extra:
                name = header[extra[0]] if extra[0] < len(header) else f"field {extra[0] + 1}"
                _malformed(report, on_error, path, f"unexpected text {record[extra[0]][:40]!r} beyond the four "
                           "columns (an unquoted comma split the row?)", number, name)
                continue
            row = {ours: record[i] for ours, i in positions.items()}
            key = (row["situation"], row["emotion"])
            conv += key != last_key  # consecutive rows of one situation are one conversation
            last_key = key
            rows.append(dict(conv_id=f"{path.stem}:{conv}", **row, source_row=number))
    report.add("read", len(rows) + len(report.dropped), len(rows), len(report.dropped),
               "kaggle format; malformed rows dropped")
    return pd.DataFrame(rows, columns=["conv_id", *TEXT_COLUMNS, "source_row"])


def _original_files(path: Path) -> list[tuple[str, Path]]:
    """(split, file) pairs: a folder gives its train/valid/test.csv, a file gives itself."""
    if path.is_file():
        return [(path.stem, path)]
    files = [(split, path / f"{split}.csv") for split in ORIGINAL_SPLITS if (path / f"{split}.csv").is_file()]
    if not files:
        raise EmpatheticDataError(path, "no train.csv, valid.csv or test.csv in this folder")
    return files


def _unescape(text: str) -> str:
    """The release writes commas as '_comma_' so that its lines split on ','."""
    return text.replace("_comma_", ",")


def _read_original_file(path: Path, split: str, report: CleaningReport, on_error: Policy) -> list[dict]:
    """Split lines on commas like the release does (its text has '_comma_' instead of commas)."""
    utterances = []
    with open(path, encoding="utf-8-sig") as f:
        header = [h.strip() for h in f.readline().rstrip("\r\n").split(",")]
        if header[: len(ORIGINAL_COLUMNS)] != list(ORIGINAL_COLUMNS):
            raise EmpatheticDataError(path, f"header {header} does not start with {list(ORIGINAL_COLUMNS)}", row=0)
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\r\n").split(",")
            if not line.strip():
                continue
            if not len(ORIGINAL_COLUMNS) <= len(parts) <= len(header):
                _malformed(report, on_error, path, f"{len(parts)} fields; expected {len(ORIGINAL_COLUMNS)} to "
                           f"{len(header)} (a raw comma in the text? the release writes '_comma_')", number)
                continue
            fields = dict(zip(header, parts))
            blank = next((c for c in ("conv_id", "context", "prompt", "utterance") if not fields[c].strip()), None)
            if blank:
                _malformed(report, on_error, path, f"{blank} is empty", number, blank)
                continue
            if not fields["utterance_idx"].strip().isdigit():
                _malformed(report, on_error, path, f"utterance_idx {fields['utterance_idx']!r} is not a positive "
                           "integer", number, "utterance_idx")
                continue
            utterances.append(dict(conv_id=fields["conv_id"], idx=int(fields["utterance_idx"]),
                                   emotion=fields["context"], situation=_unescape(fields["prompt"]),
                                   text=_unescape(fields["utterance"]), split=split, source_row=number))
    return utterances


def _pair_turns(utterances: list[dict]) -> tuple[list[dict], int]:
    """Group by conv_id in utterance order; each speaker turn with the reply after it is a row."""
    by_conv: dict[str, list[dict]] = {}
    for utt in utterances:
        by_conv.setdefault(utt["conv_id"], []).append(utt)
    rows, unpaired = [], 0
    for conv_id, utts in by_conv.items():
        utts.sort(key=lambda u: u["idx"])
        for speaker, listener in zip(utts[0::2], utts[1::2]):
            rows.append(dict(conv_id=conv_id, situation=speaker["situation"], emotion=speaker["emotion"],
                             dialogue=speaker["text"], response=listener["text"], split=speaker["split"],
                             source_row=speaker["source_row"]))
        unpaired += len(utts) % 2  # a speaker's last word without a reply cannot train a response
    return rows, unpaired


def read_original(path: str | os.PathLike, report: CleaningReport, on_error: Policy = "raise") -> pd.DataFrame:
    """Read the original release (a folder with train/valid/test.csv, or one of them)."""
    utterances = []
    for split, file in _original_files(Path(path)):
        utterances += _read_original_file(file, split, report, on_error)
    rows, unpaired = _pair_turns(utterances)
    report.add("read", len(utterances) + len(report.dropped), len(utterances), len(report.dropped),
               "original format, utterances; malformed lines dropped")
    report.add("pair turns", len(utterances), len(rows), unpaired,
               f"{len(utterances)} utterances -> speaker/listener pairs; {unpaired} unanswered last turns")
    return pd.DataFrame(rows, columns=["conv_id", *TEXT_COLUMNS, "split", "source_row"])


# ---------------------------------------------------------------- cleaning
def _is_missing(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def handle_missing(df: pd.DataFrame, policy: Literal["mode", "drop"], report: CleaningReport) -> pd.DataFrame:
    """Fill blank cells with their column's most frequent value, or drop their rows."""
    missing = pd.DataFrame({c: _is_missing(df[c]) for c in TEXT_COLUMNS})
    before = len(df)
    if policy == "drop":
        df = df[~missing.any(axis=1)]
        report.add("missing values", before, len(df), before - len(df), "rows with a blank cell dropped")
        return df
    if policy != "mode":
        raise ValueError(f"missing={policy!r}: use 'mode' (fill with the column's mode) or 'drop'")
    df = df.copy()
    for column in TEXT_COLUMNS:
        if missing[column].any():
            present = df.loc[~missing[column], column]
            if present.empty:
                raise EmpatheticDataError("<frame>", "every value is blank; nothing to fill from", column=column)
            df.loc[missing[column], column] = present.mode().iloc[0]  # mode() sorts ties: deterministic
    filled = int(missing.to_numpy().sum())
    report.add("missing values", before, len(df), filled, "blank cells filled with the column mode")
    return df


def check_emotions(df: pd.DataFrame, source: str, report: CleaningReport, on_error: Policy) -> pd.DataFrame:
    """Every emotion must be one of the 32 (after trimming and lowercasing)."""
    df = df.assign(emotion=df["emotion"].astype(str).str.strip().str.lower())
    bad = ~df["emotion"].isin(EMOTIONS_32)
    for _, row in df[bad].iterrows():
        _malformed(report, on_error, source, f"emotion {row['emotion'][:40]!r} is not one of the 32 "
                   f"EmpatheticDialogues emotions ({', '.join(EMOTIONS_32[:4])}, ...)", int(row["source_row"]),
                   "emotion")
    report.add("unknown emotions", len(df), int((~bad).sum()), int(bad.sum()), "rows dropped")
    return df[~bad]


def strip_markers(text: str) -> str:
    """Drop 'Customer :' / 'Agent :' line prefixes and the blank lines they leave."""
    lines = [line.strip() for line in _MARKER.sub("", text).splitlines()]
    return "\n".join(line for line in lines if line)


def clean(df: pd.DataFrame, *, source: str = "<frame>", missing: Literal["mode", "drop"] = "mode",
          lowercase: bool = False, drop_duplicates: bool = True, on_error: Policy = "raise",
          report: CleaningReport | None = None) -> tuple[pd.DataFrame, CleaningReport]:
    """Missing values, unknown emotions, speaker markers, lowercasing, duplicates, text_length."""
    report = report or CleaningReport()
    df = handle_missing(df, missing, report)
    df = check_emotions(df, source, report, on_error)
    for column in ("dialogue", "response"):
        stripped = df[column].astype(str).map(strip_markers)
        report.add(f"speaker markers ({column})", len(df), len(df), int((stripped != df[column]).sum()),
                   "cells changed")
        df = df.assign(**{column: stripped})
    if lowercase:
        # str.lower() leaves scripts without case (Bangla, Chinese) untouched
        lowered = {c: df[c].astype(str).str.lower() for c in ("situation", "dialogue", "response")}
        changed = sum(int((lowered[c] != df[c]).sum()) for c in lowered)
        df = df.assign(**lowered)
        report.add("lowercase", len(df), len(df), changed, "cells changed")
    if drop_duplicates:
        before = len(df)
        df = df.drop_duplicates(subset=list(TEXT_COLUMNS))
        report.add("duplicates", before, len(df), before - len(df), "rows dropped")
    df = df.assign(text_length=df["dialogue"].str.len()).reset_index(drop=True)
    report.add("text_length", len(df), len(df), 0, "characters of the speaker turn")
    return df, report


def load_empathetic(path: str | os.PathLike | None = None, *, fmt: str = "auto",
                    missing: Literal["mode", "drop"] = "mode", lowercase: bool = False,
                    drop_duplicates: bool = True, on_error: Policy = "raise",
                    ) -> tuple[pd.DataFrame, CleaningReport]:
    """Read either format (``fmt``: auto, kaggle, original) and clean it; returns (frame, report)."""
    path = Path(path) if path is not None else SAMPLE_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; pass the Kaggle CSV, the original release folder "
                                f"or one of its csv files (the sample is {SAMPLE_PATH})")
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'drop'")
    fmt = detect_format(path) if fmt == "auto" else fmt
    report = CleaningReport()
    if fmt == "kaggle":
        raw = read_kaggle_csv(path, report, on_error)
    elif fmt == "original":
        raw = read_original(path, report, on_error)
    else:
        raise ValueError(f"fmt={fmt!r}: use 'auto', 'kaggle' or 'original'")
    return clean(raw, source=str(path), missing=missing, lowercase=lowercase,
                 drop_duplicates=drop_duplicates, on_error=on_error, report=report)


# ---------------------------------------------------------------- splits
def split_by_conversation(df: pd.DataFrame, test_frac: float = 0.2, val_frac: float = 0.0,
                          seed: int = 42, test: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Split by conv_id, no conversation in two splits. ``test`` given (ED_TEST_PATH): it is the test split, and
    its conversations leave the others. Otherwise the release's own split where the data has one: its test file,
    else its valid file (the test file held out, as in ../shared/data/ed) is the test split. What the release
    does not give comes from a seeded share of the remaining conversations (val: ``val_frac`` of all)."""
    if test is not None:
        df = df[~df["conv_id"].isin(set(test["conv_id"]))]
    parts = {name: part for name, part in df.groupby("split", sort=False)} if "split" in df.columns else {}
    if test is None and ("test" in parts or "valid" in parts) and "train" in parts:
        test = parts["test"] if "test" in parts else parts.pop("valid")
    if test is not None:
        if "valid" in parts and "train" in parts:
            return {"train": parts["train"].reset_index(drop=True), "val": parts["valid"].reset_index(drop=True),
                    "test": test.reset_index(drop=True)}
        return {**_seeded_split(parts.get("train", df), 0.0, val_frac, seed), "test": test.reset_index(drop=True)}
    return _seeded_split(df, test_frac, val_frac, seed)


def _seeded_split(df: pd.DataFrame, test_frac: float, val_frac: float, seed: int) -> dict[str, pd.DataFrame]:
    """Seeded shuffle of the conversations into test, val and train shares."""
    convs = sorted(df["conv_id"].unique())
    random.Random(seed).shuffle(convs)
    n_test = max(1, round(test_frac * len(convs))) if test_frac > 0 else 0
    n_val = max(1, round(val_frac * len(convs))) if val_frac > 0 else 0
    groups = {"test": set(convs[:n_test]), "val": set(convs[n_test:n_test + n_val]),
              "train": set(convs[n_test + n_val:])}
    return {name: df[df["conv_id"].isin(ids)].reset_index(drop=True) for name, ids in
            (("train", groups["train"]), ("val", groups["val"]), ("test", groups["test"]))}


def first_turns(df: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation: its first speaker turn with the situation (the literature's classification unit;
    rows keep the reading order, the first of a conversation is its first turn)."""
    return df.drop_duplicates("conv_id", keep="first").reset_index(drop=True)


def word_counts(texts: Iterable[str], stopwords: Iterable[str] | None = None) -> dict[str, int]:
    """Word frequencies for word clouds, with the ECF EDA module's Unicode-safe words and stopwords."""
    stop = STOPWORDS if stopwords is None else frozenset(stopwords)
    counts: dict[str, int] = {}
    for text in texts:
        for word in words(str(text)):
            if word not in stop:
                counts[word] = counts.get(word, 0) + 1
    return counts
