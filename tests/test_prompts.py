"""Prompt rendering and example building for both styles (pure functions, tiny tokenizer)."""

from __future__ import annotations

import copy

import pytest

from utils.ecf import prompts, prompts_per_utterance
from utils.ecf.data import EMOTIONS, SAMPLE_PATH, load_ecf
from utils.lm.modeling import label_token_ids, load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def sample():
    return load_ecf(SAMPLE_PATH)


def _captioned(conv: dict) -> dict:
    conv = copy.deepcopy(conv)
    conv["conversation"][0]["video_caption"] = "a man points at the sofa"
    conv["conversation"][1]["audio_caption"] = "a frightened voice"
    return conv


def test_rendering_is_compact_and_carries_speakers_and_captions(tok, sample):
    conv = _captioned(sample[0])
    (query,) = prompts.emotion_queries(conv, tok, 1024)
    text = tok.decode(query.input_ids)
    assert "<|im_start|>" not in text  # no chat template, no instructions: just the header and the lines
    assert text.replace(tok.bos_token or "", "", 1).startswith(f" {conv['conversation'][0]['speaker']}:")
    for utt in conv["conversation"]:
        assert f" {utt['speaker']}: {utt['text']}" in text and f"U{utt['utterance_ID']} " not in text
    assert "[video: a man points at the sofa]" in text and "[audio: a frightened voice]" in text
    # a line costs its words, the speaker and the marker: nothing per utterance beyond that
    header_text, marker_text, _ = prompts.EMOTION_FORMATS[prompts.EMOTION_FORMAT]
    marker = len(prompts.encode(tok, marker_text))
    words = sum(len(prompts.encode(tok, f" {u['speaker']}: {prompts.utterance_text(u)}")) for u in conv["conversation"])
    assert len(query.input_ids) <= len(prompts.header_ids(tok, header_text)) + words + (marker + 1) * len(
        conv["conversation"]) + 1
    cause_text = tok.decode(prompts.cause_queries(conv, tok, 1024)[0].input_ids)
    assert f"U1 {conv['conversation'][0]['speaker']} fear:" in cause_text
    assert "[audio: a frightened voice]" in cause_text


def test_header_gets_bos_only_where_the_tokenizer_adds_one(tok):
    with_bos = prompts.header_ids(tok, "Emotions:\n")
    adds = tok("x", add_special_tokens=True)["input_ids"][0] == tok.bos_token_id
    assert (with_bos[0] == tok.bos_token_id) == adds
    assert with_bos[-len(prompts.encode(tok, "Emotions:\n")):] == prompts.encode(tok, "Emotions:\n")


def test_without_a_chat_template_the_prompt_is_plain_text(tok):
    plain = copy.copy(tok)
    plain.chat_template = None
    text = prompts_per_utterance.chat_text(plain, "label it")
    assert "<|im_start|>" not in text and "label it" in text and text.startswith(plain.bos_token)


def test_emotion_labels_are_read_at_each_lines_marker(tok, sample):
    label_ids = label_token_ids(tok, EMOTIONS)
    marker = prompts.encode(tok, prompts.EMOTION_FORMATS["compact"][1])
    for conv in sample:
        (query,) = prompts.emotion_queries(conv, tok, 2048)
        assert query.keys == [u["utterance_ID"] for u in conv["conversation"]]
        example = prompts.training_labels(query, prompts.emotion_answers(conv, query, label_ids))
        scored = [t for t, lab in enumerate(example["labels"]) if lab != prompts.IGNORE]
        assert scored == [p + 1 for p in query.positions]
        for p, utt in zip(query.positions, conv["conversation"]):
            assert query.input_ids[p - len(marker) + 1: p + 1] == marker  # read at the line's end
            assert tok.decode(query.input_ids[: p + 1 - len(marker)]).rstrip().endswith(utt["text"].strip())
            assert example["labels"][p + 1] == label_ids[EMOTIONS.index(utt["emotion"])]
            # the input goes on with the next line (or the end token), not the answer: no gold label leaks on
            assert query.input_ids[p + 1] not in label_ids
        assert query.input_ids[-1] == tok.eos_token_id


