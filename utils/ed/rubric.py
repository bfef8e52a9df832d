"""Human evaluation: export a rating sheet, read filled sheets back, validate and aggregate them.

A sheet is a UTF-8 CSV with one row per (prompt, response): ``id, model, prompt, response,
empathy, tone, helpfulness, rater``. Raters fill the three criteria with integers 1-5 (a blank
cell means "not rated") and their name; any other value is an error naming the file, the row and
the column, so a typo never becomes a silent zero.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from utils.io import atomic_path, spreadsheet_safe

CRITERIA = ("empathy", "tone", "helpfulness")
SHEET_COLUMNS = ("id", "model", "prompt", "response", *CRITERIA, "rater")
SCALE = (1, 5)


class RubricError(ValueError):
    """An invalid rating sheet; the message names the file, row and column."""


def export_sheet(items: Iterable[dict], path: str | os.PathLike, *, rater: str = "",
                 shuffle: bool = True, seed: int = 0) -> Path:
    """Write a blank sheet from dicts with id, model, prompt, response (order shuffled: raters
    should not see one model's answers in a block)."""
    rows = [{k: spreadsheet_safe(str(item[k])) for k in ("id", "model", "prompt", "response")} for item in items]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise RubricError(f"{path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}; "
                          "give each (model, prompt) row its own id")
    if shuffle:
        random.Random(seed).shuffle(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, **dict.fromkeys(CRITERIA, ""), "rater": rater})
    return Path(path)


def _rating(value: str, path: Path, row: int, column: str) -> int | None:
    """'' -> None; '4' (or '4.0' from a spreadsheet) -> 4; anything else raises."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number.is_integer() and SCALE[0] <= number <= SCALE[1]:
        return int(number)
    raise RubricError(f"{path}, row {row}, column '{column}': {value!r} is not a rating; "
                      f"write an integer {SCALE[0]}-{SCALE[1]} or leave the cell blank")


def read_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate one filled sheet; rows are numbered as a spreadsheet shows them (header = 1)."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Excel saves a BOM
        reader = csv.DictReader(f)
        missing = [c for c in SHEET_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RubricError(f"{path}, row 1: missing column(s) {missing}; a sheet has {list(SHEET_COLUMNS)}")
        records = []
        for row_number, row in enumerate(reader, 2):
            if any(v is None for v in row.values()) or None in row:
                raise RubricError(f"{path}, row {row_number}: {len(row)} fields where the header has "
                                  f"{len(reader.fieldnames)}; a comma inside a text cell must be quoted")
            record = {c: row[c] for c in ("id", "model", "prompt", "response")}
            record.update({c: _rating(row[c], path, row_number, c) for c in CRITERIA})
            record["rater"] = row["rater"].strip() or path.stem  # an unnamed sheet is its file's rater
            record["sheet"], record["row"] = path.name, row_number
            records.append(record)
    frame = pd.DataFrame(records, columns=[*SHEET_COLUMNS, "sheet", "row"])
    for c in CRITERIA:
        frame[c] = frame[c].astype("Int64")  # nullable: a blank stays missing, never 0
    return frame


def read_sheets(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Read several sheets (one per rater, or a folder's *.csv) into one frame."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files:
        raise RubricError(f"no rating sheets found in {[str(p) for p in paths]}")
    return pd.concat([read_sheet(f) for f in files], ignore_index=True)


def aggregate(ratings: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Mean, standard deviation and count of each criterion per group (blank cells left out)."""
    long = ratings.melt(id_vars=list(by), value_vars=list(CRITERIA), var_name="criterion",
                        value_name="rating").dropna(subset=["rating"])
    long["rating"] = long["rating"].astype(float)
    table = long.groupby([*by, "criterion"])["rating"].agg(["mean", "std", "count"]).reset_index()
    return table.sort_values([*by, "criterion"], ignore_index=True)


def summary(ratings: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The two tables a report shows: per model, and per model and rater."""
    return {"by_model": aggregate(ratings, ("model",)), "by_model_rater": aggregate(ratings, ("model", "rater"))}


def load_if_present(path: str | os.PathLike) -> pd.DataFrame | None:
    """Headless runs: ratings from a filled sheet (or folder of sheets) when it exists, else None."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.glob("*.csv"))):
        return None
    return read_sheets([path])
