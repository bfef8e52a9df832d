"""The benchmark: the real CLI on the tiny model, its ratios computed from its own measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli, measure
from bench.run import BenchConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str, Path]:
    """``python -m bench --smoke`` run once as a user runs it: (JSON record, stdout, JSON path)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout, out


def test_smoke_writes_the_headline_numbers_and_machine(smoke):
    record, _, _ = smoke
    for key in ("train_tokens_ratio", "inference_speedup", "valid_output_share", "inference_wall_s",
                "train_tokens", "ratios", "variants", "machine", "command", "parameters"):
        assert key in record, key
    assert record["command"] == f"python -m bench --smoke --out {record['config']['out']}"
    assert record["machine"]["torch"] and record["machine"]["cpu"] and record["machine"]["date"][:2] == "20"
    assert record["machine"]["omp_wait_policy"] == "PASSIVE"  # set by the fixture, recorded as it was
    assert {(v["stage"], v["style"]) for v in record["variants"]} == {
        (s, t) for s in ("emotion", "cause") for t in ("per_utterance", "conversation")} | {("both", "fused")}


def test_the_conversation_format_reads_fewer_tokens(smoke):
    record, _, _ = smoke
    tokens = {t: sum(v["tokens"] for v in record["variants"] if v["style"] == t)
              for t in ("per_utterance", "conversation", "fused")}
    assert record["train_tokens"] == {t: tokens[t] for t in ("per_utterance", "conversation")}
    assert record["train_tokens_ratio"] == pytest.approx(tokens["per_utterance"] / tokens["conversation"])
    assert record["train_tokens_ratio"] > 1
    for v in record["variants"]:  # the recipe's loss covers every token; ours only the answers
        assert (v["answer_tokens"] == v["tokens"]) == (v["style"] == "per_utterance")
        assert v["padded_tokens_random"] >= v["tokens"] and v["padded_tokens_grouped"] >= v["tokens"]


def test_the_fused_style_is_measured_against_the_recipe_for_both_stages_together(smoke):
    record, stdout, _ = smoke
    fused = record["fused"]
    (variant,) = [v for v in record["variants"] if v["style"] == "fused"]
    recipe = [v for v in record["variants"] if v["style"] == "per_utterance"]
    assert fused["train_tokens"] == variant["tokens"] < record["train_tokens"]["conversation"]
    assert fused["train_tokens_ratio"] == pytest.approx(sum(v["tokens"] for v in recipe) / variant["tokens"])
    assert fused["inference_speedup"] == pytest.approx(
        sum(v["inference"]["wall_s"] for v in recipe) / variant["inference"]["wall_s"])
    assert fused["valid_output_share"] == variant["inference"]["valid_output_share"] == 1.0
    # one read labels every utterance and answers each cause read of the emotional ones
    eval_utterances = record["data"]["eval_utterances"]
    assert variant["inference"]["n_outputs"] >= eval_utterances
    assert variant["train"]["steps"] == record["config"]["train_steps"] and variant["train"]["session_tokens"] > 0
    assert f"| training tokens ÷ | {fused['train_tokens_ratio']:,.2f}× |" in stdout


def test_speedup_is_the_ratio_of_the_measured_wall_times(smoke):
    record, _, _ = smoke
    walls = {t: sum(v["inference"]["wall_s"] for v in record["variants"] if v["style"] == t)
             for t in ("per_utterance", "conversation")}
    assert walls == pytest.approx(record["inference_wall_s"], rel=1e-12)
    speedup = record["inference_speedup"]
    assert isinstance(speedup, float) and speedup > 0
    assert speedup == pytest.approx(walls["per_utterance"] / walls["conversation"], rel=1e-12)
    for stage, ratios in record["ratios"].items():
        v = {x["style"]: x for x in record["variants"] if x["stage"] == stage}
        assert ratios["inference_speedup"] == pytest.approx(
            v["per_utterance"]["inference"]["wall_s"] / v["conversation"]["inference"]["wall_s"])


def test_default_outputs_are_all_valid_and_every_variant_was_measured(smoke):
    record, _, _ = smoke
    assert record["valid_output_share"] == 1.0
    eval_utterances = record["data"]["eval_utterances"]
    for v in record["variants"]:
        train, inference = v["train"], v["inference"]
        assert train["steps"] == record["config"]["train_steps"] and train["session_tokens"] > 0
        assert train["wall_s"] > 0 and train["peak_mb"] > 0 and train["projected_epoch_s"] > 0
        assert inference["wall_s"] > 0 and inference["utterances"] == eval_utterances
        assert inference["warmup_wall_s"] > 0  # the untimed warm-up ran, outside wall_s
        assert 0.0 <= inference["valid_output_share"] <= 1.0
        assert 0.0 <= v["score"]["value"] <= 1.0
        if v["stage"] == "emotion":  # one label per utterance, whatever the style
            assert inference["n_outputs"] == eval_utterances
    recipe = [v for v in record["variants"] if v["style"] == "per_utterance"]
    assert all(v["inference"]["n_prompts"] == v["inference"]["n_outputs"] for v in recipe)


