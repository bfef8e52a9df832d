"""Human rubric: export a sheet, fill it, read it back, aggregate; invalid cells name file, row, column."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from utils.ed import rubric

ITEMS = [
    {"id": f"{model}-{i}", "model": model, "prompt": f"prompt {i}, with a comma", "response": f"{model} says {i}"}
    for model in ("base", "tuned") for i in range(3)
]


def fill(path, rater, scores):
    """Fill a sheet like a rater would: scores[(model, criterion)] per row."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update({c: scores[(row["model"], c)] for c in rubric.CRITERIA}, rater=rater)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rubric.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_round_trip_export_fill_import_aggregate(tmp_path):
    sheet = rubric.export_sheet(ITEMS, tmp_path / "sheet.csv")
    blank = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    assert list(blank.columns) == list(rubric.SHEET_COLUMNS) and len(blank) == 6
    assert (blank[list(rubric.CRITERIA)] == "").all().all()
    assert list(blank["model"]) != ["base"] * 3 + ["tuned"] * 3  # shuffled for blind rating

    for rater, base in (("ana", "2"), ("bo", "4")):
        path = tmp_path / "filled" / f"{rater}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(sheet.read_bytes())
        fill(path, rater, {**{("base", c): base for c in rubric.CRITERIA},
                           **{("tuned", c): "5" for c in rubric.CRITERIA}, ("tuned", "tone"): ""})
    ratings = rubric.read_sheets([tmp_path / "filled"])
    assert len(ratings) == 12 and ratings["tone"].isna().sum() == 6  # blanks stay missing
    by_model = rubric.aggregate(ratings).set_index(["model", "criterion"])
    assert by_model.loc[("base", "empathy"), "mean"] == 3.0
    assert by_model.loc[("base", "empathy"), "std"] == pytest.approx(pd.Series([2, 2, 2, 4, 4, 4]).std())
    assert by_model.loc[("tuned", "helpfulness"), "mean"] == 5.0
    assert ("tuned", "tone") not in by_model.index  # nobody rated it
    per_rater = rubric.summary(ratings)["by_model_rater"].set_index(["model", "rater", "criterion"])
    assert per_rater.loc[("base", "bo", "tone"), "mean"] == 4.0 and per_rater.loc[("base", "ana", "tone"), "count"] == 3


@pytest.mark.parametrize("value", ["6", "0", "3.5", "good"])
def test_invalid_cell_names_file_row_and_column(tmp_path, value):
    sheet = rubric.export_sheet(ITEMS, tmp_path / "r.csv", shuffle=False)
    fill(sheet, "ana", {(m, c): "3" for m in ("base", "tuned") for c in rubric.CRITERIA} | {("tuned", "tone"): value})
    with pytest.raises(rubric.RubricError, match=rf"r\.csv, row 5, column 'tone': '{value}'"):
        rubric.read_sheet(sheet)


def test_spreadsheet_float_ratings_and_unnamed_rater(tmp_path):
    sheet = rubric.export_sheet(ITEMS[:1], tmp_path / "carol.csv")
    fill(sheet, "", {("base", c): "4.0" for c in rubric.CRITERIA})
    ratings = rubric.read_sheet(sheet)
    assert ratings.loc[0, "empathy"] == 4 and ratings.loc[0, "rater"] == "carol"


def test_load_if_present_and_missing_columns(tmp_path):
    assert rubric.load_if_present(tmp_path / "none.csv") is None
    bad = tmp_path / "bad.csv"
    bad.write_text("id,model,prompt\n1,m,p\n", encoding="utf-8")
    with pytest.raises(rubric.RubricError, match=r"bad\.csv, row 1: missing column\(s\) \['response'"):
        rubric.load_if_present(bad)
    with pytest.raises(rubric.RubricError, match="duplicate ids"):
        rubric.export_sheet(ITEMS + ITEMS[:1], tmp_path / "dup.csv")
