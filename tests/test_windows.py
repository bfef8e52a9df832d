"""Long conversations: the cause reads go in windows around the emotional utterances, texts kept whole."""

from __future__ import annotations

import pytest

from utils.ecf import predict, prompts, windows
from utils.ecf.data import EMOTIONS

SENTENCES = ("I can't believe you did that! You made up!", "Oh my God, there is something moving under the sofa.",
             "Why would you say that? That is disgusting.", "I am so sorry, I miss her every day.",
             "Wait, what? You are getting married?", "Okay. See you tomorrow at the coffee house.")


def long_conversation(n: int = 160, cid: int = 9999) -> dict:
    """``n`` utterances of about 25 words (4,000 words at 160), every third one emotional."""
    utts = []
    for k in range(1, n + 1):
        text = " ".join(SENTENCES[(k + m) % len(SENTENCES)] for m in range(3))
        emotion = EMOTIONS[1 + k % 6] if k % 3 == 0 else "neutral"
        utts.append({"utterance_ID": k, "speaker": ("Ana", "Ben", "Cleo")[k % 3], "text": text, "emotion": emotion})
    return {"conversation_ID": cid, "conversation": utts}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from utils.lm.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_the_long_conversation_does_not_fit_whole(tokenizer):
    with pytest.raises(prompts.PromptError, match="160 utterances do not fit"):
        prompts.cause_queries(long_conversation(), tokenizer, 1024)


def test_windows_read_every_candidate_once_within_max_length(tokenizer):
    conv = long_conversation()
    queries, n_windows = windows.cause_queries(conv, tokenizer, 1024)
    assert n_windows > 1
    assert all(len(q.input_ids) <= 1024 for q in queries)
    keys = [k for q in queries for k in q.keys]
    expected = [(i, j) for i, _ in prompts.emotional_utterances(conv)
                for j in prompts.cause_candidates(i, len(conv["conversation"]))]
    assert len(keys) == len(set(keys)) and set(keys) == set(expected)  # each pair read once, none missing


@pytest.mark.parametrize("before, after", [(5, 2), (9, 4)])  # CAUSE_WINDOW_*: wider windows cost more tokens
def test_windows_keep_the_texts_whole(tokenizer, before, after):
    conv = long_conversation()
    for first, last, own in windows.plan_windows(conv, tokenizer, 1024, before, after):
        assert first <= own[0] - before or first == 1
        assert last >= own[-1] + after or last == len(conv["conversation"])
        part = windows._window(conv, first, last)
        assert not windows.needs_windows(part, tokenizer, 1024, before, after)  # fits at full text: nothing shortened
        assert part["conversation"][0]["utterance_ID"] == 1  # renumbered as training conversations are


def test_a_conversation_that_fits_is_read_whole_as_before(tokenizer):
    conv = long_conversation(12)
    queries, n_windows = windows.cause_queries(conv, tokenizer, 1024)
    assert n_windows == 0
    before = prompts.cause_queries(conv, tokenizer, 1024)
    assert [(q.input_ids, q.positions, q.keys) for q in queries] == [(q.input_ids, q.positions, q.keys) for q in before]


def test_predict_causes_reads_a_long_conversation_and_says_so(tiny_model_dir, tokenizer):
    from utils.lm.modeling import load_model

    model = load_model(str(tiny_model_dir))
    convs = [long_conversation(), long_conversation(9, cid=1)]
    found = predict.predict_causes(model, tokenizer, convs, "conversation", batch_size=4, max_length=1024,
                                   threshold=0.0)
    assert found.stats["windowed_conversations"] == 1 and found.stats["windows"] > 1
    assert "1 of 2 conversations" in windows.window_note(found.stats)
    n_pairs = sum(len(prompts.cause_candidates(i, 160)) for i, _ in prompts.emotional_utterances(convs[0]))
    assert len([p for p in found.probs if p[0] == 9999]) == n_pairs


@pytest.mark.parametrize("decide", [None, {}])
def test_the_fused_read_takes_the_long_conversation_too(tiny_model_dir, tokenizer, decide):
    """The fused read starts a fresh cache where a chunk is full (``utils.ecf.fused``): no PromptError."""
    from utils.lm.modeling import load_model

    found = predict.predict_causes(load_model(str(tiny_model_dir)), tokenizer, [long_conversation()], "fused",
                                   max_length=1024, threshold=0.5, decide_offsets=decide)
    assert found.stats["n_prompts"] > 1 and found.probs
