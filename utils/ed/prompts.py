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
from utils.lm.modeling import label_token_ids
from utils.lm.train_data import tokenize_prompt_completion, with_system

# Short on purpose: the 32 names are not listed, since the label is read at one position over the 32 label tokens
# (``read_ids``), so the model cannot answer anything else, and a list would be most of every example's tokens
# (each token costs training time: on a CPU the examples an hour holds)
CLASSIFY_SYSTEM = "Name the speaker's emotion."
ANSWER_CUE = "Emotion:"  # the answer's opening words, fed as the prompt's end: the label follows as " <word>"
RESPOND_SYSTEM = ("You are a warm, empathetic listener. Reply in one or two sentences: show that you "
                  "understand how the person feels, then respond kindly.")
TEXT_FIELD_CHOICES = ("situation", "dialogue", "situation+dialogue")  # what the classifier reads


def classifier_text(row: dict | pd.Series, fields: str = "situation+dialogue") -> str:
    """The classifier's input text from a data row (the chat passes the user's message itself); a field that
    repeats the one before (a first turn that is the situation again, about a quarter of the release) is said once."""
    if fields not in TEXT_FIELD_CHOICES:
        raise ValueError(f"text fields {fields!r}: use one of {list(TEXT_FIELD_CHOICES)}")
    texts = [str(row[f]).strip() for f in fields.split("+")]
    return "\n".join(t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1])


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
    """Instruction for the 32-class classification: the text is the user's turn, the answer the label."""
    return _prompt(tokenizer, CLASSIFY_SYSTEM, text)


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


def label_ids(tokenizer) -> list[int] | None:
    """The first token of " <label>" for each of the 32 emotions: the answer tokens the label is read from and
    trained on; None where two labels start with one token (then each label's whole word is scored:
    ``label_words``)."""
    try:
        return label_token_ids(tokenizer, EMOTIONS_32)
    except ValueError:
        return None


def label_words(tokenizer) -> list[list[int]]:
    """Each label's whole answer after the cue, " <label>" and the end-of-text token, as tokenised after it."""
    cue = tokenizer(ANSWER_CUE, add_special_tokens=False)["input_ids"]
    words = []
    for label in EMOTIONS_32:
        ids = tokenizer(ANSWER_CUE + " " + label, add_special_tokens=False)["input_ids"]
        ids = ids[len(cue):] if ids[: len(cue)] == cue else tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        words.append([*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids)
    return words


def read_ids(tokenizer, text: str, max_length: int) -> list[int]:
    """The prompt for ``text`` up to the answer cue: the label is read at its last position. A text too long for
    ``max_length`` is shortened at its end (the situation and the start of the turn stay)."""
    cue = tokenizer(ANSWER_CUE, add_special_tokens=False)["input_ids"]
    while True:
        ids = prompt_ids(tokenizer, classify_prompt(tokenizer, text), 10 * max_length) + cue
        if len(ids) < max_length or len(text) < 16:
            return ids[-(max_length - 1):]
        text = text[: int(len(text) * (max_length - 1) / len(ids)) - 8].rstrip() + " ..."


def classification_examples(tokenizer, df: pd.DataFrame, fields: str, max_length: int) -> list[dict]:
    """Training examples: the prompt up to the answer cue, then the gold label's token, the only one trained
    (with TrainConfig.answer_ids = ``label_ids``: a softmax over the 32 label tokens, as inference reads it); where
    labels share a first token, the label's whole word (``label_words``) with the usual LM loss."""
    ids = label_ids(tokenizer)
    answers = dict(zip(EMOTIONS_32, [[t] for t in ids] if ids else label_words(tokenizer)))
    out = []
    for row in df.to_dict("records"):
        answer = answers[row["emotion"]]
        prompt = read_ids(tokenizer, classifier_text(row, fields), max_length - len(answer) + 1)
        out.append({"input_ids": [*prompt, *answer], "labels": [IGNORE] * len(prompt) + answer})
    return out


def response_examples(tokenizer, df: pd.DataFrame, max_length: int) -> list[dict]:
    """Training (and perplexity) examples: prompt = the speaker's turn, completion = the listener's reply."""
    return [example(tokenizer, respond_prompt(tokenizer, row["dialogue"]), row["response"], max_length)
            for row in df.to_dict("records")]


def preview(tokenizer, ex: dict) -> str:
    """An example as text with the trained part in [[...]]: shows what the loss sees."""
    n = _answer_start(ex)
    return tokenizer.decode(ex["input_ids"][:n]) + "[[" + tokenizer.decode(ex["input_ids"][n:]) + "]]"


def token_count(examples: Sequence[dict]) -> int:
    """Tokens the examples hold (what one epoch trains on)."""
    return sum(len(ex["input_ids"]) for ex in examples)
