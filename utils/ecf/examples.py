"""Training examples of both ECF stages in both prompt styles: token ids with the scored labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from utils.ecf import prompts, prompts_fused, prompts_per_utterance, spans
from utils.ecf.data import EMOTIONS
from utils.lm.batch import IGNORE
from utils.lm.modeling import label_token_ids
from utils.lm.train_data import tokenize_prompt_completion


def emotion_examples(convs: Sequence[dict], tokenizer: Any, style: str, max_length: int,
                     fmt: str = prompts.EMOTION_FORMAT) -> list[dict]:
    """Pre-tokenized {"input_ids", "labels"} examples for the emotion model (``fmt``: the conversation style's
    line format, one of prompts.EMOTION_FORMATS)."""
    if prompts.check_style(style) == "conversation":
        label_ids = label_token_ids(tokenizer, EMOTIONS)
        return [prompts.training_labels(q, prompts.emotion_answers(conv, q, label_ids))
                for conv in convs for q in prompts.emotion_queries(conv, tokenizer, max_length, fmt=fmt)]

    pu = prompts_per_utterance
    return [tokenize_prompt_completion(tokenizer, pu.completion_prompt(tokenizer, user),
                                       pu.per_utterance_emotion_answer(i, conv["conversation"][i - 1]["emotion"]),
                                       max_length, loss_on="all")  # the original recipe: loss on every token
            for conv in convs for i, user in pu.per_utterance_emotion_prompts(conv)]


def cause_examples(convs: Sequence[dict], tokenizer: Any, style: str, max_length: int,
                   before: int = prompts.WINDOW_BEFORE, after: int = prompts.WINDOW_AFTER,
                   layout: str = prompts.CAUSE_LAYOUT) -> list[dict]:
    """Pre-tokenized examples for the cause model (emotions as the conversations carry them; ``layout``: where
    the conversation style's cause lines go, one of prompts.CAUSE_LAYOUTS)."""
    if prompts.check_style(style) == "conversation":
        yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
        return [prompts.training_labels(q, prompts.cause_answers(conv, q, yes_no))
                for conv in convs for q in prompts.cause_queries(conv, tokenizer, max_length, before, after,
                                                                  layout=layout)]

    pu = prompts_per_utterance
    return [tokenize_prompt_completion(tokenizer, pu.completion_prompt(tokenizer, user),
                                       pu.per_utterance_cause_answer(i, pu.gold_causes(conv, i)),
                                       max_length, loss_on="all")
            for conv in convs for i, _, user in pu.per_utterance_cause_prompts(conv)]


def fused_examples(convs: Sequence[dict], tokenizer: Any, max_length: int,
                   before: int = prompts.WINDOW_BEFORE) -> list[dict]:
    """Examples of the fused style: one sequence per conversation (chunked when long) that trains the emotion
    reads and the cause reads together (``prompts_fused.fused_queries``, gold emotions)."""
    label_ids = label_token_ids(tokenizer, EMOTIONS)
    yes_no = label_token_ids(tokenizer, prompts.ANSWERS)
    return [prompts.training_labels(q, prompts_fused.fused_answers(conv, q, label_ids, yes_no))
            for conv in convs for q in prompts_fused.fused_queries(conv, tokenizer, max_length, label_ids, before)]


def task_examples(cfg: Any, task: str, convs: Sequence[dict], tokenizer: Any) -> list[dict]:
    """``task``'s examples of ``convs`` as notebook 02's or 04's parameters build them (STYLE, MAX_LENGTH,
    EMOTION_FORMAT; the cause window and CAUSE_LAYOUT). STYLE="fused": the one sequence that trains both stages,
    for either task (02 trains on it; 04 shows it and trains nothing)."""
    if cfg.STYLE == "fused":
        return fused_examples(convs, tokenizer, cfg.MAX_LENGTH)
    if task == "emotion":
        return emotion_examples(convs, tokenizer, cfg.STYLE, cfg.MAX_LENGTH, fmt=cfg.EMOTION_FORMAT)
    return cause_examples(convs, tokenizer, cfg.STYLE, cfg.MAX_LENGTH, cfg.CAUSE_WINDOW_BEFORE,
                          cfg.CAUSE_WINDOW_AFTER, layout=cfg.CAUSE_LAYOUT)


def example_stats(examples: Sequence[dict]) -> dict[str, int]:
    """How many sequences, tokens and answer (loss) tokens a training set has."""
    return {"examples": len(examples),
            "tokens": sum(len(e["input_ids"]) for e in examples),
            "answer_tokens": sum(sum(1 for x in e["labels"] if x != IGNORE) for e in examples)}


def preview(tokenizer: Any, example: dict, limit: int = 1500) -> str:
    """An example as text with each answer token shown in [brackets] where it is scored."""
    pieces = []
    for t, (tok, lab) in enumerate(zip(example["input_ids"], example["labels"])):
        if lab != IGNORE and lab != tok:
            pieces.append(f"[{tokenizer.decode([lab])}]")
        pieces.append(tokenizer.decode([tok]))
    text = "".join(pieces)
    return text if len(text) <= limit else text[:limit] + " ..."


def answer_words(style: str, task: str) -> tuple[str, ...]:
    """The conversation style's answer vocabulary (the seven label words, or yes/no): its loss is a
    softmax over these only, exactly what inference reads; () for per_utterance (the recipe's LM loss)."""
    if prompts.check_style(style) == "per_utterance":
        return ()
    if style == "fused":  # one softmax over both answer sets: each read is scored among the nine words
        return (*EMOTIONS, *prompts.ANSWERS)
    return tuple(EMOTIONS) if task == "emotion" else prompts.ANSWERS


def span_training(cfg: Any, splits: dict[str, list[dict]], tokenizer: Any) -> tuple[list[dict], list[dict]]:
    """The span reads (Subtask 1) that notebook 04 and launch add to the cause examples: from the gold train
    and val conversations when CAUSE_SPANS and the file has spans (conversation style only)."""
    if prompts.check_style(cfg.STYLE) != "conversation" or not getattr(cfg, "CAUSE_SPANS", False):
        return [], []
    return (spans.span_examples(splits["train"], tokenizer, cfg.MAX_LENGTH),
            spans.span_examples(splits["val"], tokenizer, cfg.MAX_LENGTH))



def shown_example(cfg: Any, task: str, tokenizer: Any, first: dict, tail: int | None = None) -> str:
    """What notebooks 02/04 print of their training examples: ``first`` itself (``tail``: its last characters),
    or with SHOW_TEXT off the same format built from the bundled synthetic sample's first conversation, so a
    rendered page of a corpus we may not republish shows the format and none of the corpus's text."""
    if cfg.SHOW_TEXT:
        text = preview(tokenizer, first)
        return text[-tail:] if tail else text
    from utils.ecf.data import SAMPLE_PATH, load_ecf

    sample = load_ecf(SAMPLE_PATH)[:1]
    example = task_examples(cfg, task, sample, tokenizer)[0]
    text = preview(tokenizer, example)
    return (f"(SHOW_TEXT=False: the format on the bundled synthetic sample's first conversation, not {Path(cfg.DATA_PATH).name})\n"
            + (text[-tail:] if tail else text))
