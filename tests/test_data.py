"""Data layer: loading both official formats, validation errors by message, the splitter."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from utils.ecf import data
from utils.env import ROOT


def conv(cid=1, n=3, pairs=(("2_joy", "1"),), emotions=None):
    emotions = emotions or ["neutral", "joy", "neutral"][:n] + ["neutral"] * max(0, n - 3)
    return {"conversation_ID": cid,
            "conversation": [{"utterance_ID": i, "text": f"line {i} !", "speaker": "Ana" if i % 2 else "Ben",
                              "emotion": emotions[i - 1]} for i in range(1, n + 1)],
            "emotion-cause_pairs": [list(p) for p in pairs]}


def write(tmp_path, obj, name="bad.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_sample_is_valid_and_covers_what_it_promises():
    convs = data.load_ecf(data.SAMPLE_PATH)
    assert len(convs) >= 30
    assert set(data.emotions_of(convs)) == set(data.EMOTIONS)
    assert len({u["speaker"] for c in convs for u in c["conversation"]}) >= 6
    distances = {j - i for c in convs for i, _, j in data.emotion_pairs(c)}
    assert {0, -1, -2} <= distances and any(d > 0 for d in distances)
    assert any(ord(ch) > 127 for c in convs for u in c["conversation"] for ch in u["text"])


def test_subtask1_spans_become_utterance_causes(tmp_path):
    raw = conv(pairs=[("2_joy", "1_line 1"), ("2_joy", "1_line"), ("2_joy", "2_line 2 !")])
    convs = data.load_ecf(write(tmp_path, [raw], "s1.json"))
    assert convs[0]["emotion-cause_pairs"] == [["2_joy", "1"], ["2_joy", "2"]]  # two spans in utt 1 -> one pair
    assert convs[0]["cause_spans"][0] == ["2_joy", "1_line 1"]
    assert [u["video_name"] for u in convs[0]["conversation"]] == ["dia1utt1.mp4", "dia1utt2.mp4", "dia1utt3.mp4"]


def test_subtask2_format_keeps_video_names_and_accepts_U_prefix(tmp_path):
    raw = conv(pairs=[("2_joy", "U1")])
    raw["conversation"][0]["video_name"] = "custom.mp4"
    convs = data.load_ecf(write(tmp_path, [raw], "s2.json"))
    assert convs[0]["conversation"][0]["video_name"] == "custom.mp4"
    assert data.emotion_pairs(convs[0]) == [(2, "joy", 1)]


def test_non_ascii_text_survives_load(tmp_path):
    raw = conv()
    raw["conversation"][1]["text"] = "আমি খুব খুশি ! ¡Sí! 桜"
    convs = data.load_ecf(write(tmp_path, [raw], "u.json"))
    assert convs[0]["conversation"][1]["text"] == "আমি খুব খুশি ! ¡Sí! 桜"


def mutate(fn):
    raw = [conv(1), conv(2)]
    fn(raw)
    return raw


BAD_INPUTS = {
    "missing key": (lambda r: r[1]["conversation"][2].pop("speaker"),
                    ["conversation_ID=2", "utterance_ID=3", "field 'speaker'", "missing key"]),
    "wrong type": (lambda r: r[0]["conversation"][0].__setitem__("text", 5),
                   ["conversation_ID=1", "utterance_ID=1", "field 'text'", "expected a string"]),
    "conversation id type": (lambda r: r[1].__setitem__("conversation_ID", "2"),
                             ["conversation_ID=2", "field 'conversation_ID'", "expected an integer"]),
    "unknown emotion": (lambda r: r[0]["conversation"][1].__setitem__("emotion", "happy"),
                        ["conversation_ID=1", "utterance_ID=2", "field 'emotion'", "unknown emotion 'happy'"]),
    "ids out of order": (lambda r: r[1]["conversation"][1].__setitem__("utterance_ID", 3),
                         ["conversation_ID=2", "utterance_ID=3", "1..n in order"]),
    "duplicate conversation": (lambda r: r[1].__setitem__("conversation_ID", 1),
                               ["conversation_ID=1", "duplicate conversation id"]),
    "pair to missing utterance": (lambda r: r[0]["emotion-cause_pairs"].append(["2_joy", "7"]),
                                  ["conversation_ID=1", "utterance_ID=7", "does not exist"]),
    "pair contradicts label": (lambda r: r[1]["emotion-cause_pairs"].append(["2_anger", "1"]),
                               ["conversation_ID=2", "utterance_ID=2", "says 'anger'", "labelled 'joy'"]),
    "empty text": (lambda r: r[0]["conversation"][2].__setitem__("text", "   "),
                   ["conversation_ID=1", "utterance_ID=3", "field 'text'", "empty text"]),
    "pair not a list of two": (lambda r: r[0]["emotion-cause_pairs"].append(["2_joy"]),
                               ["conversation_ID=1", "not a list of two strings"]),
    "neutral pair": (lambda r: r[0]["emotion-cause_pairs"].append(["1_neutral", "1"]),
                     ["conversation_ID=1", "emotion 'neutral'"]),
    "bad emotion part": (lambda r: r[0]["emotion-cause_pairs"].append(["joy_2", "1"]),
                         ["conversation_ID=1", "'<utterance>_<emotion>'"]),
    "empty conversation": (lambda r: r[1].__setitem__("conversation", []),
                           ["conversation_ID=2", "non-empty list of utterances"]),
    "empty speaker": (lambda r: r[0]["conversation"][0].__setitem__("speaker", ""),
                      ["conversation_ID=1", "utterance_ID=1", "empty speaker"]),
    "utterance not an object": (lambda r: r[0]["conversation"].__setitem__(1, "hello"),
                                ["conversation_ID=1", "utterance #2", "expected an object"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_precisely(tmp_path, case):
    fn, fragments = BAD_INPUTS[case]
    path = write(tmp_path, mutate(fn))
    with pytest.raises(data.DataError) as err:
        data.load_ecf(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_invalid_json_names_file_and_position(tmp_path):
    path = write(tmp_path, '[{"conversation_ID": 1,,}]')
    with pytest.raises(data.DataError, match=r"bad\.json: invalid JSON at line 1, column 24"):
        data.load_ecf(path)


def test_top_level_must_be_a_list(tmp_path):
    with pytest.raises(data.DataError, match="top level must be a list"):
        data.load_ecf(write(tmp_path, {"conversation_ID": 1}))


def test_missing_file_says_how_to_get_data(tmp_path):
    with pytest.raises(data.DataError, match="file not found; see data/README.md"):
        data.load_ecf(tmp_path / "nope.json")


def test_unlabelled_files_load_only_when_allowed(tmp_path):
    raw = data.strip_labels([conv()])
    for c in raw:
        del c["emotion-cause_pairs"]
    path = write(tmp_path, raw, "unlabelled.json")
    with pytest.raises(data.DataError, match="field 'emotion'"):
        data.load_ecf(path)
    assert data.load_ecf(path, require_labels=False)[0]["emotion-cause_pairs"] == []


@pytest.mark.parametrize("mode", data.SPLITS)
def test_split_is_deterministic_disjoint_complete(mode):
    convs = [conv(cid) for cid in range(1, 201)]
    a = data.split_conversations(convs, test_frac=0.1, val_frac=0.1, seed=3, mode=mode)
    b = data.split_conversations(list(reversed(convs)), test_frac=0.1, val_frac=0.1, seed=3, mode=mode)
    ids = {k: [c["conversation_ID"] for c in v] for k, v in a.items()}
    assert {k: set(v) for k, v in ids.items()} == {k: {c["conversation_ID"] for c in v} for k, v in b.items()}
    assert len(ids["test"]) == 20 and len(ids["val"]) == 18 and len(ids["train"]) == 162
    assert not set(ids["test"]) & set(ids["val"]) and not set(ids["train"]) & (set(ids["test"]) | set(ids["val"]))
    assert sorted(sum(ids.values(), [])) == list(range(1, 201))
    other = data.split_conversations(convs, seed=4, mode=mode)
    # the seed shuffles a random split; a block split has none to shuffle
    assert ({c["conversation_ID"] for c in other["test"]} == set(ids["test"])) == (mode == "block")
    with pytest.raises(ValueError, match="fractions"):
        data.split_conversations(convs, test_frac=1.0, mode=mode)


def test_block_split_holds_out_the_last_conversations_by_id():
    convs = [conv(cid) for cid in (7, 3, 50, 12, 9, 41, 30, 22, 18, 5)]  # file order is not id order
    split = data.split_conversations(convs, test_frac=0.2, val_frac=0.25, mode="block")
    assert {c["conversation_ID"] for c in split["test"]} == {41, 50}
    assert {c["conversation_ID"] for c in split["val"]} == {22, 30}  # the block right before test
    assert [c["conversation_ID"] for c in split["train"]] == [7, 3, 12, 9, 18, 5]  # file order kept
    with pytest.raises(ValueError, match="SPLIT='shuffled'"):
        data.split_conversations(convs, mode="shuffled")


def test_strip_and_with_pairs_do_not_touch_the_original():
    original = conv()
    frozen = copy.deepcopy(original)
    stripped = data.strip_labels([original])[0]
    assert "emotion" not in stripped["conversation"][0] and stripped["emotion-cause_pairs"] == []
    paired = data.with_pairs(original, [(2, "joy", 2), (2, "joy", 2), (2, "joy", 1)])
    assert paired["emotion-cause_pairs"] == [["2_joy", "2"], ["2_joy", "1"]]
    assert original == frozen


def test_validate_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "utils.ecf.validate", str(data.SAMPLE_PATH)], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0
    n = data.summary(data.load_ecf(data.SAMPLE_PATH))
    assert f"{n['conversations']} conversations, {n['utterances']} utterances, {n['pairs']} pairs" in ok.stdout
    bad = write(tmp_path, mutate(BAD_INPUTS["unknown emotion"][0]))
    res = subprocess.run([sys.executable, "-m", "utils.ecf.validate", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1 and "unknown emotion 'happy'" in res.stderr and "conversation_ID=1" in res.stderr


def test_download_refuses_when_offline(tmp_path):
    with pytest.raises(data.DataError, match="could not download"):
        data.download_ecf(tmp_path, base_url="http://127.0.0.1:9", timeout=2)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_test_path_replaces_the_test_split_and_refuses_a_leak(tmp_path):
    from utils.ecf import artifacts, config

    sample = data.load_ecf(data.SAMPLE_PATH)
    held_out = [dict(c, conversation_ID=c["conversation_ID"] + 1000) for c in sample[:4]]
    path = tmp_path / "official_test.json"
    path.write_text(json.dumps(held_out), encoding="utf-8")
    splits = artifacts.load_splits(config.SeriesConfig(TEST_PATH=str(path)))
    assert [c["conversation_ID"] for c in splits["test"]] == [c["conversation_ID"] for c in held_out]
    assert len(splits["train"]) + len(splits["val"]) == len(sample)  # all of DATA_PATH trains or validates
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(sample[:2]), encoding="utf-8")
    with pytest.raises(ValueError, match="shares conversation_ID"):
        artifacts.load_splits(config.SeriesConfig(TEST_PATH=str(leaky)))
