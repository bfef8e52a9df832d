"""What fits the hardware: MODEL="auto", 4-bit or 16-bit weights, and the memory plan of a training run, on
simulated GPUs (nvidia-smi, torch.cuda and the memory query monkeypatched) and on this CPU; all offline."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import torch

from utils import env
from utils.ecf import artifacts, config, finetune
from utils.ed import config as ed_config
from utils.lm import modeling, plan, sources, train_data, training
from utils.lm.modeling import LoraSettings

TINYLLAMA = plan.ModelShape(hidden=2048, intermediate=5632, layers=22, vocab=32000, heads=32, kv_heads=4,
                            head_dim=64, tied=False, max_positions=2048)  # TinyLlama-1.1B's config.json
LLAMA_8B = plan.ModelShape(hidden=4096, intermediate=14336, layers=32, vocab=128256, heads=32, kv_heads=8,
                           head_dim=128, max_positions=131072)
SMOLLM2 = plan.ModelShape(hidden=576, intermediate=1536, layers=30, vocab=49152, heads=9, kv_heads=3, head_dim=64,
                          tied=True, max_positions=8192)
ALL_PROJECTIONS = LoraSettings(target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"))  # notebook 02's LORA_TARGETS
GPUS = {"T4": ("Tesla T4", 7.5, 15.0), "A100": ("NVIDIA A100-SXM4-40GB", 8.0, 39.4)}


@pytest.fixture(autouse=True)
def fresh_auto():
    """Each test decides MODEL="auto" anew (the choice is cached per process)."""
    plan.resolve_model.cache_clear()
    yield
    plan.resolve_model.cache_clear()


def no_network(*args, **kwargs):
    raise AssertionError("the network was asked")


def simulate_gpu(monkeypatch, which: str | None) -> None:
    """The device query of a T4, an A100 40 GB, or no GPU (None)."""
    name, capability, memory = GPUS[which] if which else (None, None, None)
    monkeypatch.setattr(env, "gpus", lambda: [env.Gpu(name, capability, memory)] if which else [])
    monkeypatch.setattr(plan, "ram_gib", lambda: 32.0)  # a CPU machine's RAM, the same on any test machine


def test_auto_on_a_cpu_is_smollm2_without_any_network_call(monkeypatch, capsys):
    simulate_gpu(monkeypatch, None)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(plan, "in_hub_cache", no_network)
    assert plan.resolve_model("auto") == plan.resolve_model(" Auto ") == "smollm2"
    assert "MODEL=auto -> smollm2 (no CUDA GPU" in capsys.readouterr().out  # printed once
    assert plan.resolve_model("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    # the notebooks' default, resolved when their config is built
    for cls in (config.FinetuneConfig, config.EmotionInferenceConfig, ed_config.EdClassifyConfig):
        assert {f.name: f.default for f in dataclasses.fields(cls)}["MODEL"] == "auto"
        assert cls().MODEL == "smollm2"
    assert capsys.readouterr().out == ""  # decided once per process


def test_auto_on_a_gpu_is_tinyllama_when_the_hub_answers_else_smollm2(monkeypatch, capsys):
    simulate_gpu(monkeypatch, "T4")
    monkeypatch.setattr(plan, "in_hub_cache", lambda *a: False)
    for name in (*plan.OFFLINE_VARIABLES, "HTTPS_PROXY", "https_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    calls = []

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: calls.append(address) or Connection())
    assert plan.resolve_model("auto") == plan.GPU_MODEL and calls == [("huggingface.co", 443)]
    assert "CUDA GPU, hub reachable" in capsys.readouterr().out
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")  # behind a proxy: the proxy must answer
    assert plan.hub_unreachable() is None and calls[-1] == ("proxy.local", 3128)
    monkeypatch.delenv("HTTPS_PROXY")

    def refused(address, timeout):
        raise ConnectionRefusedError("refused")

    plan.resolve_model.cache_clear()
    monkeypatch.setattr(socket, "create_connection", refused)
    assert plan.resolve_model("auto") == "smollm2"
    assert "huggingface.co:443 unreachable" in capsys.readouterr().out

    plan.resolve_model.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)  # the variable is enough
    assert plan.resolve_model("auto") == "smollm2"
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().out

    plan.resolve_model.cache_clear()
    monkeypatch.setattr(plan, "in_hub_cache", lambda *a: True)  # weights already downloaded: offline is fine
    assert plan.resolve_model("auto") == plan.GPU_MODEL


def test_the_run_identity_and_task_json_record_the_resolved_model(monkeypatch, tmp_path, smollm2):
    simulate_gpu(monkeypatch, None)
    identity = sources.model_identity("auto")
    assert identity["model"] == "smollm2" and identity == sources.model_identity("smollm2")
    assert sources.resolve_model_source("auto") == sources.resolve_model_source("smollm2")
    cfg = config.FinetuneConfig(MODEL="auto", CHECKPOINT_DIR=str(tmp_path))
    artifacts.write_task(cfg, "emotion")
    # notebook 03 with MODEL="auto" accepts the adapter auto trained on the same machine
    assert artifacts.read_task(config.EmotionInferenceConfig(MODEL="auto", CHECKPOINT_DIR=str(tmp_path)),
                               "emotion")["model"] == "smollm2"
    # ... and says what to do when auto resolved to another model where the adapter was trained
    artifacts.write_task(dataclasses.replace(cfg, MODEL=plan.GPU_MODEL), "emotion")
    with pytest.raises(ValueError, match="set EMOTION_MODEL='TinyLlama/TinyLlama-1.1B-Chat-v1.0' to load this adapter"):
        artifacts.read_task(config.EmotionInferenceConfig(MODEL="auto", CHECKPOINT_DIR=str(tmp_path)), "emotion")


@pytest.mark.parametrize("which, memory, quantized", [("T4", 15.0, True), ("L4", 22.5, False),
                                                       ("A100", 39.4, False), ("H100", 79.6, False)])
def test_four_bit_under_20_gib_or_for_a_model_that_would_fill_the_gpu(which, memory, quantized):
    gpu = plan.Hardware("cuda", which, memory, bf16=which != "T4")
    assert plan.should_quantize(gpu, TINYLLAMA) is quantized
    assert plan.should_quantize(gpu, None) is True  # unknown size: 4-bit, as before
    assert plan.should_quantize(gpu, LLAMA_8B) is (memory < 64)  # 16 GB of 16-bit weights: a quarter of 64
    assert abs(TINYLLAMA.params - 1_100_048_384) < 1e6 and abs(LLAMA_8B.params - 8.03e9) < 0.02e9


@pytest.mark.parametrize("which, name, dtype", [("T4", "qlora-nf4", torch.float16),
                                                ("A100", "full-precision", torch.bfloat16)])
def test_the_strategy_follows_the_gpu_memory_and_the_model(monkeypatch, which, name, dtype):
    simulate_gpu(monkeypatch, which)
    monkeypatch.setattr(sources, "model_shape", lambda model: TINYLLAMA)  # its config.json, offline
    s = modeling.choose_strategy(model=plan.GPU_MODEL)
    assert (s.name, s.device, s.torch_dtype, s.attn_implementation) == (name, "cuda", dtype, "sdpa")
    assert modeling.choose_strategy().name == "qlora-nf4"  # no model to measure: 4-bit, as before
    assert modeling.choose_strategy(model=plan.GPU_MODEL, quantize=True).name == "qlora-nf4"


def _plan(hw, shape=TINYLLAMA, *, batch=4, accum=0, checkpointing=None, longest=1024, lm_loss=False,
          lora=ALL_PROJECTIONS, quantized=None):
    quantized = plan.should_quantize(hw, shape) if quantized is None else quantized
    return plan.plan_training(hw, shape, batch_size=batch, grad_accum=accum, gradient_checkpointing=checkpointing,
                              longest=longest, max_length=longest, lora=lora, lm_loss=lm_loss,
                              precision=plan.precision_of(hw.device, quantized))


def test_the_plan_for_a_t4_an_a100_and_a_cpu(monkeypatch):
    plans = {}
    for which in ("T4", "A100", None):
        simulate_gpu(monkeypatch, which)
        hw = plan.hardware()
        assert (hw.device, hw.memory_gib) == (("cuda", GPUS[which][2]) if which else ("cpu", 32.0))
        plans[which] = _plan(hw)
    t4, a100, cpu = plans["T4"], plans["A100"], plans[None]
    for p in plans.values():  # the batch the optimizer sees does not depend on the hardware
        assert p.effective_batch == 4 and p.estimate_gib <= p.usable_gib and not p.warnings
    assert (t4.precision, a100.precision, cpu.precision) == ("4-bit NF4", "16-bit", "32-bit")
    assert t4.batch_size < 4 and t4.grad_accum == 4 // t4.batch_size  # 4 x 1024 tokens do not fit 15 GiB
    assert (a100.batch_size, a100.grad_accum, a100.gradient_checkpointing) == (4, 1, False)
    assert "effective batch 4 = " in t4.describe() and "Tesla T4, 15.0 GiB" in t4.describe()
    laptop = plan.Hardware("cpu", "CPU", 16.0)
    assert (_plan(laptop, SMOLLM2).batch_size, _plan(laptop, SMOLLM2).grad_accum) == (4, 1)


def test_checkpointing_only_where_not_even_one_sequence_fits():
    t4 = plan.Hardware("cuda", "Tesla T4", 15.0)
    short = _plan(t4, longest=256)
    assert (short.batch_size, short.grad_accum, short.gradient_checkpointing) == (4, 1, False)
    long = _plan(t4, longest=2048)  # one 2048-token sequence keeps more than 13 GiB for backward
    assert long.gradient_checkpointing and long.effective_batch == 4 and not long.warnings
    too_long = _plan(t4, longest=32768)
    assert too_long.gradient_checkpointing and too_long.batch_size == 1
    assert any("lower MAX_LENGTH to about" in w for w in too_long.warnings)
    assert any("over the model's 2048 positions" in w for w in too_long.warnings)
    # the LM loss over the whole vocabulary (per_utterance, empathetic) costs its logits
    assert _plan(t4, longest=256, lm_loss=True).estimate_gib > short.estimate_gib


def test_explicit_settings_win_and_are_warned_about():
    t4 = plan.Hardware("cuda", "Tesla T4", 15.0)
    asked = _plan(t4, batch=4, accum=1)  # GRAD_ACCUM=1: 4 sequences per pass, as asked
    assert (asked.batch_size, asked.grad_accum, asked.gradient_checkpointing) == (4, 1, True)
    pinned = _plan(t4, batch=4, accum=1, checkpointing=False)
    assert (pinned.batch_size, pinned.grad_accum, pinned.gradient_checkpointing) == (4, 1, False)
    assert any("set GRAD_ACCUM=0" in w for w in pinned.warnings)
    assert _plan(t4, batch=4, accum=2, longest=256).effective_batch == 8  # BATCH_SIZE x GRAD_ACCUM
    assert _plan(t4, longest=256, checkpointing=True).gradient_checkpointing  # on when asked, even if not needed
    assert _plan(t4, batch=6).batch_size in (6, 3, 2, 1)  # a divisor: the effective batch stays 6
    with pytest.raises(ValueError, match="accumulation"):
        _plan(t4, accum=-1)


def test_notebook_parameters_reach_the_plan(monkeypatch, tiny_model_dir):
    simulate_gpu(monkeypatch, None)
    cfg = config.FinetuneConfig(MODEL=str(tiny_model_dir), BATCH_SIZE=6, GRAD_ACCUM=0)
    tcfg = finetune.train_config(cfg, "emotion")
    assert (tcfg.batch_size, tcfg.grad_accum, tcfg.gradient_checkpointing) == (6, 0, None)
    strategy = modeling.choose_strategy()
    examples = [{"input_ids": [1] * 1000, "labels": [-100] * 1000}]
    assert training.memory_plan(cfg.MODEL, tcfg, strategy, examples).params == sources.model_shape(cfg.MODEL).params
    monkeypatch.setattr(sources, "model_shape", lambda model: SMOLLM2)  # ~2 MB per token to train on a CPU
    big, small = plan.Hardware("cpu", "CPU", 64.0), plan.Hardware("cpu", "CPU", 8.0)
    auto = training.memory_plan(cfg.MODEL, tcfg, strategy, examples, big)
    assert (auto.batch_size, auto.grad_accum, auto.gradient_checkpointing, auto.longest) == (6, 1, False, 1000)
    squeezed = training.memory_plan(cfg.MODEL, tcfg, strategy, examples, small)
    assert squeezed.effective_batch == 6 and squeezed.batch_size < 6  # a small machine: the plan splits
    explicit = finetune.train_config(dataclasses.replace(cfg, BATCH_SIZE=2, GRAD_ACCUM=3, GRADIENT_CHECKPOINTING="on"),
                                     "emotion")
    kept = training.memory_plan(cfg.MODEL, explicit, strategy, examples, small)
    assert (kept.batch_size, kept.grad_accum, kept.gradient_checkpointing) == (2, 3, True)
    ed = ed_config.train_config(ed_config.EdClassifyConfig(MODEL=str(tiny_model_dir)), "emotion",
                                modeling.load_tokenizer(str(tiny_model_dir)))
    assert (ed.batch_size, ed.grad_accum, ed.gradient_checkpointing) == (8, 0, None)
    assert [plan.checkpointing(v) for v in ("auto", "On", "off", "true", "false")] == [None, True, False, True, False]
    for bad in (dict(GRADIENT_CHECKPOINTING="sometimes"), dict(BATCH_SIZE=0), dict(GRAD_ACCUM=-1)):
        with pytest.raises(ValueError, match="GRADIENT_CHECKPOINTING|BATCH_SIZE"):
            config.FinetuneConfig(MODEL=str(tiny_model_dir), **bad)
        with pytest.raises(ValueError, match="GRADIENT_CHECKPOINTING|BATCH_SIZE"):
            ed_config.EdClassifyConfig(MODEL=str(tiny_model_dir), **bad)


@pytest.mark.slow
def test_training_prints_the_plan_and_the_measured_peak(tmp_path, tiny_model_dir, capsys):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    examples = [train_data.tokenize_prompt_completion(tok, f"How do you feel, {i}?", "joy", 64) for i in range(8)]
    cfg = training.TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, grad_accum=0,
                               gradient_checkpointing=None, learning_rate=1e-3, logging_steps=1)
    result = training.train(str(tiny_model_dir), examples, None, cfg, strategy=modeling.choose_strategy())
    out = capsys.readouterr().out
    assert "memory plan: cpu" in out and "effective batch 4 = 4 per pass x 1" in out
    assert "GiB measured (cpu_max_rss) vs" in out and result.planned_memory_mb > 0
    assert result.memory_plan["effective_batch"] == 4 and result.memory_plan["gradient_checkpointing"] is False
    run = (tmp_path / "run" / "run.json").read_text(encoding="utf-8")
    assert '"grad_accum": 1' in run  # the identity holds the split that trained, as before the plan
