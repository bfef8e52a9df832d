"""EmpatheticDialogues: load the Kaggle CSV or the original release, clean it with a report, split it.

Both formats become one frame with a row per (speaker turn, listener reply):
``conv_id, situation, emotion, dialogue, response, source_row`` (+ ``split`` for the original
release, + ``text_length`` after cleaning). ``dialogue`` is what the speaker ("Customer") said,
``response`` the listener's ("Agent") reply. Text in any script is kept exactly as read.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import pandas as pd

from utils.env import ROOT
from utils.io import file_sha256

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
                          seed: int = 42) -> dict[str, pd.DataFrame]:
    """Seeded split by conv_id (no conversation in two splits); the release's own split when present."""
    if "split" in df.columns and set(df["split"]) >= {"train", "test"}:
        return {name: df[df["split"] == s].reset_index(drop=True)
                for name, s in (("train", "train"), ("val", "valid"), ("test", "test"))}
    convs = sorted(df["conv_id"].unique())
    random.Random(seed).shuffle(convs)
    n_test = max(1, round(test_frac * len(convs))) if test_frac > 0 else 0
    n_val = max(1, round(val_frac * len(convs))) if val_frac > 0 else 0
    groups = {"test": set(convs[:n_test]), "val": set(convs[n_test:n_test + n_val]),
              "train": set(convs[n_test + n_val:])}
    return {name: df[df["conv_id"].isin(ids)].reset_index(drop=True) for name, ids in
            (("train", groups["train"]), ("val", groups["val"]), ("test", groups["test"]))}


def word_counts(texts: Iterable[str], stopwords: Iterable[str] | None = None) -> dict[str, int]:
    """Word frequencies for word clouds, with the EDA module's Unicode-safe words and stopwords."""
    from utils.ecf.eda import STOPWORDS, words

    stop = STOPWORDS if stopwords is None else frozenset(stopwords)
    counts: dict[str, int] = {}
    for text in texts:
        for word in words(str(text)):
            if word not in stop:
                counts[word] = counts.get(word, 0) + 1
    return counts


# ---------------------------------------------------------------- notebook configs
MISSING_POLICIES = ("mode", "drop")
TEXT_FIELD_CHOICES = ("situation", "dialogue", "situation+dialogue")
SMOKE_ROWS, SMOKE_TEST_ROWS, SMOKE_STEPS, SMOKE_NEW_TOKENS = 32, 8, 4, 16


