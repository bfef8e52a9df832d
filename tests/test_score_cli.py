"""The scorer and validator from the shell: strict ids, validated gold, named files, no tracebacks (issue 10)."""

from __future__ import annotations

import json

import pytest

from utils.ecf import score, validate


def conv(cid: int, pairs: list, n: int = 3) -> dict:
    utts = [{"utterance_ID": i, "text": f"word{i} and more", "speaker": "A", "emotion": "joy" if i == 2 else "neutral"}
            for i in range(1, n + 1)]
    return {"conversation_ID": cid, "conversation": utts, "emotion-cause_pairs": pairs}


GOLD = [conv(1, [["2_joy", "1"]]), conv(2, [["2_joy", "2"]])]


def _write(path, obj) -> str:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def _score(capsys, *argv: str) -> tuple[int, str, str]:
    rc = score.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def gold(tmp_path) -> str:
    return _write(tmp_path / "gold.json", GOLD)


def test_a_subtask1_prediction_scored_as_subtask2_is_a_format_error(tmp_path, capsys, gold):
    pred = _write(tmp_path / "pred.json", [conv(1, [["2_joy", "1_0_9"]]), conv(2, [])])  # int() reads 109
    rc, out, err = _score(capsys, "--subtask", "2", "--pred", pred, "--gold", gold)
    assert rc == 2 and not out and pred in err and "Subtask 1 span" in err and "--subtask 1" in err


def test_a_subtask2_prediction_scored_as_subtask1_says_so(tmp_path, capsys):
    gold1 = _write(tmp_path / "gold1.json", [conv(1, [["2_joy", "1_word1 and"]])])
    pred = _write(tmp_path / "pred.json", [conv(1, [["2_joy", "1"]])])
    rc, _, err = _score(capsys, "--subtask", "1", "--pred", pred, "--gold", gold1)
    assert rc == 2 and pred in err and "--subtask 2" in err


@pytest.mark.parametrize("emotion_part", ["²_joy", "1_2_joy", " 2_joy", "2_joy "])
def test_ids_are_ascii_digits_only(tmp_path, capsys, gold, emotion_part):
    pred = _write(tmp_path / "pred.json", [conv(1, [[emotion_part, "1"]]), conv(2, [])])
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", pred, "--gold", gold)
    assert rc == 2 and pred in err and repr(emotion_part) in err  # one line naming the file and the value


@pytest.mark.parametrize("pairs, message", [
    ([["2_joy", "99"]], "cause utterance 99, which does not exist"),
    ([["2_bliss", "1"]], "unknown emotion 'bliss'"),
])
def test_the_gold_file_is_validated_and_named(tmp_path, capsys, pairs, message):
    bad = _write(tmp_path / "bad_gold.json", [conv(1, pairs), conv(2, [])])
    pred = _write(tmp_path / "pred.json", GOLD)
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", pred, "--gold", bad)
    assert rc == 2 and err.startswith(f"error: {bad}") and message in err and pred not in err


def test_a_gold_file_without_annotations_is_refused(tmp_path, capsys):
    unlabelled = _write(tmp_path / "unlabelled.json", [{k: v for k, v in c.items() if k != "emotion-cause_pairs"}
                                                        for c in GOLD])
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", unlabelled, "--gold", unlabelled)
    assert rc == 2 and "conversation_ID=1, field 'emotion-cause_pairs': missing key" in err


def test_extra_predicted_conversations_are_named_and_ignored_as_officially(tmp_path, capsys, gold):
    pred = _write(tmp_path / "pred.json", [*GOLD, conv(7, [["2_joy", "1"]])])
    rc, out, err = _score(capsys, "--subtask", "2", "--pred", pred, "--gold", gold)
    assert rc == 0 and "warning" in err and "[7]" in err
    assert json.loads(out)["weighted_f1"] == pytest.approx(1.0, abs=1e-6)  # the official numbers: 7 not scored


def test_gold_and_prediction_swapped_is_not_silent(tmp_path, capsys):
    small_gold = _write(tmp_path / "gold.json", GOLD[:1])
    pred = _write(tmp_path / "pred.json", GOLD)
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", pred, "--gold", small_gold)
    assert rc == 0 and "[2]" in err  # the conversation the swapped 'gold' lacks is named


def test_unreadable_inputs_and_outputs_are_one_line_errors(tmp_path, capsys, gold):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('[{"conversation_ID": 1, "x": "café"}]'.encode("latin-1"))
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", str(latin1), "--gold", gold)
    assert rc == 2 and str(latin1) in err and "not UTF-8" in err
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", gold, "--gold", gold, "--out", str(tmp_path))
    assert rc == 2 and "is a folder" in err
    no_text = _write(tmp_path / "pairs_only.json", [{"conversation_ID": c["conversation_ID"], "emotion-cause_pairs": []}
                                                    for c in GOLD])
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", no_text, "--gold", gold, "--emotions")
    assert rc == 2 and no_text in err and "'conversation'" in err
    rc, _, err = _score(capsys, "--subtask", "2", "--pred", gold, "--gold", str(tmp_path / "missing.json"))
    assert rc == 2 and "missing.json" in err and "file not found" in err


def test_validate_names_a_folder_and_a_too_deep_file(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    assert validate.main([str(tmp_path), str(deep)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}: is a folder" in err and f"{deep}: JSON nested too deeply" in err