def test_long_conversations_are_chunked_within_max_length(tok, sample):
    conv = max(sample, key=lambda c: len(c["conversation"]))
    chunks = prompts.emotion_queries(conv, tok, 60)
    assert len(chunks) > 1 and all(len(q.input_ids) <= 60 for q in chunks)
    assert [k for q in chunks for k in q.keys] == [u["utterance_ID"] for u in conv["conversation"]]
    for q in chunks:
        assert all(p + 1 < len(q.input_ids) for p in q.positions)
    with pytest.raises(prompts.PromptError, match="raise MAX_LENGTH"):
        prompts.emotion_queries(conv, tok, 12)


@pytest.mark.parametrize("layout", prompts.CAUSE_LAYOUTS)
def test_cause_queries_cover_the_window_and_label_gold_pairs(tok, sample, layout):
    yes, no = label_token_ids(tok, prompts.ANSWERS)
    for conv in sample:
        n = len(conv["conversation"])
        queries = prompts.cause_queries(conv, tok, 2048, before=2, after=1, layout=layout)
        keys = [k for q in queries for k in q.keys]
        expected = [(i, j) for i, _ in prompts.emotional_utterances(conv) for j in range(max(1, i - 2), min(n, i + 1) + 1)]
        assert sorted(keys) == sorted(expected)
        for i, _ in prompts.emotional_utterances(conv):  # most likely first: itself, then the ones before, then after
            order = [j - i for a, j in keys if a == i]
            assert order == [d for d in (0, -1, -2, 1) if 1 <= i + d <= n]
        gold = {(int(e.split("_")[0]), int(c)) for e, c in conv["emotion-cause_pairs"]}
        emotion_of = {u["utterance_ID"]: u["emotion"] for u in conv["conversation"]}
        for q in queries:
            example = prompts.training_labels(q, prompts.cause_answers(conv, q, (yes, no)))
            for p, key in zip(q.positions, q.keys):
                assert tok.decode(q.input_ids[: p + 1]).endswith(f" U{key[1]}")
                line = tok.decode(q.input_ids[: p + 1]).rsplit("\n", 1)[-1]
                assert line.startswith(f"U{key[0]} {emotion_of[key[0]]}:")  # the query line names i and its emotion
                assert example["labels"][p + 1] == (yes if key in gold else no)
            assert sum(lab != prompts.IGNORE for lab in example["labels"]) == len(q.keys)


def test_inline_cause_lines_sit_below_their_utterance(tok, sample):
    for conv in sample:
        if not prompts.emotional_utterances(conv):
            continue
        (query,) = prompts.cause_queries(conv, tok, 2048, layout="inline")
        lines = tok.decode(query.input_ids).split("\n")
        speaker = {u["utterance_ID"]: u["speaker"].strip() for u in conv["conversation"]}
        last_utterance = max(k for k, line in enumerate(lines) if line.startswith(
            f"U{conv['conversation'][-1]['utterance_ID']} {conv['conversation'][-1]['speaker']}"))
        for p, (i, j) in zip(query.positions, query.keys):
            k = tok.decode(query.input_ids[: p + 1]).count("\n")  # the line the read is on
            assert lines[k].startswith(f"U{i} ") and lines[k].split(":")[0].count(" ") == 1  # a cause line
            if j <= i:  # right below utterance i's own line
                assert lines[k - 1].startswith(f"U{i} {speaker[i]} ")
            else:  # candidates after i: a line after the whole conversation
                assert k > last_utterance
        after = prompts.cause_queries(conv, tok, 2048, layout="after")
        assert sorted(query.keys) == sorted(k for q in after for k in q.keys)
        # same lines, another place: the inline sequence costs at most one extra ``U4 joy:`` per utterance
        extra = len(prompts.emotional_utterances(conv)) * 6
        assert len(query.input_ids) <= sum(len(q.input_ids) for q in after) + extra


