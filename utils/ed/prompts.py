"""EmpatheticDialogues prompts: the classifier's and the listener's instructions, and training examples.

Where the tokenizer has a chat template the prompt is a list of chat messages, otherwise a plain
instruction text; either way training and inference tokenise it the same way
(``utils.lm.train_data.tokenize_prompt_completion``), so inference feeds exactly the training prompt.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from utils.ed.data import EMOTIONS_32
from utils.lm.batch import IGNORE
from utils.lm.train_data import tokenize_prompt_completion, with_system

CLASSIFY_SYSTEM = "You recognise the emotion in what people tell you."
CLASSIFY_TASK = ("Which emotion does the speaker feel? Answer with one word from: "
                 + ", ".join(EMOTIONS_32) + ".")
RESPOND_SYSTEM = ("You are a warm, empathetic listener. Reply in one or two sentences: show that you "
                  "understand how the person feels, then respond kindly.")
TEXT_FIELD_CHOICES = ("situation", "dialogue", "situation+dialogue")  # what the classifier reads


def classifier_text(row: dict | pd.Series, fields: str = "situation+dialogue") -> str:
    """The classifier's input text from a data row (the chat passes the user's message itself)."""
    if fields not in TEXT_FIELD_CHOICES:
        raise ValueError(f"text fields {fields!r}: use one of {list(TEXT_FIELD_CHOICES)}")
    return "\n".join(str(row[f]) for f in fields.split("+"))


def _prompt(tokenizer, system: str, user: str, history: Sequence[tuple[str, str]] = ()) -> list[dict] | str:
    """Chat messages where the tokenizer has a template; a plain instruction text otherwise."""
    if getattr(tokenizer, "chat_template", None):
        messages = []
        for said, answered in history:
            messages += [{"role": "user", "content": said}, {"role": "assistant", "content": answered}]
        return with_system(tokenizer, system, [*messages, {"role": "user", "content": user}])
    turns = "".join(f"### Person:\n{said}\n### You:\n{answered}\n" for said, answered in history)
    return f"{system}\n\n{turns}### Person:\n{user}\n### You:\n"


def classify_prompt(tokenizer, text: str) -> list[dict] | str:
    """Instruction for the 32-class classification; the answer is the bare label."""
    return _prompt(tokenizer, CLASSIFY_SYSTEM, f"{CLASSIFY_TASK}\n\nText: {text}")


def respond_prompt(tokenizer, message: str, history: Sequence[tuple[str, str]] = ()) -> list[dict] | str:
    """Instruction for an empathetic reply to ``message`` (after earlier (said, answered) turns)."""
    return _prompt(tokenizer, RESPOND_SYSTEM, message, history)


def example(tokenizer, prompt: list[dict] | str, completion: str, max_length: int) -> dict:
    """{"input_ids", "labels"} with the loss on the completion (+ end of turn) only."""
    return tokenize_prompt_completion(tokenizer, prompt, completion, max_length)


def _answer_start(ex: dict) -> int:
    """Index of the first trained token (where the answer starts)."""
    return next(i for i, t in enumerate(ex["labels"]) if t != IGNORE)


def prompt_ids(tokenizer, prompt: list[dict] | str, max_length: int) -> list[int]:
    """Token ids that inference feeds: exactly the training prompt, up to where the answer starts."""
    ex = example(tokenizer, prompt, "", max_length)
    return ex["input_ids"][: _answer_start(ex)]


def label_options(tokenizer, max_length: int = 64) -> list[list[int]]:
    """Each label's answer tokens as training writes them (with the end-of-turn token, so a label
    scores as a whole word, never as the prefix of a longer one)."""
    probe = classify_prompt(tokenizer, "x")
    options = []
    for label in EMOTIONS_32:
        ex = example(tokenizer, probe, label, max_length)
        options.append([t for t in ex["labels"] if t != IGNORE])
    return options


def classification_examples(tokenizer, df: pd.DataFrame, fields: str, max_length: int) -> list[dict]:
    """Training examples: prompt = instruction + text, completion = the gold emotion."""
    return [example(tokenizer, classify_prompt(tokenizer, classifier_text(row, fields)), row["emotion"], max_length)
            for row in df.to_dict("records")]


def response_examples(tokenizer, df: pd.DataFrame, max_length: int) -> list[dict]:
    """Training (and perplexity) examples: prompt = the speaker's turn, completion = the listener's reply."""
    return [example(tokenizer, respond_prompt(tokenizer, row["dialogue"]), row["response"], max_length)
            for row in df.to_dict("records")]


def preview(tokenizer, ex: dict) -> str:
    """An example as text with the trained part in [[...]]: shows what the loss sees."""
    n = _answer_start(ex)
    return tokenizer.decode(ex["input_ids"][:n]) + "[[" + tokenizer.decode(ex["input_ids"][n:]) + "]]"
