"""python -m utils.ecf.analyse: any conversation in, emotions and causes out (tiny Llama adapters standing in
for a finished run); bad input gets one line naming the file and line."""

from __future__ import annotations

import json

import pytest
import torch

from utils.ecf import analyse, view
from utils.ecf.data import EMOTIONS
from utils.lm import modeling

FOUR_LINES = ("Ana: We won the final! I cannot believe it!\nBen: No way, that is amazing!\n\n"
              "Ana: <script>alert(1)</script> I was so scared before the last game.\n"
              "Ben: I am sad you did not tell me earlier.\n")


def _adapter(base: str, out, seed: int) -> None:
    strategy = modeling.choose_strategy(quantize=False)
    model = modeling.add_lora(modeling.load_model(base, strategy=strategy), modeling.LoraSettings(r=4, alpha=8), strategy)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(out)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A checkpoint folder as notebooks 02 and 04 leave it: both adapters, both task records, 04's end-to-end rule."""
    root = tmp_path_factory.mktemp("checkpoints")
    common = {"style": "conversation", "model": str(tiny_model_dir), "max_length": 1024}
    records = {"emotion": {**common, "task": "emotion", "emotion_format": "compact", "offsets": {"neutral": 0.0}},
               "cause": {**common, "task": "cause", "window_before": 5, "window_after": 2, "cause_layout": "inline",
                         "threshold": 0.5, "end_to_end": {"offsets": None, "threshold": 0.0, "fallback": "self"}}}
    for seed, (task, record) in enumerate(records.items()):
        folder = root / task / "conversation"
        _adapter(str(tiny_model_dir), folder / "adapter", seed)
        (folder / "task.json").write_text(json.dumps(record))
    return root


@pytest.fixture(scope="module")
def analyser(run_dir):
    return analyse.Analyser.load(run_dir)


def test_four_lines_give_an_emotion_each_and_causes_inside(analyser):
    [conv] = analyse.analyse(FOUR_LINES, analyser=analyser)
    utts = conv["conversation"]
    assert [u["speaker"] for u in utts] == ["Ana", "Ben", "Ana", "Ben"] and utts[2]["text"].startswith("<script>")
    for u in utts:
        assert u["emotion"] in EMOTIONS
        assert abs(sum(u["emotion_probabilities"].values()) - 1) < 1e-3
        assert u["emotion_probability"] == u["emotion_probabilities"][u["emotion"]]
    emotional = {u["utterance_ID"] for u in utts if u["emotion"] != "neutral"}
    pairs = [(int(e.split("_")[0]), int(c)) for e, c in conv["emotion-cause_pairs"]]
    assert {i for i, _ in pairs} == emotional  # cut-off 0: every emotional utterance has its causes
    assert all(1 <= j <= 4 and i - 5 <= j <= i + 2 for i, j in pairs)
    assert len(conv["pair_probabilities"]) == len(pairs) and all(0 <= p <= 1 for p in conv["pair_probabilities"])
    assert len(conv["cause_spans"]) == len(pairs)