def test_inline_layout_falls_back_to_chunks_when_too_long(tok, sample):
    conv = copy.deepcopy(max(sample, key=lambda c: len(prompts.emotional_utterances(c))))
    for utt in conv["conversation"]:
        utt["text"] = " ".join([utt["text"]] * 30)
    # utterances shorten to a quarter of their cap to fit; below that the grouped chunks take over
    quarter = prompts.cause_queries(conv, tok, 10**6, layout="inline",
                                    max_utterance_tokens=prompts.MAX_UTTERANCE_TOKENS // 4)
    limit = len(quarter[0].input_ids)
    (fits,) = prompts.cause_queries(conv, tok, limit, layout="inline")
    assert fits.input_ids == quarter[0].input_ids
    queries = prompts.cause_queries(conv, tok, limit - 1, layout="inline")
    assert queries == prompts.cause_queries(conv, tok, limit - 1, layout="after") != [fits]
    with pytest.raises(ValueError, match="cause layout"):
        prompts.cause_queries(conv, tok, 400, layout="sideways")


def test_cause_queries_shorten_long_utterances_and_chunk_queries(tok, sample):
    conv = copy.deepcopy(max(sample, key=lambda c: len(prompts.emotional_utterances(c))))
    for utt in conv["conversation"]:
        utt["text"] = " ".join([utt["text"]] * 30)
    queries = prompts.cause_queries(conv, tok, 400)
    assert all(len(q.input_ids) <= 400 for q in queries)
    n = len(conv["conversation"])
    assert sorted(k for q in queries for k in q.keys) == sorted(
        (i, j) for i, _ in prompts.emotional_utterances(conv) for j in prompts.cause_candidates(i, n))
    neutral = copy.deepcopy(conv)
    for utt in neutral["conversation"]:
        utt["emotion"] = "neutral"
    assert prompts.cause_queries(neutral, tok, 400) == []


def test_candidates_are_ordered_most_likely_first():
    assert prompts.ordered_candidates(6, prompts.cause_candidates(6, 10)) == [6, 5, 4, 3, 7, 8, 2, 1]
    assert prompts.ordered_candidates(1, prompts.cause_candidates(1, 3)) == [1, 2, 3]
    # offsets outside CANDIDATE_ORDER (wider windows) follow, nearest first, the earlier one first
    assert prompts.ordered_candidates(10, range(3, 14)) == [10, 9, 8, 7, 11, 12, 6, 5, 13, 4, 3]


def test_cause_candidates_stay_inside_the_conversation():
    assert prompts.cause_candidates(1, 3) == [1, 2, 3]
    assert prompts.cause_candidates(9, 10, before=5, after=2) == [4, 5, 6, 7, 8, 9, 10]
    assert prompts.cause_candidates(3, 3, before=0, after=0) == [3]


def test_per_utterance_prompts_repeat_the_conversation(sample):
    conv = _captioned(sample[0])
    items = prompts_per_utterance.per_utterance_emotion_prompts(conv)
    assert [i for i, _ in items] == [u["utterance_ID"] for u in conv["conversation"]]
    for i, user in items:
        assert all(u["text"] in user for u in conv["conversation"]) and f"does utterance_{i} express?" in user
        assert "(fear)" not in user  # no gold label in an emotion prompt
    assert "[video: a man points at the sofa]" in items[0][1]
    causes = prompts_per_utterance.per_utterance_cause_prompts(conv)
    assert [(i, e) for i, e, _ in causes] == prompts.emotional_utterances(conv)
    assert "(fear)" in causes[0][2]
    assert prompts_per_utterance.per_utterance_emotion_answer(3, "joy") == "utterance_3 :: joy"
    assert prompts_per_utterance.per_utterance_cause_answer(4, [3, 2, 3]) == "utterance_4 :: utterance_2, utterance_3"
    assert prompts_per_utterance.per_utterance_cause_answer(4, []) == "utterance_4 :: none"


@pytest.mark.parametrize("text, label", [
    ("utterance_3 :: joy", "joy"),
    (" utterance_3::Sadness\nmore", "sadness"),
    ("utterance_3 :: happy", None),  # not one of the seven labels
    ("utterance_2 :: joy", None),  # answers for another utterance
    ("joy", None),
    ("", None),
])
def test_per_utterance_emotion_parse(text, label):
    assert prompts_per_utterance.parse_emotion_answer(text, 3) == label


@pytest.mark.parametrize("text, causes, valid", [
    ("utterance_4 :: utterance_2, utterance_3", [2, 3], True),
    ("utterance_4 :: utterance_3, utterance_3.", [3], True),
    ("utterance_4 :: none", [], True),
    ("utterance_4 :: utterance_2, utterance_9", [2], False),  # 9 is outside a 5-utterance conversation
    ("utterance_4 :: because", [], False),
    ("utterance_4 ::", [], False),
    ("utterance_1 :: utterance_2", [], False),
    ("nothing", [], False),
])
def test_per_utterance_cause_parse(text, causes, valid):
    assert prompts_per_utterance.parse_cause_answer(text, 4, 5) == (causes, valid)


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="per_utterance"):
        prompts.check_style("generation")


