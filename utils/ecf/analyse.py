"""Any conversation in, emotions and causes out: the adapters and decision rules of a finished run, applied.

    python -m utils.ecf.analyse talk.txt --json talk.json --html talk.html
    printf 'Ana: We won!\\nBen: No way!\\n' | python -m utils.ecf.analyse -

Input: plain text, one ``Speaker: utterance`` per line (blank lines ignored), a JSON conversation (a list of
``{"speaker", "text"}``) or an ECF file. Each utterance gets an emotion (notebook 03's read, decided with the
rule notebook 04 chose on val for the pairs, as notebook 05 does), each emotional utterance its causes (05's
read and cut-offs) and each cause its span (05's rule or learnt reads). Writes the official Subtask 2 format
with the probabilities beside it (``--json``), one self-contained HTML page (``--html``) and a table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.ecf import predict, prompts, spans, windows
from utils.ecf.data import EMOTIONS, DataError, strip_labels, validate_conversations, with_emotions
from utils.ecf.decision import decide, offsets_vector, with_fallback
from utils.ecf.trained import (RUN_HINT, NoFinishedRun, Trained, base_style, demo_warning, provenance, stale_rule,
                               trained)
from utils.io import OutputPathError, check_output
from utils.text import terminal_safe

LINE = re.compile(r"^\s*([^:]{1,80}?)\s*:\s*(\S.*?)\s*$")  # "Speaker: utterance"
SPAN_RULE = "longest_clause"  # spans.choose_rule's default: 05's rule where val has no gold spans


class InputError(ValueError):
    """Input that cannot be read as a conversation; the message names the source and the line."""


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not text
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{source}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8") from None


def parse_text(text: str, source: str = "<text>") -> list[dict]:
    """One conversation from ``Speaker: utterance`` lines, or the conversations of a JSON one / ECF file."""
    if text.lstrip().startswith(("[", "{")):
        return _parse_json(text, source)
    utts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = LINE.match(line)
        if not match:
            raise InputError(f"{source}, line {number}: expected 'Speaker: utterance' (a name, a colon, the words), "
                             f"got {line.strip()[:60]!r}")
        utts.append({"utterance_ID": len(utts) + 1, "speaker": match.group(1), "text": match.group(2)})
    if not utts:
        raise InputError(f"{source}, line 1: empty: write one 'Speaker: utterance' per line")
    return [{"conversation_ID": 1, "conversation": utts}]


def _parse_json(text: str, source: str) -> list[dict]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{source}, line {e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not raw:
        raise InputError(f"{source}, line 1: an empty JSON list: no conversation")
    if all(isinstance(c, dict) and "conversation" in c for c in raw):  # an ECF file
        try:
            validate_conversations(raw, source, require_labels=False)
        except DataError as e:
            raise InputError(str(e)) from None
        return strip_labels(raw)
    utts = []
    for k, item in enumerate(raw, 1):
        if not (isinstance(item, dict) and str(item.get("speaker", "")).strip() and str(item.get("text", "")).strip()):
            raise InputError(f"{source}, item {k}: expected {{\"speaker\": ..., \"text\": ...}} with both non-empty")
        utts.append({"utterance_ID": k, "speaker": str(item["speaker"]).strip(), "text": str(item["text"]).strip()})
    return [{"conversation_ID": 1, "conversation": utts}]


def read_input(path: str) -> list[dict]:
    """The conversations in file ``path`` ("-": standard input)."""
    source = "<stdin>" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise InputError(f"{source}, line 0: cannot read it ({e.strerror})") from None
    return parse_text(_decode(raw, source), source)


@dataclass
class Analyser:
    """The base model with both adapters, the two task records and the rule 05 applies."""

    model: Any
    tokenizer: Any
    emotion: Trained
    cause: Trained
    about: list[str] = field(default_factory=list)  # what the adapters were trained on, and any warning
    stale: str | None = None  # why 04's end-to-end rule does not fit this emotion adapter (stage-wise instead)
    cause_model: Any = None  # the cause adapter on its own base model (EMOTION_MODEL and CAUSE_MODEL differ)
    cause_tokenizer: Any = None

    @classmethod
    def load(cls, checkpoint_dir: str | Path = "checkpoints", style: str = "conversation") -> "Analyser":
        """Both adapters of ``style``: "conversation", or a run kept aside ("conversation.kept-<fingerprint>"),
        whose other task's adapter is the one in place where only one task was kept by that name."""
        from utils.lm.modeling import load_model, load_tokenizer

        if base_style(style) != "conversation":
            raise NoFinishedRun(f"analyse reads the conversation style's adapters, not STYLE={style!r}")
        (emotion, e_note), (cause, c_note) = (_named(checkpoint_dir, task, style) for task in ("emotion", "cause"))
        model = load_model(emotion.model, adapter=emotion.adapter)  # peft's "default": the emotion adapter
        cause_model = cause_tokenizer = None
        if emotion.model == cause.model:
            model.load_adapter(str(cause.adapter), adapter_name="cause")
        else:  # a model per stage (EMOTION_MODEL, CAUSE_MODEL): the cause adapter on its own base model
            cause_model, cause_tokenizer = load_model(cause.model, adapter=cause.adapter), load_tokenizer(cause.model)
        stale = stale_rule(emotion, cause)
        about = [provenance(emotion), provenance(cause), *filter(None, [e_note, c_note, demo_warning([emotion, cause])])]
        if stale:
            about.append(f"{stale}: so the stage-wise rule is used (02's offsets for this emotion adapter, 04's "
                         f"cut-offs on gold emotions); rerun notebook 04 ({RUN_HINT} --only 04, with 02's parameters) "
                         "to choose it for this one")
        return cls(model, load_tokenizer(emotion.model), emotion, cause, about, stale, cause_model, cause_tokenizer)

    def reader_of(self, task: str) -> tuple[Any, Any]:
        """(the model with ``task``'s adapter active, its tokenizer)."""
        if task == "cause" and self.cause_model is not None:
            return self.cause_model, self.cause_tokenizer
        self.model.set_adapter("default" if task == "emotion" else "cause")
        return self.model, self.tokenizer

    def rule(self) -> tuple[dict | None, Any, str]:
        """(emotion offsets, cause cut-off(s), fallback): 04's end-to-end rule where recorded and chosen for this
        emotion adapter, else stage-wise."""
        e2e = self.cause.record.get("end_to_end")
        if e2e and not self.stale:
            return e2e.get("offsets"), e2e["threshold"], e2e.get("fallback", "none")
        return self.emotion.record.get("offsets"), self.cause.record.get("threshold", 0.5), "none"


