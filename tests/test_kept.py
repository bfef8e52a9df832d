"""python -m utils.kept: the runs kept aside, listed with size, date and identity, removed only by name."""

from __future__ import annotations

import json
import re

from utils import kept, run
from utils.env import ROOT
from utils.lm import resume


def _tree(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def _kept_root(root):
    summary = {"tracks": {"ecf": {"run_id": "20261207-101010", "parameters": {"LIMIT": 3, "TEST_DIR": "x"}}}}
    _tree(root, {
        "results_test.kept-20261207-101010/run_summary.json": json.dumps(summary),
        "results_train.kept-20261207-101010/eda_stats.json": "{}",
        "checkpoints/cause/conversation.kept-3f2a9c/run.json": json.dumps(
            {"model": {"model": "smollm2", "sha256": "ab"}, "fingerprint": "3f2a9c"}),
        "checkpoints/cause/conversation.kept-3f2a9c/adapter/adapter_model.safetensors": "x" * 2048,
        "runs/smoke/checkpoints/emotion/conversation.kept-77/adapter/adapter_model.safetensors": "y",
        ".results_test.kept-1.partial/a.json": "{}",  # a copy still under way
        "results_test/subtask2_scores.json": "{}",  # the live results
        "checkpoints/cause/conversation/checkpoint-4/x.kept-9/a": "",  # inside a checkpoint: not looked at
    })


def test_the_same_marker_names_kept_runs_everywhere():
    assert kept.KEPT == run.KEPT == resume.KEPT


def test_kept_runs_are_listed_with_size_date_and_what_made_them(tmp_path, capsys):
    _kept_root(tmp_path)
    assert kept.main(["--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("4 kept")
    shown = {line.split()[0]: line for line in lines[:-1]}
    assert set(shown) == {"results_test.kept-20261207-101010", "results_train.kept-20261207-101010",
                          "checkpoints/cause/conversation.kept-3f2a9c",
                          "runs/smoke/checkpoints/emotion/conversation.kept-77"}
    assert "results of ecf run 20261207-101010 (LIMIT=3)" in shown["results_test.kept-20261207-101010"]
    assert "adapter of smollm2, fingerprint 3f2a9c" in shown["checkpoints/cause/conversation.kept-3f2a9c"]
    assert "2.1 KiB" in shown["checkpoints/cause/conversation.kept-3f2a9c"]
    assert all(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in shown.values())


def test_only_kept_runs_named_are_removed_and_any_other_name_removes_nothing(tmp_path, capsys):
    _kept_root(tmp_path)
    name = "checkpoints/cause/conversation.kept-3f2a9c"
    for other in ("results_test", "nothing.kept-1", str(tmp_path.parent)):
        assert kept.main(["--root", str(tmp_path), "--remove", name, other]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and repr(other) in err and "nothing removed" in err
    assert (tmp_path / name).is_dir() and (tmp_path / "results_test").is_dir()
    assert kept.main(["--root", str(tmp_path), "--remove", name, "results_test.kept-20261207-101010/"]) == 0
    assert "removed checkpoints/cause/conversation.kept-3f2a9c" in capsys.readouterr().out
    assert not (tmp_path / name).exists() and not (tmp_path / "results_test.kept-20261207-101010").exists()
    assert [k.name for k in kept.kept_runs(tmp_path)] == ["results_train.kept-20261207-101010",
                                                          "runs/smoke/checkpoints/emotion/conversation.kept-77"]


def test_what_runs_leave_behind_is_ignored_by_git():
    import subprocess

    made = ["results_test.kept-20261207-101010/a.json", "results_train.kept-1-2/b.json", ".results_test.kept-1.partial/c",
            "checkpoints/cause/conversation.kept-3f2a9c/run.json", "runs/smoke/results_test/d.json",
            "exports/emotion.q8_0.gguf", "exports/merged/model.safetensors"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *made], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == made, done.stderr
    assert subprocess.run(["git", "check-ignore", "--no-index", "-q", "utils/kept.py"], cwd=ROOT).returncode == 1
