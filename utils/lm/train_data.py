"""What training reads: a prompt and its completion as token ids with the loss on the answer, the dataset of such
examples (checked: lengths, at least one label) and the collator that pads a batch of them."""

from __future__ import annotations

from typing import Sequence

from utils.lm.batch import IGNORE


def _apply_template(tokenizer, messages: list[dict], **kwargs) -> str:
    """Render messages with the tokenizer's chat template as text."""
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def with_system(tokenizer, system: str, messages: list[dict]) -> list[dict]:
    """A system turn, then ``messages``; where the chat template refuses a system turn (Gemma's, Mistral's raise
    on one) the system text opens the first user turn instead, as those models' own cards advise."""
    full = [{"role": "system", "content": system}, *messages]
    try:
        _apply_template(tokenizer, full, add_generation_prompt=True)
        return full
    except Exception:  # jinja2's TemplateError from raise_exception, or a template's own check
        first, *rest = messages
        return [{**first, "content": f"{system}\n\n{first['content']}"}, *rest]


def _chat_parts(tokenizer, prompt: str | list[dict], completion: str) -> tuple[list[int], list[int]]:
    """Prompt ids (ending with the assistant header) and answer ids (ending with the end-of-turn token)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    prompt_text = _apply_template(tokenizer, messages, add_generation_prompt=True)
    full = _apply_template(tokenizer, [*messages, {"role": "assistant", "content": completion}])
    eos = tokenizer.eos_token or ""
    if full.startswith(prompt_text):
        answer = full[len(prompt_text) :]
        end = answer.rfind(eos) if eos else -1
        answer = answer[: end + len(eos)] if end >= 0 else answer + eos
    else:  # a template that rewrites earlier turns: fall back to the plain completion
        answer = completion + eos
    # tokenized apart so the prompt ids are exactly what inference feeds (add_generation_prompt)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids


def _plain_parts(tokenizer, prompt: str | list[dict], completion: str) -> tuple[list[int], list[int]]:
    """Without a chat template: bos + prompt, then completion + eos."""
    if not isinstance(prompt, str):
        raise ValueError("chat messages need a tokenizer with a chat template; pass the prompt as text")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
    return prompt_ids, answer_ids


def tokenize_prompt_completion(
    tokenizer,
    prompt: str | list[dict],
    completion: str,
    max_length: int,
    loss_on: str = "answer",
) -> dict[str, list[int]]:
    """{"input_ids", "labels"} for one example; loss on the answer only (or on all tokens, the original recipe).

    Too long: tokens are cut from the left of the prompt (the bos token stays), never from the answer.
    """
    if loss_on not in ("answer", "all"):
        raise ValueError(f"loss_on must be 'answer' or 'all', got {loss_on!r}")
    parts = _chat_parts if getattr(tokenizer, "chat_template", None) else _plain_parts
    prompt_ids, answer_ids = parts(tokenizer, prompt, completion)
    room = max_length - len(answer_ids)
    if room < 1:
        raise ValueError(
            f"the answer alone has {len(answer_ids)} tokens, over max_length={max_length}: raise max_length"
        )
    if len(prompt_ids) > room:
        keep_bos = prompt_ids[:1] if prompt_ids[0] == tokenizer.bos_token_id and room > 1 else []
        prompt_ids = keep_bos + prompt_ids[len(prompt_ids) - (room - len(keep_bos)) :]
    input_ids = prompt_ids + answer_ids
    labels = list(input_ids) if loss_on == "all" else [IGNORE] * len(prompt_ids) + answer_ids
    return {"input_ids": input_ids, "labels": labels}


def collator(pad_id: int):
    """trl's collator: right-pads input_ids with ``pad_id`` and labels with IGNORE (labels as the examples give
    them, so the conversation style's answer-only labels pass through) and builds the attention mask."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_id)


def make_dataset(examples: Sequence[dict], max_length: int, name: str = "train"):
    """A datasets.Dataset of pre-tokenized examples with a length column; bad examples raise."""
    from datasets import Dataset

    if not examples:
        raise ValueError(f"the {name} set is empty")
    for i, ex in enumerate(examples):
        if len(ex["input_ids"]) != len(ex["labels"]):
            raise ValueError(f"{name} example {i}: {len(ex['input_ids'])} input_ids but {len(ex['labels'])} labels")
        if len(ex["input_ids"]) > max_length:
            raise ValueError(
                f"{name} example {i} has {len(ex['input_ids'])} tokens, over max_length={max_length}: "
                "raise max_length or shorten the prompt"
            )
    if all(t == IGNORE for ex in examples for t in ex["labels"]):
        raise ValueError(f"every label in the {name} set is -100: nothing to learn")
    return Dataset.from_dict(
        {
            "input_ids": [list(ex["input_ids"]) for ex in examples],
            "labels": [list(ex["labels"]) for ex in examples],
            "length": [len(ex["input_ids"]) for ex in examples],
        }
    )