@dataclass(frozen=True)
class EdDataConfig:
    """Parameters every notebook of the empathetic track shares (names match their parameters cells)."""

    ED_DATA_PATH: str = "data/empathetic_sample.csv"  # Kaggle CSV, original release folder, or one of its csv files
    ED_FORMAT: str = "auto"  # auto | kaggle | original
    MISSING: str = "mode"  # blank cells: mode (fill with the column's mode) | drop (drop the row)
    LOWERCASE: bool = False  # lowercase situation, dialogue and response
    ON_ERROR: str = "raise"  # malformed rows: raise (error naming file/row/column) | drop (counted)
    TRAIN_DIR: str = "results_train"  # outputs go to TRAIN_DIR/empathetic
    ED_LIMIT: int = 0  # first N rows (EDA) or training rows (08, 09); 0 = all
    SEED: int = 42
    SMOKE: bool = False  # few rows and steps, for tests

    def __post_init__(self) -> None:
        choices = {"ED_FORMAT": ("auto", "kaggle", "original"), "MISSING": MISSING_POLICIES,
                   "ON_ERROR": ("raise", "drop")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {list(allowed)}")
        if self.ED_LIMIT < 0:
            raise ValueError(f"ED_LIMIT={self.ED_LIMIT}: use 0 for all rows or a positive count")

    @property
    def data_path(self) -> Path:
        return resolve_path(self.ED_DATA_PATH)

    @property
    def results_dir(self) -> Path:
        return resolve_path(self.TRAIN_DIR) / "empathetic"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"


@dataclass(frozen=True)
class EdEdaConfig(EdDataConfig):
    """notebooks/07_empathetic_eda.ipynb."""

    TOP_WORDS: int = 100  # words per word cloud
    FONT_PATH: str = ""  # TTF for the word clouds; "" = DejaVu Sans (give a Bangla/CJK font for those scripts)


@dataclass(frozen=True)
class EdTrainConfig(EdDataConfig):
    """What 08 (classification) and 09 (generation) share: model, split, LoRA training, tracking."""

    MODEL: str = "smollm2"  # hub id, local folder, .gguf file, or "smollm2" (embedded, offline)
    CHECKPOINT_DIR: str = "checkpoints"  # adapters go to CHECKPOINT_DIR/empathetic/<task>/adapter
    TEST_FRAC: float = 0.1  # share of conversations held out for evaluation
    VAL_FRAC: float = 0.1  # share of conversations for the eval loss
    ED_TEST_LIMIT: int = 0  # evaluate on the first N test rows; 0 = all
    EPOCHS: float = 1.0
    MAX_STEPS: int = 0  # > 0: stop after this many optimizer steps (overrides EPOCHS)
    LEARNING_RATE: float = 2e-4
    BATCH_SIZE: int = 8  # training and inference batch size
    GRAD_ACCUM: int = 1
    MAX_LENGTH: int = 256  # tokens per example (prompt cut from the left, never the answer)
    LORA_R: int = 16
    LORA_ALPHA: int = 32
    LORA_DROPOUT: float = 0.05
    LORA_TARGETS: str = "q_proj,k_proj,v_proj,o_proj"
    REPORT_TO: str = "none"  # none | tensorboard | wandb
    RESUME: bool = True  # continue from the last checkpoint after a disconnect
    SAVE_STEPS: int = 200
    LOGGING_STEPS: int = 10
    EVAL_BASE: bool = True  # also score the model before fine-tuning
    TRACKING_DB: str = ""  # experiment log; "" = $EMOCAUSE_TRACKING_DB or TRAIN_DIR/experiments.sqlite

    def __post_init__(self) -> None:
        super().__post_init__()
        from utils.lm.training import check_schedule

        check_schedule(self.REPORT_TO, self.EPOCHS, self.MAX_STEPS)
        if not 0 < self.TEST_FRAC < 1 or not 0 <= self.VAL_FRAC < 1 - self.TEST_FRAC:
            raise ValueError(f"TEST_FRAC={self.TEST_FRAC}, VAL_FRAC={self.VAL_FRAC}: need 0 < TEST_FRAC, "
                             "0 <= VAL_FRAC and TEST_FRAC + VAL_FRAC < 1")

    @property
    def tracking_db(self) -> Path:
        from utils.tracking import db_path

        return db_path(self.TRACKING_DB or None, self.TRAIN_DIR)

    def task_dir(self, task: str) -> Path:
        """CHECKPOINT_DIR/empathetic/<task>: the training output folder (adapter in ./adapter)."""
        return resolve_path(self.CHECKPOINT_DIR) / "empathetic" / task


@dataclass(frozen=True)
class EdClassifyConfig(EdTrainConfig):
    """notebooks/08_empathetic_classification.ipynb."""

    TEXT_FIELDS: str = "situation+dialogue"  # classifier input: situation | dialogue | situation+dialogue
    ERROR_ROWS: int = 20  # error-table rows shown inline (the CSV has them all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.TEXT_FIELDS not in TEXT_FIELD_CHOICES:
            raise ValueError(f"TEXT_FIELDS={self.TEXT_FIELDS!r}: use one of {list(TEXT_FIELD_CHOICES)}")


@dataclass(frozen=True)
class EdGenerateConfig(EdTrainConfig):
    """notebooks/09_empathetic_generation.ipynb."""

    ED_TEST_LIMIT: int = 200  # generation is the slow part: evaluate on the first N test rows; 0 = all
    MAX_NEW_TOKENS: int = 64  # longest generated response
    RATING_ROWS: int = 20  # prompts in the human rating sheet (each answered before and after tuning)
    RATINGS_PATH: str = ""  # filled sheet(s), file or folder, read when present; "" = TRAIN_DIR/empathetic/ratings
    CLASSIFIER_ADAPTER: str = ""  # chat emotion adapter; "" = 08's adapter when it exists, else the base model
    CHAT_MESSAGES: str = ("I lost my job today and I don't know what to tell my family."
                          "|My sister just had a baby girl!")  # '|'-separated demo turns
    INTERACTIVE: bool = False  # open an input() chat loop in the notebook (blocks a headless run)

    @property
    def ratings_path(self) -> Path:
        return resolve_path(self.RATINGS_PATH) if self.RATINGS_PATH else self.results_dir / "ratings"

    @property
    def chat_messages(self) -> list[str]:
        """The demo turns of CHAT_MESSAGES, blanks dropped."""
        return [m.strip() for m in self.CHAT_MESSAGES.split("|") if m.strip()]

    def classifier_adapter(self) -> str | None:
        """CLASSIFIER_ADAPTER, else notebook 08's adapter; None (the base model) where neither holds weights."""
        folder = resolve_path(self.CLASSIFIER_ADAPTER) if self.CLASSIFIER_ADAPTER else self.task_dir("emotion") / "adapter"
        return str(folder) if (folder / "adapter_model.safetensors").is_file() else None


def rating_items(replies: pd.DataFrame, model: str, rows: int) -> list[dict]:
    """Rating-sheet items for the first ``rows`` prompts: one per reply column present ("before",
    "after"), each naming the model and the stage it came from."""
    head = replies.head(rows)
    return [{"id": f"{stage}-{i}", "model": f"{model} ({stage})", "prompt": row["dialogue"], "response": row[stage]}
            for stage in ("before", "after") if stage in head for i, row in head.iterrows()]


def resolve_path(path: str | os.PathLike) -> Path:
    """Notebook paths are relative to the repository root."""
    from utils.env import resolve

    return resolve(path)


def apply_smoke(cfg: EdDataConfig) -> EdDataConfig:
    """SMOKE: few rows, few steps and short generations, whatever the other parameters say."""
    if not cfg.SMOKE:
        return cfg
    from dataclasses import replace

    changes: dict = {"ED_LIMIT": min(cfg.ED_LIMIT or SMOKE_ROWS, SMOKE_ROWS)}
    if isinstance(cfg, EdTrainConfig):
        changes.update(MAX_STEPS=min(cfg.MAX_STEPS or SMOKE_STEPS, SMOKE_STEPS),
                       ED_TEST_LIMIT=min(cfg.ED_TEST_LIMIT or SMOKE_TEST_ROWS, SMOKE_TEST_ROWS),
                       LOGGING_STEPS=1)
    if isinstance(cfg, EdGenerateConfig):
        changes.update(MAX_NEW_TOKENS=min(cfg.MAX_NEW_TOKENS, SMOKE_NEW_TOKENS),
                       RATING_ROWS=min(cfg.RATING_ROWS, 4))
    return replace(cfg, **changes)


def load_for(cfg: EdDataConfig) -> tuple[pd.DataFrame, CleaningReport]:
    """Load and clean ED_DATA_PATH with the notebook's cleaning parameters."""
    return load_empathetic(cfg.data_path, fmt=cfg.ED_FORMAT, missing=cfg.MISSING, lowercase=cfg.LOWERCASE,
                           on_error=cfg.ON_ERROR)


def splits_for(cfg: EdTrainConfig, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split by conversation, then cap train/val at ED_LIMIT rows and test at ED_TEST_LIMIT."""
    splits = split_by_conversation(df, cfg.TEST_FRAC, cfg.VAL_FRAC, cfg.SEED)
    caps = {"train": cfg.ED_LIMIT, "val": cfg.ED_LIMIT, "test": cfg.ED_TEST_LIMIT}
    return {name: part.head(caps[name]) if caps[name] else part for name, part in splits.items()}


# ---------------------------------------------------------------- EDA
def eda_figures(df: pd.DataFrame, cfg: EdEdaConfig, show: bool = True) -> dict[str, Path]:
    """Emotion countplot, text length by emotion, word clouds of situations and of dialogues."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from utils import plots

    out = cfg.figures_dir
    paths = {"emotions": plots.countplot(df["emotion"], out / "ed_emotion_counts.png",
                                         "EmpatheticDialogues: rows per emotion", order=EMOTIONS_32,
                                         annotate=False, rotate=90, show=show)}
    order = df.groupby("emotion")["text_length"].median().sort_values().index
    fig, ax = plt.subplots(figsize=(12, 4.5))
    sns.boxplot(data=df, x="emotion", y="text_length", order=list(order), ax=ax, color="C0", fliersize=2)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set(title="Speaker-turn length by emotion (characters)", xlabel="", ylabel="characters")
    paths["lengths"] = plots.save_figure(fig, out / "ed_text_length_by_emotion.png", show)
    clouds = {name: dict(sorted(word_counts(df[column]).items(), key=lambda kv: -kv[1])[: cfg.TOP_WORDS])
              for name, column in (("situations", "situation"), ("dialogues", "dialogue"))}
    paths["wordclouds"] = plots.wordcloud_grid(clouds, out / "ed_wordclouds.png", "Most frequent words",
                                               font_path=cfg.FONT_PATH and str(resolve_path(cfg.FONT_PATH)) or None,
                                               columns=2, show=show)
    return paths


def eda_stats(df: pd.DataFrame) -> dict:
    """Counts a report quotes: rows, conversations, per-emotion rows, length summary."""
    lengths = df["text_length"]
    return {"rows": int(len(df)), "conversations": int(df["conv_id"].nunique()),
            "emotions": {e: int(n) for e, n in df["emotion"].value_counts().reindex(EMOTIONS_32, fill_value=0).items()},
            "text_length": {k: float(v) for k, v in lengths.describe().items()},
            "non_ascii_rows": int((~df["dialogue"].map(str.isascii)).sum())}


# ---------------------------------------------------------------- prompts (instruction / response)
CLASSIFY_SYSTEM = "You recognise the emotion in what people tell you."
CLASSIFY_TASK = ("Which emotion does the speaker feel? Answer with one word from: "
                 + ", ".join(EMOTIONS_32) + ".")
RESPOND_SYSTEM = ("You are a warm, empathetic listener. Reply in one or two sentences: show that you "
                  "understand how the person feels, then respond kindly.")


def classifier_text(row: dict | pd.Series, fields: str = "situation+dialogue") -> str:
    """The classifier's input text from a data row (the chat passes the user's message itself)."""
    if fields not in TEXT_FIELD_CHOICES:
        raise ValueError(f"text fields {fields!r}: use one of {list(TEXT_FIELD_CHOICES)}")
    return "\n".join(str(row[f]) for f in fields.split("+"))


def _prompt(tokenizer, system: str, user: str, history: Sequence[tuple[str, str]] = ()) -> list[dict] | str:
    """Chat messages where the tokenizer has a template; a plain instruction text otherwise."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}]
        for said, answered in history:
            messages += [{"role": "user", "content": said}, {"role": "assistant", "content": answered}]
        return [*messages, {"role": "user", "content": user}]
    turns = "".join(f"### Person:\n{said}\n### You:\n{answered}\n" for said, answered in history)
    return f"{system}\n\n{turns}### Person:\n{user}\n### You:\n"


def classify_prompt(tokenizer, text: str) -> list[dict] | str:
    """Instruction for the 32-class classification; the answer is the bare label."""
    return _prompt(tokenizer, CLASSIFY_SYSTEM, f"{CLASSIFY_TASK}\n\nText: {text}")


def respond_prompt(tokenizer, message: str, history: Sequence[tuple[str, str]] = ()) -> list[dict] | str:
    """Instruction for an empathetic reply to ``message`` (after earlier (said, answered) turns)."""
    return _prompt(tokenizer, RESPOND_SYSTEM, message, history)


def example(tokenizer, prompt: list[dict] | str, completion: str, max_length: int) -> dict:
    """{"input_ids", "labels"} with the loss on the completion (+ end of turn) only."""
    from utils.lm.training import tokenize_prompt_completion

    return tokenize_prompt_completion(tokenizer, prompt, completion, max_length)


def prompt_ids(tokenizer, prompt: list[dict] | str, max_length: int) -> list[int]:
    """Token ids that inference feeds: exactly the training prompt, up to where the answer starts."""
    ex = example(tokenizer, prompt, "", max_length)
    return ex["input_ids"][: next(i for i, t in enumerate(ex["labels"]) if t != -100)]


def label_options(tokenizer, max_length: int = 64) -> list[list[int]]:
    """Each label's answer tokens as training writes them (with the end-of-turn token, so a label
    scores as a whole word, never as the prefix of a longer one)."""
    probe = classify_prompt(tokenizer, "x")
    options = []
    for label in EMOTIONS_32:
        ex = example(tokenizer, probe, label, max_length)
        options.append([t for t in ex["labels"] if t != -100])
    return options


def classification_examples(tokenizer, df: pd.DataFrame, fields: str, max_length: int) -> list[dict]:
    """Training examples: prompt = instruction + text, completion = the gold emotion."""
    return [example(tokenizer, classify_prompt(tokenizer, classifier_text(row, fields)), row["emotion"], max_length)
            for row in df.to_dict("records")]


def response_examples(tokenizer, df: pd.DataFrame, max_length: int) -> list[dict]:
    """Training (and perplexity) examples: prompt = the speaker's turn, completion = the listener's reply."""
    return [example(tokenizer, respond_prompt(tokenizer, row["dialogue"]), row["response"], max_length)
            for row in df.to_dict("records")]


def preview(tokenizer, ex: dict) -> str:
    """An example as text with the trained part in [[...]]: shows what the loss sees."""
    n = next(i for i, t in enumerate(ex["labels"]) if t != -100)
    return tokenizer.decode(ex["input_ids"][:n]) + "[[" + tokenizer.decode(ex["input_ids"][n:]) + "]]"


# ---------------------------------------------------------------- training
def train_config(cfg: EdTrainConfig, task: str):
    """training.TrainConfig for task 'emotion' or 'response' from the notebook's parameters."""
    from utils.lm.modeling import LoraSettings
    from utils.lm.training import TrainConfig

    return TrainConfig(
        output_dir=str(cfg.task_dir(task)), epochs=cfg.EPOCHS, max_steps=cfg.MAX_STEPS if cfg.MAX_STEPS > 0 else -1,
        learning_rate=cfg.LEARNING_RATE, batch_size=cfg.BATCH_SIZE, grad_accum=cfg.GRAD_ACCUM,
        max_length=cfg.MAX_LENGTH, seed=cfg.SEED, save_steps=cfg.SAVE_STEPS, logging_steps=cfg.LOGGING_STEPS,
        report_to=cfg.REPORT_TO, lora=LoraSettings.from_config(cfg), resume=cfg.RESUME)


def train_metrics(result) -> dict:
    """The headline numbers of a training.TrainResult for the experiment log."""
    from utils.tracking import train_metrics as headline_numbers

    return headline_numbers(result)


# ---------------------------------------------------------------- inference
def fingerprint(model: str, adapter: str | os.PathLike | None) -> str:
    """Short id of (model, adapter weights): resumable checkpoints of another model are never reused."""
    digest = hashlib.sha256(str(model).encode())
    weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
    if weights is not None and weights.is_file():
        digest.update(file_sha256(weights).encode())
    return digest.hexdigest()[:12]


def classify(lm, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 8) -> list[dict]:
    """Constrained 32-class prediction: every label's full answer is scored, the best one wins."""
    import numpy as np

    from utils.lm.inference import score_options

    if not texts:
        return []
    ids = [prompt_ids(tokenizer, classify_prompt(tokenizer, t), max_length) for t in texts]
    scores = score_options(lm, ids, label_options(tokenizer), batch_size)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return [{"label": EMOTIONS_32[b], "prob": float(p[b])} for b, p in zip(best, probs)]


def respond(lm, tokenizer, messages: Sequence[str], max_new_tokens: int = 64, max_length: int = 256,
            batch_size: int = 8) -> list[str]:
    """Greedy empathetic replies through the chat template; each stops at the end-of-turn token."""
    from utils.lm.inference import generate

    ids = [prompt_ids(tokenizer, respond_prompt(tokenizer, m), max_length) for m in messages]
    # without a chat template a base model may go on to write the next "### Person:" turn itself
    return [text.split("### Person:")[0].strip() for text in generate(lm, tokenizer, ids, max_new_tokens, batch_size)]


def predict_resumable(rows: pd.DataFrame, fn, checkpoint: Path, batch_size: int, desc: str) -> list:
    """``fn`` over the rows in batches, checkpointed to JSONL so a rerun continues where it stopped."""
    from utils.lm.inference import resumable_map

    items = [{"key": f"{r['conv_id']}#{r['source_row']}#{i}", **r} for i, r in enumerate(rows.to_dict("records"))]
    return resumable_map(items, "key", fn, checkpoint, batch_size=max(batch_size, 16), desc=desc)


def classification_eval(lm, tokenizer, test: pd.DataFrame, cfg: EdClassifyConfig, stage: str,
                        adapter: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame]:
    """Predict the test rows (resumable), score them with utils.ecf.metric, return (metrics, predictions)."""
    from utils.ecf.metric import emotion_scores

    checkpoint = cfg.results_dir / "checkpoints" / f"classify_{stage}_{fingerprint(cfg.MODEL, adapter)}.jsonl"

    def fn(batch: list[dict]) -> list[dict]:
        texts = [classifier_text(r, cfg.TEXT_FIELDS) for r in batch]
        return classify(lm, tokenizer, texts, cfg.MAX_LENGTH, cfg.BATCH_SIZE)

    predictions = predict_resumable(test, fn, checkpoint, cfg.BATCH_SIZE, f"classify ({stage})")
    table = test.assign(text=[classifier_text(r, cfg.TEXT_FIELDS) for r in test.to_dict("records")],
                        predicted=[p["label"] for p in predictions], confidence=[p["prob"] for p in predictions])
    return emotion_scores(list(table["emotion"]), list(table["predicted"]), labels=EMOTIONS_32), table


def headline(scores: dict) -> dict:
    """The scalar metrics of utils.ecf.metric.emotion_scores (no report, no matrix)."""
    return {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def generation_eval(lm, tokenizer, test: pd.DataFrame, cfg: EdGenerateConfig, stage: str,
                    adapter: str | os.PathLike | None = None) -> tuple[dict, pd.DataFrame]:
    """Generate replies (resumable), then BLEU, ROUGE, distinct-n and perplexity on the references."""
    from utils.ed import textmetrics

    checkpoint = cfg.results_dir / "checkpoints" / f"respond_{stage}_{fingerprint(cfg.MODEL, adapter)}.jsonl"

    def fn(batch: list[dict]) -> list[str]:
        return respond(lm, tokenizer, [r["dialogue"] for r in batch], cfg.MAX_NEW_TOKENS, cfg.MAX_LENGTH,
                       cfg.BATCH_SIZE)

    replies = predict_resumable(test, fn, checkpoint, cfg.BATCH_SIZE, f"generate ({stage})")
    table = test[["conv_id", "emotion", "dialogue", "response"]].assign(generated=replies)
    metrics = textmetrics.generation_scores(replies, list(test["response"]))
    metrics["perplexity"] = textmetrics.perplexity(lm, response_examples(tokenizer, test, cfg.MAX_LENGTH),
                                                   cfg.BATCH_SIZE)
    metrics["n"] = len(test)
    return metrics, table


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """UTF-8 CSV written atomically (Excel opens it with the BOM-less utf-8 too when asked)."""
    from utils.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)