def _named(checkpoint_dir: str | Path, task: str, style: str) -> tuple[Trained, str | None]:
    """``task``'s run of ``style``; for a kept style that only the other task has, the run in place, with a line."""
    try:
        return trained(checkpoint_dir, task, style), None
    except NoFinishedRun:
        if style == base_style(style):
            raise
    run = trained(checkpoint_dir, task, base_style(style))
    return run, f"no {task} run is kept as {style}: the {task} adapter is the one in place"


def _softmax(rows: np.ndarray) -> np.ndarray:
    z = np.exp(rows - rows.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _conversations(text_or_conversation: Any) -> list[dict]:
    """Text, a list of {speaker, text}, one ECF conversation or a list of them, as ECF conversations."""
    if isinstance(text_or_conversation, str):
        return parse_text(text_or_conversation)
    return parse_text(json.dumps(text_or_conversation), "<conversation>")


def analyse(text_or_conversation: Any, checkpoint_dir: str | Path = "checkpoints", style: str = "conversation",
            analyser: Analyser | None = None, notes: list[str] | None = None) -> list[dict]:
    """Emotions, causes and spans of each conversation, in the Subtask 2 format with probabilities beside it."""
    an = analyser or Analyser.load(checkpoint_dir, style)
    convs = _conversations(text_or_conversation)
    offsets, threshold, fallback = an.rule()
    if notes is not None:
        notes += an.about
    length = int(an.emotion.record["max_length"])
    fmt = predict.recorded(an.emotion.record)["fmt"]
    rows = predict.emotion_logprobs(*an.reader_of("emotion"), convs, length, fmt=fmt)
    labelled = [with_emotions(c, decide(np.array(r), offsets_vector(offsets))) for c, r in zip(convs, rows)]
    model, tokenizer = an.reader_of("cause")
    rec = an.cause.record
    found = predict.predict_causes(model, tokenizer, labelled, "conversation", max_length=int(rec["max_length"]),
                                   threshold=threshold, before=rec["window_before"], after=rec["window_after"],
                                   **predict.recorded(rec))
    pred = with_fallback(found.convs, fallback)
    read = [_as_read(c, tokenizer) for c in pred]  # spans only among the words the reads saw
    span_pred = (spans.predict_spans(predict.reader(model, tokenizer), tokenizer, read, int(rec["max_length"]))
                 if rec.get("spans") else spans.subtask1_predictions(read, SPAN_RULE))
    if notes is not None:
        for conv, seen in zip(labelled, read):  # the emotions the cause read used: whether it needed windows
            note = _length_note(conv, an.tokenizer, length, fmt, int(rec["max_length"]), rec["window_before"],
                                rec["window_after"], cause_tokenizer=tokenizer)
            notes += [n for n in (note, _cut_note(conv, seen)) if n]
    return [_record(c, r, found.probs, s, f, seen) for c, r, s, f, seen in zip(pred, rows, span_pred, found.convs, read)]


def _as_read(conv: dict, tokenizer: Any) -> dict:
    """``conv`` with each utterance's text cut to the words the reads saw (``prompts.MAX_UTTERANCE_TOKENS``)."""
    utts = []
    for u in conv["conversation"]:
        seen = prompts.words_read(tokenizer, u)
        utts.append({**u, "text": " ".join(u["text"].split()[:seen])} if seen < len(u["text"].split()) else u)
    return {**conv, "conversation": utts}


def _cut_note(conv: dict, read: dict) -> str | None:
    """One line naming the utterances the reads cut, or None."""
    cut = [(u["utterance_ID"], len(r["text"].split()), len(u["text"].split()))
           for u, r in zip(conv["conversation"], read["conversation"]) if r["text"] != u["text"]]
    if not cut:
        return None
    which = ", ".join(f"U{k} (read {seen} of {n} words)" for k, seen, n in cut)
    return (f"conversation {conv['conversation_ID']}: the reads see an utterance's first {prompts.MAX_UTTERANCE_TOKENS} "
            f"tokens; cut: {which}; the rest is marked unread and no cause span covers it")


def _length_note(conv: dict, tokenizer: Any, emotion_length: int, fmt: str, cause_length: int, before: int,
                 after: int, cause_tokenizer: Any = None) -> str | None:
    """One line where ``conv`` (with the emotions read) did not fit MAX_LENGTH whole, saying how it was read
    (``cause_tokenizer``: the cause model's, where it is not the emotion model's ``tokenizer``)."""
    chunks = len(prompts.emotion_queries(conv, tokenizer, emotion_length, fmt=fmt))
    windowed = windows.needs_windows(conv, cause_tokenizer or tokenizer, cause_length, before, after)
    if chunks == 1 and not windowed:
        return None
    how = [f"emotions read in {chunks} chunks"] if chunks > 1 else []
    if windowed:
        how.append(f"causes read in windows around each emotional utterance ({before} before to {after} after it, "
                   "texts whole)")
    return (f"conversation {conv['conversation_ID']}: its {len(conv['conversation'])} utterances do not fit "
            f"max_length={cause_length if windowed else emotion_length} tokens whole: {'; '.join(how)}")


def _record(conv: dict, rows: list[list[float]], probs: list[list], span_conv: dict, found: dict, read: dict) -> dict:
    """One conversation of the output: each label's probability beside it, each pair's P(yes), whether the model
    found it above the cut-off or the rule's fallback guessed it, its span; an utterance the reads cut says so."""
    p = _softmax(np.array(rows, dtype=np.float64))
    p_pair = {(i, j): pr for cid, i, j, pr in probs if cid == conv["conversation_ID"]}
    out = {k: v for k, v in conv.items() if k != "emotion-cause_pairs"}
    out["conversation"] = [{**u, "emotion_probability": round(float(p[k, EMOTIONS.index(u["emotion"])]), 4),
                            "emotion_probabilities": {e: round(float(x), 4) for e, x in zip(EMOTIONS, p[k])},
                            **({"words_read": len(r["text"].split())} if r["text"] != u["text"] else {})}
                           for k, (u, r) in enumerate(zip(conv["conversation"], read["conversation"]))]
    out["emotion-cause_pairs"] = conv["emotion-cause_pairs"]
    out["pair_probabilities"] = [p_pair.get((int(e.split("_")[0]), int(c))) for e, c in conv["emotion-cause_pairs"]]
    above = {(e, c) for e, c in found["emotion-cause_pairs"]}
    out["pair_sources"] = ["model" if (e, c) in above else "guess" for e, c in conv["emotion-cause_pairs"]]
    out["cause_spans"] = span_conv["emotion-cause_pairs"]  # Subtask 1: "<utterance>_<start>_<end>", as the scorer
    # reads positions (a span ending in punctuation encodes as 0_0 there); the words themselves, for a reader:
    texts = {u["utterance_ID"]: u["text"] for u in read["conversation"]}
    out["cause_span_words"] = [list(_span_words(texts[int(c)], s)) for (_, c), (_, s) in
                               zip(conv["emotion-cause_pairs"], span_conv["emotion-cause_pairs"])]
    return out


def _span_words(text: str, encoded: str) -> tuple[int, int]:
    """Whitespace-token [start, end) of a cause span: the encoded one where it names words, else the rule's."""
    _, start, end = (int(x) for x in encoded.split("_"))
    return (start, end) if end > start else spans.RULES[SPAN_RULE](text)


def main(argv: list[str] | None = None) -> int:
    from utils.ecf import view
    from utils.io import write_json_atomic, write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m utils.ecf.analyse", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("input", help="a text file of 'Speaker: utterance' lines, a JSON conversation, an ECF file, "
                                      "or - for standard input")
    parser.add_argument("--json", help="write the Subtask 2 format with probabilities here")
    parser.add_argument("--html", help="write the one-page view here")
    parser.add_argument("--checkpoint-dir", default="checkpoints", help="the finished run's adapters")
    parser.add_argument("--style", default="conversation", help="the STYLE the adapters were trained with")
    args = parser.parse_args(argv)
    from utils import env

    env.quiet_command()
    notes: list[str] = []
    try:
        for flag, path, example in (("--json", args.json, "talk.json"), ("--html", args.html, "talk.html")):
            if path:
                check_output(path, flag, example=example)  # before the model loads, not after the inference
        convs = read_input(args.input)
        an = Analyser.load(args.checkpoint_dir, args.style)
        result = analyse(convs, analyser=an, notes=notes)
        if args.json:
            write_json_atomic(args.json, result)
        if args.html:
            write_text_atomic(args.html, view.html(result, f"{args.input} · {an.emotion.model}", notes))
    except (InputError, NoFinishedRun, OutputPathError, OSError) as e:
        print(f"error: {terminal_safe(str(e))}", file=sys.stderr)  # a file name or an ECF id is the user's text
        return 2
    for line in notes:
        print(terminal_safe(line))
    print(view.table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
