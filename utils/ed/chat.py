"""Empathetic chat: detect the emotion of each message (32 classes, constrained scoring), answer kindly.

    python -m utils.ed.chat                                   # embedded SmolLM2 (offline) with notebooks 08 and 09's
                                                              # adapters where they exist
    python -m utils.ed.chat --adapter checkpoints/empathetic/response/adapter \\
                         --classifier-adapter checkpoints/empathetic/emotion/adapter
    printf 'I failed my exam\\n/quit\\n' | python -m utils.ed.chat --model path/to/model

Reads stdin line by line, so it works piped; ``/quit`` (or end of input) exits. Replies go
through the model's chat template and stop at its end-of-turn token.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO

from utils.ed.predict import classify
from utils.ed.prompts import prompt_ids, respond_prompt
from utils.lm.inference import generate
from utils.env import resolve_artifact
from utils.text import terminal_safe
from utils.lm.modeling import check_adapter, is_adapter, load_model, load_tokenizer

QUIT = "/quit"
DEFAULT_MODEL = "smollm2"
AUTO = "auto"  # --adapter / --classifier-adapter: notebook 09's / 08's adapter under checkpoints/, where it exists


def found_adapter(asked: str | None, task: str) -> str | None:
    """``asked``, or for "auto" the adapter notebooks 08 (task "emotion") and 09 ("response") left under
    checkpoints/empathetic/ (None where there is none); "none": the base model."""
    if asked is None or asked.lower() == "none":
        return None
    if asked != AUTO:
        return asked
    folder = resolve_artifact("checkpoints") / "empathetic" / task / "adapter"
    return str(folder) if is_adapter(folder) else None


def _check_adapter(path: str | os.PathLike) -> str:
    """An adapter folder with safetensors weights (peft would unpickle a .bin)."""
    return str(check_adapter(path, "pass the 'adapter' folder that notebook 08 or 09 wrote"))


class ChatSession:
    """One model (with an optional response adapter and an optional classifier adapter) and the history."""

    def __init__(self, model: str = DEFAULT_MODEL, adapter: str | None = None,
                 classifier_adapter: str | None = None, *, max_new_tokens: int = 64,
                 history_turns: int = 2, max_length: int = 512):
        self.model_name, self.max_new_tokens = model, max_new_tokens
        self.history_turns, self.max_length = history_turns, max_length
        self.history: list[tuple[str, str]] = []
        self.tokenizer = load_tokenizer(model)
        first = adapter or classifier_adapter
        self.lm = load_model(model, adapter=_check_adapter(first) if first else None)
        # peft names the first adapter "default"; None means "the base model, adapters off"
        self.response_adapter = "default" if adapter else None
        self.classifier_adapter = None
        if classifier_adapter and adapter:
            self.lm.load_adapter(_check_adapter(classifier_adapter), adapter_name="classifier")
            self.classifier_adapter = "classifier"
        elif classifier_adapter:
            self.classifier_adapter = "default"

    @contextmanager
    def _using(self, name: str | None) -> Iterator[None]:
        """Run with adapter ``name`` active, or with every adapter off for None."""
        if not hasattr(self.lm, "peft_config"):
            yield
            return
        if name is None:
            with self.lm.disable_adapter():
                yield
            return
        self.lm.set_adapter(name)
        yield

    def detect(self, text: str) -> dict:
        """{"label", "prob"}: the best of the 32 emotions, with its share of the probability mass."""
        with self._using(self.classifier_adapter):
            return classify(self.lm, self.tokenizer, [text], self.max_length, batch_size=8)[0]

    def respond(self, text: str) -> str:
        """A reply that sees the last ``history_turns`` exchanges."""
        history = self.history[-self.history_turns:] if self.history_turns else []
        prompt = respond_prompt(self.tokenizer, text, history)
        ids = prompt_ids(self.tokenizer, prompt, self.max_length)
        with self._using(self.response_adapter):
            reply = generate(self.lm, self.tokenizer, [ids], self.max_new_tokens, batch_size=1)[0].strip()
        return reply

    def turn(self, text: str) -> dict:
        """Detect, answer, remember: {"message", "emotion", "prob", "reply"}."""
        emotion = self.detect(text)
        reply = self.respond(text)
        self.history.append((text, reply))
        return {"message": text, "emotion": emotion["label"], "prob": emotion["prob"], "reply": reply}


def format_turn(result: dict) -> str:
    """Two lines: the detected emotion and the reply, whose control characters (a model can write an escape
    sequence, or repeat one it was sent) are shown escaped."""
    reply = terminal_safe(result["reply"], keep="\n\t") or "..."
    return f"[emotion: {result['emotion']} ({result['prob']:.0%})]\nbot: {reply}"


def loop(session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Read messages until /quit or end of input; return the number of turns answered."""
    interactive = stdin.isatty()
    turns = 0
    while True:
        if interactive:
            stdout.write("you: ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # end of input: a pipe ran dry
            break
        text = line.strip()
        if text == QUIT:
            break
        if not text:
            continue
        stdout.write(format_turn(session.turn(text)) + "\n")
        stdout.flush()  # a piped reader sees each answer as it comes
        turns += 1
    stdout.write("bye\n")
    stdout.flush()
    return turns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.ed.chat", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, local folder, .gguf file or 'smollm2' (default, embedded)")
    parser.add_argument("--adapter", default=AUTO,
                        help="LoRA adapter for the replies (default: notebook 09's, where it exists; 'none': the base "
                             "model)")
    parser.add_argument("--classifier-adapter", default=AUTO,
                        help="LoRA adapter for the emotion (default: notebook 08's, where it exists; 'none')")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest reply in tokens (default 64)")
    parser.add_argument("--history", type=int, default=2, help="earlier exchanges the reply sees (default 2)")
    args = parser.parse_args(argv)
    from utils import env

    env.quiet_command()
    if args.max_new_tokens < 1 or args.history < 0:
        parser.error("--max-new-tokens must be >= 1 and --history >= 0")
    args.adapter, args.classifier_adapter = found_adapter(args.adapter, "response"), found_adapter(
        args.classifier_adapter, "emotion")
    try:
        session = ChatSession(args.model, args.adapter, args.classifier_adapter,
                              max_new_tokens=args.max_new_tokens, history_turns=args.history)
    except (FileNotFoundError, OSError, ValueError) as e:
        print(f"error: {terminal_safe(str(e))}", file=sys.stderr)
        return 2
    print(f"emocause chat with {args.model}; replies from {args.adapter or 'the base model'}, emotions from "
          f"{args.classifier_adapter or 'the base model'}; type {QUIT} to leave", flush=True)
    loop(session)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
