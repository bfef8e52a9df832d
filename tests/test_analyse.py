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
    notes = [n for n in notes if n not in analyser.about]  # the lines on the adapters come first
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


# ---------------------------------------------------------------- what the view knows, and says (#40)

def _run_copy(run_dir, tmp_path, emotion: dict | None = None, cause: dict | None = None, e2e: dict | None = None):
    """The fixture's checkpoint folder copied, its task records updated (``e2e``: into 04's end-to-end rule)."""
    import shutil

    root = tmp_path / "checkpoints"
    shutil.copytree(run_dir, root)
    for task, changes in (("emotion", emotion or {}), ("cause", cause or {})):
        path = root / task / "conversation" / "task.json"
        record = {**json.loads(path.read_text()), **changes}
        if task == "cause" and e2e:
            record["end_to_end"] = {**record["end_to_end"], **e2e}
        path.write_text(json.dumps(record))
    return root


ALL_EMOTIONAL = {"offsets": {"neutral": -50.0}}  # every utterance emotional: each has causes to show


def test_the_view_says_what_the_adapters_were_trained_on_and_warns_once_for_the_sample(run_dir, tmp_path, capsys):
    seen = {"data_path": "data/ecf_sample.json", "train_conversations": 27, "global_step": 7,
            "trained_at": "2026-12-07T14:02:03+00:00", "smoke": False}
    root = _run_copy(run_dir, tmp_path, seen, {**seen, "global_step": 9})
    (tmp_path / "talk.txt").write_text(FOUR_LINES, encoding="utf-8")
    assert analyse.main([str(tmp_path / "talk.txt"), "--checkpoint-dir", str(root),
                         "--html", str(tmp_path / "o.html")]) == 0
    out = capsys.readouterr().out
    assert "emotion adapter (" in out and "7 steps on 27 conversations of data/ecf_sample.json" in out
    assert "trained 2026-12-07 14:02 UTC, model " in out
    assert "cause adapter (" in out and "9 steps on 27 conversations" in out
    assert out.count("warning:") == 1 and "bundled synthetic sample (data/ecf_sample.json, emotion and cause)" in out
    assert out.index("warning:") < out.index("utterance ")  # above the table
    page = (tmp_path / "o.html").read_text(encoding="utf-8")
    assert '<div class="warn">warning: trained on the bundled synthetic sample' in page
    assert '<div class="about">emotion adapter' in page
    smoke = analyse.Analyser.load(_run_copy(run_dir, tmp_path / "s", {"smoke": True, "data_path": "x.json"}))
    assert [line for line in smoke.about if line.startswith("warning:")] == [
        next(line for line in smoke.about if "a smoke run (emotion" in line)]
    real = analyse.Analyser.load(_run_copy(run_dir, tmp_path / "r", {"data_path": "ecf:Subtask_2_train.json"}))
    assert not [line for line in real.about if line.startswith("warning:")]
    assert "a data file not recorded" in real.about[1]  # the fixture's cause record predates the field


def test_a_model_per_stage_reads_each_stage_with_its_own_base_model(run_dir, tiny_family, tmp_path):
    import shutil

    root = tmp_path / "checkpoints"
    shutil.copytree(run_dir, root)
    other = str(tiny_family("qwen2"))  # the cause stage on another family: another tokenizer, another model
    folder = root / "cause" / "conversation"
    shutil.rmtree(folder / "adapter")
    _adapter(other, folder / "adapter", 1)
    record = json.loads((folder / "task.json").read_text())
    (folder / "task.json").write_text(json.dumps({**record, "model": other}))
    an = analyse.Analyser.load(root)
    assert an.cause_model is not None and an.cause.model == other != an.emotion.model
    assert an.reader_of("cause")[1].name_or_path != an.reader_of("emotion")[1].name_or_path
    notes: list[str] = []
    [conv] = analyse.analyse(FOUR_LINES, analyser=an, notes=notes)
    assert all(u["emotion"] in EMOTIONS for u in conv["conversation"]) and conv["emotion-cause_pairs"]
    assert any(line.endswith(f"model {other}") for line in notes)  # each adapter says its model


def test_a_fallback_guess_looks_different_from_a_cause_the_model_found(run_dir, tmp_path):
    found = analyse.analyse(FOUR_LINES, analyser=analyse.Analyser.load(
        _run_copy(run_dir, tmp_path / "found", e2e={**ALL_EMOTIONAL, "threshold": 0.0})))
    guessed = analyse.analyse(FOUR_LINES, analyser=analyse.Analyser.load(
        _run_copy(run_dir, tmp_path / "guessed", e2e={**ALL_EMOTIONAL, "threshold": 1.0, "fallback": "self_previous"})))
    assert set(found[0]["pair_sources"]) == {"model"} and len(found[0]["emotion-cause_pairs"]) > 4
    assert set(guessed[0]["pair_sources"]) == {"guess"}  # nothing passes a cut-off of 1: all the fallback's
    assert guessed[0]["emotion-cause_pairs"] == [["1_" + guessed[0]["conversation"][0]["emotion"], "1"]] + [
        p for k in range(2, 5) for p in ([f"{k}_{guessed[0]['conversation'][k - 1]['emotion']}", str(k)],
                                         [f"{k}_{guessed[0]['conversation'][k - 1]['emotion']}", str(k - 1)])]
    table, page = view.table(guessed), view.html(guessed)
    assert "U1 guess (" in table and "7 cause links: 0 found by the model (P above the cut-off), 7 guesses" in table
    assert page.count('class="guess"') == 7 and ">U1 guess</a>" in page
    assert "guess" not in view.table(found).split("causes", 1)[1] and 'class="guess"' not in view.html(found)