def test_the_marked_emotion_format(tok, sample):
    conv = sample[0]
    (query,) = prompts.emotion_queries(conv, tok, 2048, fmt="marked")
    text = tok.decode(query.input_ids)
    lines = [f" {u['speaker']}: {u['text']} -> emotion:" for u in conv["conversation"]]
    assert text.replace(tok.bos_token or "", "", 1).startswith("Emotions:\n" + "\n".join(lines) + "\n")
    newline = prompts.encode(tok, "\n")
    for p in query.positions:  # read at the marker's colon; the newline follows, then the next line
        assert tok.decode(query.input_ids[: p + 1]).endswith("-> emotion:")
        assert query.input_ids[p + 1: p + 1 + len(newline)] == newline
    chunks = prompts.emotion_queries(max(sample, key=lambda c: len(c["conversation"])), tok, 70, fmt="marked")
    assert len(chunks) > 1 and all(len(q.input_ids) <= 70 for q in chunks)
    assert query.input_ids != prompts.emotion_queries(conv, tok, 2048)[0].input_ids  # the default is compact
    with pytest.raises(ValueError, match="emotion format 'long'.*'compact', 'marked'"):
        prompts.emotion_queries(conv, tok, 2048, fmt="long")


def test_the_task_records_name_their_format_and_inference_builds_it(tmp_path):
    """The format is a training parameter (02's EMOTION_FORMAT, 04's CAUSE_LAYOUT): the task record keeps it,
    and inference builds what the record names, whatever another notebook of the session used."""
    from utils.ecf import artifacts, config, predict

    cfg = config.FinetuneConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path), EMOTION_FORMAT="marked")
    artifacts.write_task(cfg, "emotion")
    cause = config.CauseFinetuneConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path), CAUSE_LAYOUT="after")
    artifacts.write_task(cause, "cause")
    task = artifacts.read_task(config.EmotionInferenceConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path)), "emotion")
    assert task["emotion_format"] == "marked" and predict.recorded(task) == {"fmt": "marked"}
    task = artifacts.read_task(config.CauseInferenceConfig(MODEL="smollm2", CHECKPOINT_DIR=str(tmp_path)), "cause")
    assert task["cause_layout"] == "after" and predict.recorded(task) == {"layout": "after"}
    assert predict.recorded({"task": "emotion"}) == {"fmt": "compact"}  # records from before the field
    assert predict.recorded({"task": "cause"}) == {"layout": "inline"}
    with pytest.raises(ValueError, match="EMOTION_FORMAT|emotion format 'long'"):
        config.FinetuneConfig(MODEL="smollm2", EMOTION_FORMAT="long")
    with pytest.raises(ValueError, match="cause layout 'sideways'"):
        config.CauseFinetuneConfig(MODEL="smollm2", CAUSE_LAYOUT="sideways")
