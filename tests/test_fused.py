"""The fused style: one sequence trains both stages, one read (KV cache) answers both (utils.ecf.fused)."""

from __future__ import annotations

import pytest

from utils.ecf import data, examples, fused, predict, prompts, prompts_fused
from utils.ecf.data import EMOTIONS
from utils.lm.batch import IGNORE
from utils.lm.modeling import label_token_ids, load_model, load_tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def convs():
    return data.load_ecf(data.SAMPLE_PATH)[:6]


def test_fused_sequence_has_each_emotion_then_its_candidates_and_the_gold_answers(tiny, convs):
    _, tok = tiny
    conv = convs[0]
    label_ids, yes_no = label_token_ids(tok, EMOTIONS), label_token_ids(tok, prompts.ANSWERS)
    (query,) = prompts_fused.fused_queries(conv, tok, 1024, label_ids)
    example = prompts.training_labels(query, prompts_fused.fused_answers(conv, query, label_ids, yes_no))
    utts = conv["conversation"]
    emotion_reads = [k for k in query.keys if not isinstance(k, tuple)]
    assert emotion_reads == [u["utterance_ID"] for u in utts]  # every utterance, in order
    cause_reads = [k for k in query.keys if isinstance(k, tuple)]
    emotional = [u["utterance_ID"] for u in utts if u["emotion"] != "neutral"]
    assert sorted({i for i, _ in cause_reads}) == emotional  # only emotional utterances ask for causes
    for i in emotional:  # the utterance itself first, then back to at most five before, never after
        assert [j for k, j in cause_reads if k == i] == prompts_fused.fused_candidates(i)
        assert all(i - 5 <= j <= i for k, j in cause_reads if k == i)
    gold = {(int(e.split("_")[0]), int(c.split("_")[0])) for e, c in conv["emotion-cause_pairs"]}
    for p, key in zip(query.positions, query.keys):
        answer = example["labels"][p + 1]
        if isinstance(key, tuple):
            assert answer == yes_no[0 if key in gold else 1]
        else:  # the gold emotion is the next input token: what the cause reads after it see
            emotion = utts[key - 1]["emotion"]
            assert answer == example["input_ids"][p + 1] == label_ids[EMOTIONS.index(emotion)]
    assert sum(x != IGNORE for x in example["labels"]) == len(query.keys)


def test_a_long_conversation_is_chunked_at_utterance_boundaries_and_every_read_stays(tiny, convs):
    _, tok = tiny
    conv = max(convs, key=lambda c: len(c["conversation"]))
    label_ids = label_token_ids(tok, EMOTIONS)
    whole = prompts_fused.fused_queries(conv, tok, 1024, label_ids)
    parts = prompts_fused.fused_queries(conv, tok, 80, label_ids)
    assert len(whole) == 1 and len(parts) > 1
    assert all(len(q.input_ids) <= 80 for q in parts)
    assert [k for q in parts for k in q.keys] == whole[0].keys
    for q in parts:  # a chunk never starts with an utterance's cause reads: its emotion is in the same chunk
        first = q.keys[0]
        assert not isinstance(first, tuple)


def test_the_one_read_decides_emotions_and_a_forced_read_of_them_gives_the_same_numbers(tiny, convs):
    model, tok = tiny
    for max_length in (1024, 80):  # one cache per conversation, and a cache dropped where training chunks
        # the random model calls few utterances emotional: offsets push it so that cause lines are read
        free = [fused.read_free(model, tok, c, max_length, {"joy": 3.0}) for c in data.strip_labels(convs)]
        assert any(r.probs for r in free)
        labelled = [data.with_emotions(c, r.emotions) for c, r in zip(convs, free)]
        forced = fused.read_forced(model, tok, labelled, max_length)
        for a, b in zip(free, forced):
            assert a.emotions == b.emotions
            assert [x for row in a.logprobs for x in row] == pytest.approx([x for row in b.logprobs for x in row],
                                                                           abs=2e-3)
            assert [p[:2] for p in a.probs] == [p[:2] for p in b.probs]
            assert [p[2] for p in a.probs] == pytest.approx([p[2] for p in b.probs], abs=1e-3)
        # one forward call per utterance (+1 for the last one's candidates), each on its new tokens only
        for conv, r in zip(convs, free):
            n = len(conv["conversation"])
            assert n <= r.forwards <= n + 1 + (max_length < 1024) * n
        if max_length == 1024:
            assert [r.tokens for r in free] == [sum(len(q.input_ids) - 1 for q in prompts_fused.fused_queries(
                c, tok, max_length, label_token_ids(tok, EMOTIONS))) for c in labelled]


def test_offsets_change_what_the_read_decides_and_what_it_reads_next(tiny, convs):
    model, tok = tiny
    conv = data.strip_labels(convs)[0]
    plain = fused.read_free(model, tok, conv, 1024)
    pushed = fused.read_free(model, tok, conv, 1024, {"neutral": -20.0, "anger": 20.0})
    assert set(pushed.emotions) == {"anger"} and len(pushed.probs) == sum(
        len(prompts_fused.fused_candidates(u["utterance_ID"])) for u in conv["conversation"])
    assert len(plain.logprobs) == len(pushed.logprobs) == len(conv["conversation"])
    # the first utterance was read before any emotion was inserted; the later ones see different emotions
    assert plain.logprobs[0] == pushed.logprobs[0]


def test_predict_runs_the_fused_style_for_both_stages(tiny, convs, tmp_path):
    model, tok = tiny
    found = predict.predict_emotions(model, tok, data.strip_labels(convs), "fused", offsets={"joy": 3.0},
                                     checkpoint_path=tmp_path / "emotions.jsonl")
    assert found.stats["invalid_outputs"] == 0 and len(found.logprobs) == len(convs)
    causes = predict.predict_causes(model, tok, data.strip_labels(convs), "fused", decide_offsets={"joy": 3.0})
    # the one read decided the same emotions as the emotion run, and read causes on them
    assert [data.emotions_of([c]) for c in causes.convs] == [data.emotions_of([c]) for c in found.convs]
    assert causes.probs and causes.stats["invalid_outputs"] == 0
    forced = predict.predict_causes(model, tok, found.convs, "fused")
    assert [p[:3] for p in forced.probs] == [p[:3] for p in causes.probs]
    assert [p[3] for p in forced.probs] == pytest.approx([p[3] for p in causes.probs], abs=1e-3)


def test_a_batch_of_conversations_read_together_gives_what_each_read_alone_gives(tiny, convs):
    model, tok = tiny
    inputs = data.strip_labels(convs)
    offsets = {"joy": 3.0, "anger": 2.5}
    for max_length in (1024, 120):  # at 120 some conversations must be read alone (a fresh cache midway)
        built = [prompts_fused.fused_units(c, tok, max_length) for c in inputs]
        fit = [fused._fits_whole(*b, max_length) for b in built]
        assert all(fit) == (max_length == 1024) and any(fit)
        alone = [fused.read_free(model, tok, c, max_length, offsets) for c in inputs]
        together = fused.read_free_batch(model, tok, inputs, max_length, offsets)
        assert any(r.probs for r in together)
        for a, b in zip(alone, together):
            assert a.emotions == b.emotions and a.forwards == b.forwards and a.tokens == b.tokens
            assert [x for r in a.logprobs for x in r] == pytest.approx([x for r in b.logprobs for x in r], abs=2e-3)
            assert [p[:2] for p in a.probs] == [p[:2] for p in b.probs]
            assert [p[2] for p in a.probs] == pytest.approx([p[2] for p in b.probs], abs=1e-3)
