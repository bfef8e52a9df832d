"""The per_utterance prompt style: the original MECPE recipe, kept as a baseline.

One prompt per utterance repeating the whole conversation, through the model's chat template where it has one,
answered ``utterance_N :: label`` (or ``utterance_N :: utterance_2, utterance_3`` for causes) by free generation
and parsed here with regular expressions; outputs that do not parse are counted by the caller. Pure: text in,
token ids out.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from utils.ecf.prompts import emotional_utterances, encode, gold_pairs, utterance_line
from utils.ecf.data import EMOTIONS
from utils.lm.train_data import with_system

SYSTEM = "You are an expert annotator of emotions in conversations."


def chat_messages(tokenizer: Any, user: str, system: str = SYSTEM) -> list[dict]:
    """System + user turns; folded into one user turn where the template refuses a system turn."""
    return with_system(tokenizer, system, [{"role": "user", "content": user}])


def plain_prompt(user: str, system: str = SYSTEM) -> str:
    """The prompt text for a model without a chat template (its tokenizer adds bos)."""
    return f"{system}\n\n{user}\n\nAnswer:\n"


def chat_text(tokenizer: Any, user: str, system: str = SYSTEM) -> str:
    """System + user turns through the model's chat template, ending where the assistant starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat_messages(tokenizer, user, system), tokenize=False,
                                             add_generation_prompt=True)
    return (tokenizer.bos_token or "") + plain_prompt(user, system)


def completion_prompt(tokenizer: Any, user: str) -> str | list[dict]:
    """What training.tokenize_prompt_completion takes for the per_utterance recipe: chat messages
    where the model has a template (it renders them), else plain text (it adds bos)."""
    return chat_messages(tokenizer, user) if getattr(tokenizer, "chat_template", None) else plain_prompt(user)


def generation_ids(tokenizer: Any, user: str, room: int) -> list[int]:
    """Prompt ids for generation, identical to the training prompt's and cut like it (from the left,
    bos kept) when longer than ``room``."""
    ids = encode(tokenizer, chat_text(tokenizer, user))
    if len(ids) > room:
        keep = ids[:1] if ids[0] == tokenizer.bos_token_id and room > 1 else []
        ids = keep + ids[len(ids) - (room - len(keep)):]
    return ids


UTT = "utterance_"
_EMOTION_ANSWER = re.compile(r"utterance_(\d+)\s*::\s*([A-Za-z]+)")
_CAUSE_ANSWER = re.compile(r"utterance_(\d+)\s*::\s*(.*)", re.DOTALL)
_CAUSE_ITEM = re.compile(r"^utterance_(\d+)$")


def _transcript(conv: dict, with_emotions: bool, cap_chars: int = 600) -> str:
    """The whole conversation, one ``utterance_N Speaker: text`` line each (long texts cut)."""
    lines = []
    for utt in conv["conversation"]:
        line = utterance_line(utt, utt.get("emotion") if with_emotions else None, prefix=UTT)
        lines.append(line[:cap_chars])
    return "\n".join(lines)


def per_utterance_emotion_prompts(conv: dict) -> list[tuple[int, str]]:
    """(utterance id, user message) per utterance, each repeating the whole conversation."""
    transcript = _transcript(conv, with_emotions=False)
    return [
        (u["utterance_ID"],
         f"Conversation:\n{transcript}\n\nWhich emotion does {UTT}{u['utterance_ID']} express? "
         f"Choose one of: {', '.join(EMOTIONS)}. Answer as '{UTT}{u['utterance_ID']} :: <emotion>'.")
        for u in conv["conversation"]
    ]


def per_utterance_emotion_answer(utt_id: int, emotion: str) -> str:
    """The answer text the recipe trains on: ``utterance_3 :: joy``."""
    return f"{UTT}{utt_id} :: {emotion}"


def parse_emotion_answer(text: str, utt_id: int) -> str | None:
    """The label in a generated answer, or None when it does not parse, names another
    utterance or is no emotion."""
    match = _EMOTION_ANSWER.search(text)
    if not match or int(match.group(1)) != utt_id:
        return None
    label = match.group(2).lower()
    return label if label in EMOTIONS else None


def per_utterance_cause_prompts(conv: dict) -> list[tuple[int, str, str]]:
    """(utterance id, emotion, user message) per emotional utterance (emotions shown)."""
    transcript = _transcript(conv, with_emotions=True)
    return [
        (i, emotion,
         f"Conversation:\n{transcript}\n\nWhich utterances cause the {emotion} of {UTT}{i}? "
         f"Answer as '{UTT}{i} :: {UTT}<j>, {UTT}<k>' or '{UTT}{i} :: none'.")
        for i, emotion in emotional_utterances(conv)
    ]


def per_utterance_cause_answer(utt_id: int, causes: Sequence[int]) -> str:
    """``utterance_4 :: utterance_2, utterance_3`` (or ``:: none``)."""
    listed = ", ".join(f"{UTT}{j}" for j in sorted(set(causes))) or "none"
    return f"{UTT}{utt_id} :: {listed}"


def parse_cause_answer(text: str, utt_id: int, n_utterances: int) -> tuple[list[int], bool]:
    """(cause ids, valid): ids outside the conversation are dropped and make the answer invalid."""
    match = _CAUSE_ANSWER.search(text)
    if not match or int(match.group(1)) != utt_id:
        return [], False
    body = match.group(2).strip().splitlines()[0].strip() if match.group(2).strip() else ""
    if body.lower().rstrip(".") == "none":
        return [], True
    causes, valid = [], bool(body)
    for item in (x.strip().rstrip(".") for x in body.split(",")):
        m = _CAUSE_ITEM.match(item)
        if m and 1 <= int(m.group(1)) <= n_utterances:
            causes.append(int(m.group(1)))
        else:
            valid = False
    return sorted(set(causes)), valid


def gold_causes(conv: dict, utt_id: int) -> list[int]:
    """Gold cause utterance ids of utterance ``utt_id``."""
    return sorted({j for i, j in gold_pairs(conv) if i == utt_id})
