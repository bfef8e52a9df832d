"""The chat CLI driven through stdin with the tiny model, with a response and a classifier adapter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from utils.ed import chat
from utils.ed.data import EMOTIONS_32
from utils.ed.prompts import respond_prompt
from utils.env import ROOT


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Two untrained LoRA adapters on the tiny model (enough to load both and switch between them)."""
    from peft import LoraConfig, get_peft_model

    from utils.lm.modeling import load_model

    out = {}
    for name in ("response", "emotion"):
        lm = get_peft_model(load_model(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        out[name] = tmp_path_factory.mktemp(name)
        lm.save_pretrained(out[name])
    return out


@pytest.mark.slow
def test_cli_reads_stdin_shows_emotion_and_reply_until_quit(tiny_model_dir, adapters):
    lines = "I failed my driving test today\n\nআমি আজ খুব একা\n/quit\nthis line is never read\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "utils.ed.chat", "--model", str(tiny_model_dir), "--adapter", str(adapters["response"]),
         "--classifier-adapter", str(adapters["emotion"]), "--max-new-tokens", "8"],
        input=lines, capture_output=True, text=True, encoding="utf-8", cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    emotions = [line for line in out if line.startswith("[emotion: ")]
    assert len(emotions) == 2  # the blank line is skipped, nothing after /quit is answered
    assert all(line.split()[1] in EMOTIONS_32 for line in emotions)
    assert sum(line.startswith("bot: ") for line in out) == 2 and out[-1] == "bye"


def test_session_switches_adapters_and_keeps_history(tiny_model_dir, adapters):
    session = chat.ChatSession(str(tiny_model_dir), str(adapters["response"]), str(adapters["emotion"]),
                               max_new_tokens=4, history_turns=1)
    assert set(session.lm.peft_config) == {"default", "classifier"}
    first = session.turn("My cat is sick.")
    session.turn("And the vet is closed.")
    assert first["emotion"] in EMOTIONS_32 and 0 < first["prob"] <= 1
    assert len(session.history) == 2 and session.history[0][0] == "My cat is sick."
    prompt = respond_prompt(session.tokenizer, "third", session.history[-1:])
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]


def test_a_reply_is_shown_with_its_escape_sequences_escaped():
    shown = chat.format_turn({"emotion": "joyful", "prob": 0.5, "reply": "hi\x1b[2J\x1b]0;title\x07 আমি 😀\nbye"})
    assert shown == "[emotion: joyful (50%)]\nbot: hi\\x1b[2J\\x1b]0;title\\x07 আমি 😀\nbye"


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    assert chat.main(["--model", str(tiny_model_dir), "--adapter", str(tmp_path)]) == 2
    assert "adapter_model.safetensors" in capsys.readouterr().err


def test_the_cli_finds_the_notebooks_adapters_unless_told_otherwise(tmp_path, monkeypatch, adapters):
    import shutil

    monkeypatch.setenv("EMOCAUSE_PERSIST_DIR", str(tmp_path))
    assert chat.found_adapter("auto", "response") is None  # nothing trained yet: the base model
    shutil.copytree(adapters["response"], tmp_path / "checkpoints" / "empathetic" / "response" / "adapter")
    assert chat.found_adapter("auto", "response") == str(tmp_path / "checkpoints" / "empathetic" / "response" / "adapter")
    assert chat.found_adapter("auto", "emotion") is None
    assert chat.found_adapter("none", "response") is None and chat.found_adapter("x/y", "response") == "x/y"
