"""Atomic artifact writes and torn-line tolerant JSONL."""

from __future__ import annotations

import json

import pytest

from utils import io


def test_failed_serialisation_leaves_old_file_intact(tmp_path):
    path = tmp_path / "out.json"
    io.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        io.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_exception_inside_atomic_path_writes_nothing(tmp_path):
    path = tmp_path / "fig.png"
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_jsonl_ignores_torn_last_line(tmp_path):
    path = tmp_path / "ckpt.jsonl"
    io.append_jsonl(path, {"k": 1, "text": "খুশি"})
    io.append_jsonl(path, {"k": 2})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"k": 3, "te')
    assert io.read_jsonl(path) == [{"k": 1, "text": "খুশি"}, {"k": 2}]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    path = io.write_json_atomic(tmp_path / "a.json", [1])
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_folder_made_beside_its_target_gets_the_umasks_mode_not_mkdtemps(tmp_path):
    import os
    before = os.umask(0o027)
    try:
        made = io.temp_dir_beside(tmp_path / "new" / "merged")
    finally:
        os.umask(before)
    assert made.parent == tmp_path / "new" and made.name.startswith(".merged.") and not list(made.iterdir())
    assert made.stat().st_mode & 0o777 == 0o750  # mkdtemp alone makes 0700


def test_an_output_path_is_checked_before_the_work(tmp_path, monkeypatch):
    assert io.check_output(tmp_path / "new" / "deeper" / "a.json", "--json") == tmp_path / "new" / "deeper" / "a.json"
    assert io.check_output(tmp_path, "--merged", folder=True) == tmp_path  # an existing folder is replaced whole
    (tmp_path / "f").write_text("x")
    for path, folder, said in ((tmp_path, False, "is a folder"), (tmp_path / "f", True, "is a file; give a folder"),
                               (tmp_path / "f" / "a.json", False, f"{tmp_path / 'f'} is a file, not a folder")):
        with pytest.raises(io.OutputPathError, match=f"^--x {path}.*{said}"):
            io.check_output(path, "--x", folder=folder)
    monkeypatch.setattr(io.os, "access", lambda path, mode: False)  # as a user without write permission (not root)
    with pytest.raises(io.OutputPathError, match=f"may not write in {tmp_path}"):
        io.check_output(tmp_path / "new" / "a.json", "--json")


def test_csv_cells_that_would_run_as_formulas_are_written_as_text(tmp_path):
    import pandas as pd

    from utils.io import write_csv

    frame = pd.DataFrame({"text": ["=HYPERLINK(\"http://x\")", "+1", "-2 apples", "@cmd", "plain", "a=b"],
                          "n": [1, 2, 3, 4, 5, 6]})
    path = write_csv(frame, tmp_path / "errors.csv")
    back = pd.read_csv(path)
    assert back["text"].tolist() == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2 apples", "'@cmd", "plain", "a=b"]
    assert back["n"].tolist() == [1, 2, 3, 4, 5, 6]  # numbers stay numbers
