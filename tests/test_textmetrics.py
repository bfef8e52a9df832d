"""Generation metrics on strings with known answers, and perplexity against the model's own loss."""

from __future__ import annotations

import math

import pytest
import torch

from utils.ed import textmetrics as tm


def test_bleu_identical_and_disjoint():
    refs = ["I am so sorry to hear about your dog.", "That sounds like a wonderful trip!"]
    assert tm.bleu(refs, refs) == pytest.approx(100.0)
    assert tm.bleu(["alpha beta gamma delta", "epsilon zeta eta theta"], refs) == 0.0
    partial = tm.bleu(["I am sorry to hear about your dog.", "That sounds like a wonderful trip!"], refs)
    assert 0.0 < partial < 100.0


def test_rouge_identical_disjoint_and_partial():
    assert tm.rouge(["the cat sat"], ["the cat sat"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert tm.rouge(["alpha beta"], ["one two"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # 2 of 3 unigrams shared each way: P = R = 2/3 -> F1 = 2/3; bigram "the cat" only: 1/2
    scores = tm.rouge(["the cat ran"], ["the cat sat"])
    assert scores["rouge1"] == pytest.approx(2 / 3) and scores["rouge2"] == pytest.approx(0.5)


def test_rouge_scores_non_ascii_text():
    # rouge-score's own tokenizer deletes non-ASCII, which would score these 0
    assert tm.rouge(["আমি খুব চিন্তিত"], ["আমি খুব চিন্তিত"])["rouge1"] == 1.0
    assert tm.rouge(["他们一定很在乎你"], ["他们很在乎你"])["rouge1"] > 0.8
    assert tm.UnicodeTokenizer().tokenize("পরীক্ষা, Running!") == ["পরীক্ষা", "run"]


def test_distinct_and_length_checks():
    assert tm.distinct_n(["a b a b"], 1) == 0.5 and tm.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tm.bleu(["a", "b"], ["a"])


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_perplexity_is_exp_of_the_models_mean_loss_on_response_tokens():
    model = tiny_lm()
    ids = [3, 7, 9, 11, 13, 4, 8]
    labels = [-100, -100, -100, 11, 13, 4, 8]  # prompt masked, response scored
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
    examples = [{"input_ids": ids, "labels": labels}]
    assert tm.perplexity(model, examples) == pytest.approx(math.exp(float(loss)), rel=1e-5)

    # manual: mean of -log p(token | prefix) over the four response tokens
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
    manual = -sum(float(logp[t - 1, ids[t]]) for t in range(3, 7)) / 4
    assert tm.perplexity(model, examples) == pytest.approx(math.exp(manual), rel=1e-5)

    # padding in a batch changes nothing: token-weighted over both examples
    other = {"input_ids": [5, 6, 2], "labels": [-100, 6, 2]}
    total, count = tm.response_nll(model, [examples[0], other], batch_size=2)
    single = [tm.response_nll(model, [e], batch_size=1) for e in (examples[0], other)]
    assert count == 6 and total == pytest.approx(sum(t for t, _ in single), rel=1e-5)


def test_perplexity_without_label_tokens_says_why():
    with pytest.raises(ValueError, match="no label tokens"):
        tm.perplexity(tiny_lm(), [{"input_ids": [1, 2], "labels": [-100, -100]}])