def test_the_markdown_tables_are_printed_and_saved(smoke):
    record, stdout, out = smoke
    assert "| per_utterance ÷ conversation | emotion | cause | both stages |" in stdout
    assert "| emotion | per_utterance |" in stdout and "| cause | conversation |" in stdout
    # the printed ratios are the measured ones, not constants
    assert f"| inference speed-up | {record['ratios']['emotion']['inference_speedup']:,.2f}×" in stdout
    assert f"{record['train_tokens_ratio']:,.2f}× |" in stdout
    assert out.with_suffix(".md").read_text(encoding="utf-8").strip() in stdout


def test_tokens_only_with_a_limit_counts_without_training(tmp_path, capsys):
    out = tmp_path / "tokens.json"
    assert cli.main(["--smoke", "--tokens-only", "--limit", "20", "--out", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["data"]["train_conversations"] == 16  # 20 conversations, 10% test, 10% of the rest val
    assert record["train_tokens_ratio"] > 1 and record["inference_speedup"] is None
    assert all("train" not in v and "inference" not in v for v in record["variants"])
    assert "### Training tokens per epoch" in capsys.readouterr().out


def test_bad_options_say_what_to_use():
    with pytest.raises(ValueError, match="choose from"):
        cli.config_from(cli.parser().parse_args(["--stages", "emotions"]))
    with pytest.raises(ValueError, match="train_steps=0"):
        BenchConfig(train_steps=0)
    with pytest.raises(ValueError, match="conversation_loss 'mse'"):
        BenchConfig(conversation_loss="mse")
    parsed = cli.parser().parse_args(["--conversation-loss", "vocabulary"])
    assert cli.config_from(parsed).conversation_loss == "vocabulary"


def test_the_conversation_loss_option_picks_the_answer_vocabulary(tiny_model_dir):
    from bench.run import answer_vocabulary
    from utils.ecf.data import EMOTIONS
    from utils.lm.modeling import label_token_ids, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    assert answer_vocabulary(tok, "emotion", "conversation") == tuple(label_token_ids(tok, EMOTIONS))
    assert answer_vocabulary(tok, "cause", "conversation") == tuple(label_token_ids(tok, ("yes", "no")))
    assert answer_vocabulary(tok, "emotion", "conversation", "vocabulary") == ()
    assert answer_vocabulary(tok, "emotion", "per_utterance") == ()  # the recipe keeps its LM loss


def test_padding_simulation_and_flop_arithmetic():
    lengths = [10, 200, 12, 190, 11, 205, 9, 198]
    assert measure.padded_tokens(lengths, 1, grouped=False) == sum(lengths)  # no padding in batches of one
    grouped = measure.padded_tokens(lengths, 2, grouped=True)
    assert grouped == 2 * (205 + 198 + 12 + 10)  # one megabatch sorted: like lengths share a batch
    assert measure.padded_tokens(lengths, 2, grouped=False, seed=3) >= grouped
    assert measure.mfu(params=10**9, tokens=1000, seconds=1.0, peak_tflops=6.0) == pytest.approx(1.0)
    assert measure.steady_rates([(1.0, 0.5, 100), (3.0, 4.5, 500)]) == pytest.approx((200.0, 100.0))
    assert measure.steady_rates([(1.0, 0.5, 100)]) == (None, None)


def test_peak_memory_of_a_phase_sees_what_the_phase_allocated():
    with measure.PeakMemory("cpu") as mem:
        block = bytearray(200 * measure.MIB)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page so it is resident
        del block
    assert mem.result["memory_kind"] == "cpu_peak_rss_of_phase"
    assert mem.result["delta_mb"] >= 180
    with measure.PeakMemory("cpu") as later:  # the mark was reset: the earlier peak is not seen again
        pass
    assert later.result["delta_mb"] < 50


def test_published_shapes_have_their_published_parameter_counts():
    from transformers import LlamaConfig

    from bench.shapes import SHAPES

    def count(shape: str) -> dict:
        config = LlamaConfig(vocab_size=32000, tie_word_embeddings=False, **SHAPES[shape])
        return measure.parameter_counts(config, 16, ("q_proj", "k_proj", "v_proj", "o_proj"))

    assert count("tinyllama-1.1b")["base"] == 1_100_048_384  # TinyLlama-1.1B's 32k-vocabulary count
    assert count("llama2-13b")["base"] == 13_015_864_320  # Llama-2-13b's
    assert count("tinyllama-1.1b")["lora"] == 22 * 16 * (2 * (2048 + 2048) + 2 * (2048 + 256))


def test_a_random_shape_is_saved_loadable_with_the_prompt_tokenizer(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    from bench.shapes import build_random
    from utils.lm.modeling import load_model, load_tokenizer

    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 256}
    path = build_random(shape, str(tiny_model_dir), tmp_path / "random")
    model, tokenizer = load_model(str(path)), load_tokenizer(str(path))
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    assert tokenizer.get_vocab() == load_tokenizer(str(tiny_model_dir)).get_vocab()
    counts = measure.parameter_counts(AutoConfig.from_pretrained(path), 16, ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert counts["base"] == sum(p.numel() for p in model.parameters())


def test_a_missing_data_file_is_one_line_naming_it(tmp_path, capsys):
    from bench import cli

    missing = tmp_path / "missing.json"
    assert cli.main(["--smoke", "--data", str(missing), "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "file not found" in err and "Traceback" not in err
