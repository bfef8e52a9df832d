"""The tuned model at work: 32-class emotion by constrained scoring, empathetic replies by greedy decoding."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from utils.ed.data import EMOTIONS_32
from utils.ed.prompts import classify_prompt, label_options, prompt_ids, respond_prompt
from utils.lm.inference import generate, score_options


def classify(lm, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 8) -> list[dict]:
    """Constrained 32-class prediction: every label's full answer is scored, the best one wins."""
    if not texts:
        return []
    ids = [prompt_ids(tokenizer, classify_prompt(tokenizer, t), max_length) for t in texts]
    scores = score_options(lm, ids, label_options(tokenizer), batch_size)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return [{"label": EMOTIONS_32[b], "prob": float(p[b])} for b, p in zip(best, probs)]


def respond(lm, tokenizer, messages: Sequence[str], max_new_tokens: int = 64, max_length: int = 256,
            batch_size: int = 8) -> list[str]:
    """Greedy empathetic replies through the chat template; each stops at the end-of-turn token."""
    ids = [prompt_ids(tokenizer, respond_prompt(tokenizer, m), max_length) for m in messages]
    # without a chat template a base model may go on to write the next "### Person:" turn itself
    return [text.split("### Person:")[0].strip() for text in generate(lm, tokenizer, ids, max_new_tokens, batch_size)]