def test_the_page_shows_every_utterance_escaped_with_links(analyser):
    result = analyse.analyse(FOUR_LINES, analyser=analyser)
    page = view.html(result, "<b>title</b>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;title" in page
    assert "http" not in page and "src=" not in page  # nothing fetched
    for k in range(1, 5):
        assert f'id="c1-u{k}"' in page
    for e, c in result[0]["emotion-cause_pairs"]:
        assert f'href="#c1-u{c}"' in page
    table = view.table(result)
    assert len(table.splitlines()) == 5 and "U4" in table


def test_json_conversation_and_ecf_file_inputs(analyser, tmp_path):
    talk = [{"speaker": "Ana", "text": "Hi!"}, {"speaker": "Ben", "text": "Oh no, my cat is gone."}]
    [conv] = analyse.analyse(talk, analyser=analyser)
    assert [u["text"] for u in conv["conversation"]] == ["Hi!", "Oh no, my cat is gone."]
    ecf = [{"conversation_ID": 7, "conversation": [{"utterance_ID": 1, "speaker": "A", "text": "x", "emotion": "joy"}],
            "emotion-cause_pairs": [["1_joy", "1"]]}]
    (tmp_path / "ecf.json").write_text(json.dumps(ecf))
    [read] = analyse.read_input(str(tmp_path / "ecf.json"))
    assert read["conversation_ID"] == 7 and "emotion" not in read["conversation"][0]  # gold labels not shown


def test_a_long_conversation_is_read_in_windows_and_said_so(analyser):
    from tests.test_windows import long_conversation

    talk = [{"speaker": u["speaker"], "text": u["text"]} for u in long_conversation(160)["conversation"]]
    notes: list[str] = []
    [conv] = analyse.analyse(talk, analyser=analyser, notes=notes)
    assert len(conv["conversation"]) == 160
    assert len(notes) == 1 and "160 utterances do not fit max_length=1024" in notes[0] and "chunks" in notes[0]
    assert any(u["emotion"] != "neutral" for u in conv["conversation"]) and "causes read in windows" in notes[0]


def test_the_length_note_follows_the_emotions_read(analyser):
    """All neutral: no cause read at all, so no windows to speak of; the emotions still went in chunks."""
    from tests.test_windows import long_conversation

    conv = long_conversation(160)
    quiet = {**conv, "conversation": [{**u, "emotion": "neutral"} for u in conv["conversation"]]}
    note = analyse._length_note(quiet, analyser.tokenizer, 1024, "compact", 1024, 5, 2)
    assert note and "chunks" in note and "windows" not in note
    assert "causes read in windows" in analyse._length_note(conv, analyser.tokenizer, 1024, "compact", 1024, 5, 2)
    short = long_conversation(4)
    assert analyse._length_note(short, analyser.tokenizer, 1024, "compact", 1024, 5, 2) is None

def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    """Windows editors save UTF-8 with a BOM: the JSON is still JSON, the first speaker has no stray character."""
    (tmp_path / "talk.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"speaker": "Ana", "text": "Hi!"}]).encode())
    (tmp_path / "talk.txt").write_bytes(b"\xef\xbb\xbfAna: Hi!\r\nBen: Hello.\r\n")
    assert [u["speaker"] for u in analyse.read_input(str(tmp_path / "talk.json"))[0]["conversation"]] == ["Ana"]
    assert [u["speaker"] for u in analyse.read_input(str(tmp_path / "talk.txt"))[0]["conversation"]] == ["Ana", "Ben"]


def test_cli_writes_json_and_html(run_dir, tmp_path, capsys):
    (tmp_path / "talk.txt").write_text(FOUR_LINES, encoding="utf-8")
    rc = analyse.main([str(tmp_path / "talk.txt"), "--json", str(tmp_path / "o.json"), "--html", str(tmp_path / "o.html"),
                       "--checkpoint-dir", str(run_dir)])
    assert rc == 0
    assert "emotion" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "o.json").read_text())[0]["conversation"]) == 4
    assert "I am sad you did not tell me earlier." in (tmp_path / "o.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("content, expected", [
    (b"", "talk.txt, line 1: empty"),
    (b"\n  \n", "talk.txt, line 1: empty"),
    (b"Ana: hi\nno speaker here\n", "talk.txt, line 2: expected 'Speaker: utterance'"),
    (b"Ana: hi\nBen: caf\xe9\n", "talk.txt, line 2: not UTF-8"),
    (b'[{"speaker": "Ana"}]', "talk.txt, item 1"),
    (b'[{"speaker": "Ana", ', "talk.txt, line 1: invalid JSON"),
])
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, capsys, run_dir, content, expected):
    (tmp_path / "talk.txt").write_bytes(content)
    assert analyse.main([str(tmp_path / "talk.txt"), "--checkpoint-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


def test_no_finished_run_says_which_notebook(tmp_path, capsys):
    (tmp_path / "talk.txt").write_text("Ana: hi\n")
    assert analyse.main([str(tmp_path / "talk.txt"), "--checkpoint-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "02_emotion_finetuning" in err and "python -m utils.run" in err


def _result(speaker: str, text: str) -> list[dict]:
    """One analysed conversation as analyse returns it, without a model."""
    probs = {e: 1.0 if e == "joy" else 0.0 for e in EMOTIONS}
    utts = [{"utterance_ID": 1, "speaker": speaker, "text": text, "emotion": "joy", "emotion_probability": 1.0,
             "emotion_probabilities": probs}]
    return [{"conversation_ID": 1, "conversation": utts, "emotion-cause_pairs": [["1_joy", "1"]],
             "pair_probabilities": [0.9], "cause_spans": [["1_joy", "1_0_1"]], "cause_span_words": [[0, 1]]}]


def test_the_terminal_table_shows_escape_sequences_escaped_and_keeps_every_script():
    text = "\x1b[31mred\x1b]0;title\x07 আমি খুশি 开心 😀"
    table = view.table(_result("Ana\x9b", text), width=80)
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in table)
    assert "Ana\\x9b: \\x1b[31mred\\x1b]0;title\\x07 আমি খুশি 开心 😀" in table
    assert len(table.splitlines()) == 2
    cut = view.table(_result("Ana", "\x1b" * 40), width=48).splitlines()[1]
    assert cut.index("…") == 5 + 47 and cut.index("joy") == 5 + 48 + 1  # cut after escaping: the columns hold


def test_an_error_quoting_the_users_text_is_printed_escaped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(analyse.Analyser, "load", lambda *a, **k: pytest.fail("no model for unreadable input"))
    assert analyse.main([str(tmp_path / "talk\x1b]0;title\x07.txt")]) == 2
    err = capsys.readouterr().err
    assert "talk\\x1b]0;title\\x07.txt" in err and "\x1b" not in err and "\x07" not in err


@pytest.mark.parametrize("flag, where, expected", [
    ("--json", "", "is a folder; give a file path such as"),  # the folder itself
    ("--html", "talk.txt/view.html", "is a file, not a folder"),  # a parent that is a file
])
def test_an_output_path_that_cannot_be_written_fails_before_the_model_loads(tmp_path, capsys, monkeypatch, flag,
                                                                            where, expected):
    monkeypatch.setattr(analyse.Analyser, "load", lambda *a, **k: pytest.fail("the model loaded before the check"))
    (tmp_path / "talk.txt").write_text("Ana: hi\n", encoding="utf-8")
    target = tmp_path / where if where else tmp_path
    assert analyse.main([str(tmp_path / "talk.txt"), flag, str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {target}" in err and expected in err