def test_an_utterance_the_reads_cut_is_marked_and_its_span_stays_in_what_was_read(analyser, run_dir, tmp_path):
    from utils.ecf import prompts

    long_text = " ".join(["Oh my God, there is something moving under the sofa."] * 30)  # 300 words
    talk = [{"speaker": "Ana", "text": long_text}, {"speaker": "Ben", "text": "I am so sorry, I miss her every day."}]
    seen = prompts.words_read(analyser.tokenizer, {"text": long_text})
    assert 0 < seen < 300
    an = analyse.Analyser.load(_run_copy(run_dir, tmp_path, e2e={**ALL_EMOTIONAL, "threshold": 0.0}))
    notes: list[str] = []
    [conv] = analyse.analyse(talk, analyser=an, notes=notes)
    assert conv["conversation"][0]["words_read"] == seen and "words_read" not in conv["conversation"][1]
    assert conv["conversation"][0]["text"] == long_text  # the output keeps the whole text
    spans = [w for (_, c), w in zip(conv["emotion-cause_pairs"], conv["cause_span_words"]) if c == "1"]
    assert spans and all(0 <= start < end <= seen for start, end in spans)
    assert [n for n in notes if "cut:" in n] == [f"conversation 1: the reads see an utterance's first 96 tokens; cut: "
                                                 f"U1 (read {seen} of 300 words); the rest is marked unread and no "
                                                 "cause span covers it"]
    assert "[cut]" in view.table([conv]).splitlines()[1]
    page = view.html([conv])
    assert page.count('class="unread"') == 1 and f"cut: read {seen} of 300 words" in page


def test_a_rule_chosen_for_another_emotion_adapter_is_said_and_not_used(run_dir, tmp_path):
    import os

    root = _run_copy(run_dir, tmp_path, {"fingerprint": "new1", "trained_at": "2026-12-08T09:00:00+00:00",
                                         "offsets": {"neutral": 0.5}}, {"threshold": 0.35},
                     e2e={"emotion_fingerprint": "old1", "offsets": {"neutral": -9.0}})
    an = analyse.Analyser.load(root)
    [line] = [n for n in an.about if "end-to-end rule" in n]
    assert line.startswith("notebook 04 chose its end-to-end rule for the emotion adapter old1, not this one (new1, "
                           "trained 2026-12-08 09:00 UTC): so the stage-wise rule is used")
    assert an.rule() == ({"neutral": 0.5}, 0.35, "none")  # 02's offsets for this adapter, 04's gold-emotion cut-off
    same = analyse.Analyser.load(_run_copy(run_dir, tmp_path / "same", {"fingerprint": "old1"},
                                           e2e={"emotion_fingerprint": "old1"}))
    assert same.stale is None and same.rule()[2] == "self"
    older = _run_copy(run_dir, tmp_path / "older")  # records from before the fingerprint: the files' times
    weights = older / "emotion" / "conversation" / "adapter" / "adapter_model.safetensors"
    later = (older / "cause" / "conversation" / "task.json").stat().st_mtime + 60
    os.utime(weights, (later, later))
    assert "is newer than the end-to-end rule" in analyse.Analyser.load(older).stale


def test_a_kept_run_the_advice_names_is_accepted_by_analyse_and_export(run_dir, tmp_path, capsys):
    from utils.ecf import export

    root = _run_copy(run_dir, tmp_path)
    (root / "emotion" / "conversation").rename(root / "emotion" / "conversation.kept-0123abcd")
    (tmp_path / "talk.txt").write_text(FOUR_LINES, encoding="utf-8")
    assert analyse.main([str(tmp_path / "talk.txt"), "--checkpoint-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--style conversation.kept-0123abcd" in err  # the advice, followed:
    assert analyse.main([str(tmp_path / "talk.txt"), "--checkpoint-dir", str(root), "--style",
                         "conversation.kept-0123abcd"]) == 0
    out = capsys.readouterr().out
    assert "conversation.kept-0123abcd): " in out and "the cause adapter is the one in place" in out
    assert export.main(["--task", "emotion", "--checkpoint-dir", str(root), "--style", "conversation.kept-0123abcd",
                        "--merged", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "README.md").is_file()


def test_02_and_04_record_what_analyse_says_of_them():
    from datetime import datetime

    from utils.ecf import config, finetune, trained

    record = finetune.provenance(config.FinetuneConfig(MODEL="smollm2", LIMIT=5))
    assert set(record) == set(finetune.PROVENANCE) and record["limit"] == 5 and record["smoke"] is False
    assert trained.is_sample(record["data_path"]) and datetime.fromisoformat(record["trained_at"]).tzinfo is not None
