"""The tuned model at work: 32-class emotion by constrained scoring, empathetic replies by greedy decoding."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from utils.ed.data import EMOTIONS_32
from utils.ed.prompts import label_ids, label_words, prompt_ids, read_ids, respond_prompt
from utils.lm.inference import generate, label_logprobs, score_options


def label_probs(lm, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 8) -> np.ndarray:
    """[len(texts), 32]: each emotion's probability, read in one forward pass per text at the answer cue (a
    softmax over the 32 label tokens, as training's answers-only loss; where labels share a first token, over the
    32 whole words' summed log-probs)."""
    if not texts:
        return np.zeros((0, len(EMOTIONS_32)))
    ids, labels = [read_ids(tokenizer, t, max_length) for t in texts], label_ids(tokenizer)
    if labels is None:  # labels share first tokens: each label's whole word, the prompt read once
        logp = score_options(lm, ids, label_words(tokenizer), batch_size)
    else:
        logp = np.stack([r[0] for r in label_logprobs(lm, ids, [[-1]] * len(ids), labels, batch_size)])
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def classify(lm, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 8) -> list[dict]:
    """32-class prediction: the most probable label of ``label_probs``, always one of the 32."""
    probs = label_probs(lm, tokenizer, texts, max_length, batch_size)
    return [{"label": EMOTIONS_32[b], "prob": float(p[b])} for b, p in zip(probs.argmax(axis=1), probs)]


def respond(lm, tokenizer, messages: Sequence[str], max_new_tokens: int = 64, max_length: int = 256,
            batch_size: int = 8) -> list[str]:
    """Greedy empathetic replies through the chat template; each stops at the end-of-turn token."""
    ids = [prompt_ids(tokenizer, respond_prompt(tokenizer, m), max_length) for m in messages]
    # without a chat template a base model may go on to write the next "### Person:" turn itself
    return [text.split("### Person:")[0].strip() for text in generate(lm, tokenizer, ids, max_new_tokens, batch_size)]
