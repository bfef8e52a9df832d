"""A T4 user's code path, run on this CPU: the device query reports a Tesla T4 ($EMOCAUSE_SIMULATE_GPU), so the
strategy is 4-bit NF4 with fp16 compute, peft's k-bit preparation runs, the memory plan plans for 15 GiB and
MODEL="auto" decides as on a GPU. Nothing under test is patched: bitsandbytes (0.50 and newer) quantises,
multiplies and back-propagates NF4 ``Linear4bit`` layers on the CPU, and the tensors go where torch can put
them. What stays untested without CUDA is named in the README (accelerate's fp16 autocast and loss scaling)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from utils import env, run
from utils.ecf import data, predict
from utils.lm import modeling, plan, train_data, training
from utils.lm.training import TrainConfig

T4 = "Tesla T4,7.5,15.0"
WORDS = ("joy", "anger", "fear", "sadness")


@pytest.fixture
def t4(monkeypatch):
    monkeypatch.setenv(env.SIMULATE_GPU_ENV, T4)
    plan.resolve_model.cache_clear()
    yield
    plan.resolve_model.cache_clear()


def _examples(tok, n: int) -> list[dict]:
    rng = random.Random(0)
    return [train_data.tokenize_prompt_completion(tok, f"I feel {w}, so {w}.", w, 64)
            for w in (rng.choice(WORDS) for _ in range(n))]


def _packed_weights(model) -> dict[str, torch.Tensor]:
    """The 4-bit packed weights of every bitsandbytes layer, by module name without peft's prefixes."""
    import bitsandbytes as bnb

    return {name.removeprefix("base_model.model.").replace(".base_layer", ""): m.weight.data.clone()
            for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_a_t4_gets_nf4_with_fp16_compute_and_auto_falls_back_offline(t4, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(plan, "in_hub_cache", lambda *a: False)
    assert plan.resolve_model("auto") == plan.CPU_MODEL
    assert "CUDA GPU but no hub (HF_HUB_OFFLINE=1)" in capsys.readouterr().out
    strategy = modeling.choose_strategy(model=str(tiny_model_dir))
    assert (strategy.name, strategy.device, strategy.torch_dtype, strategy.precision) == (
        "qlora-nf4", "cuda", torch.float16, "fp16")
    q = strategy.quantization_config
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == ("nf4", True, torch.float16)
    hw = plan.hardware()
    assert (hw.device, hw.name, hw.memory_gib, hw.bf16) == ("cuda", "Tesla T4", 15.0, False)


def test_qlora_trains_on_the_t4_path_with_checkpointing(t4, tmp_path, tiny_model_dir):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    examples = _examples(tok, 32)
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), epochs=6, learning_rate=1e-2, batch_size=8, logging_steps=4,
                      save_steps=100, warmup_share=0.0, gradient_checkpointing=True)
    seen = {}

    class Capture(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen["model"] = model
            seen["fp16"] = args.fp16

    result = training.train(str(tiny_model_dir), examples, examples[:8], cfg, callbacks=[Capture()])
    assert result.strategy == "qlora-nf4" and seen["fp16"] is True
    assert result.memory_plan["precision"] == "4-bit NF4" and result.memory_plan["device"] == "cuda"
    assert result.memory_plan["gradient_checkpointing"] is True
    assert result.train_loss_last < result.train_loss_first - 1.0
    model = seen["model"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # fp32 masters for fp16 AMP
    fresh = modeling.load_model(str(tiny_model_dir), strategy=modeling.choose_strategy(model=str(tiny_model_dir)))
    before, after = _packed_weights(fresh), _packed_weights(model)
    assert before and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the frozen 4-bit base did not move
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero


def test_the_nf4_model_labels_every_utterance(t4, tiny_model_dir):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    model = modeling.load_model(str(tiny_model_dir))  # the T4 strategy: 4-bit layers, fp16 compute, on the CPU
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    convs = data.strip_labels(data.load_ecf(data.SAMPLE_PATH)[:3])
    labelled, stats, _ = predict.predict_emotions(model, tok, convs, "conversation", batch_size=2)
    assert stats["invalid_outputs"] == 0
    assert all(u["emotion"] in data.EMOTIONS for c in labelled for u in c["conversation"])


@pytest.mark.slow
def test_the_series_runs_on_a_simulated_t4(t4, tiny_model_dir, tmp_path):
    """Notebooks 02-05 as a T4 user runs them (smoke size): QLoRA training, inference and the official files."""
    params = {"MODEL": str(tiny_model_dir), "SMOKE": True, "TRAIN_DIR": str(tmp_path / "results_train"),
              "TEST_DIR": str(tmp_path / "results_test"), "CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
              "LEARNING_RATE": 1e-2, "LOGGING_STEPS": 1}
    run.run_series(params, only=["02", "03", "04", "05"])
    for task in ("emotion", "cause"):
        summary = json.loads((tmp_path / "checkpoints" / task / "conversation" / "train_summary.json").read_text())
        assert summary["strategy"] == "qlora-nf4" and summary["memory_plan"]["hardware"] == "Tesla T4"
        assert summary["train_loss_last"] < summary["train_loss_first"]
    executed = (tmp_path / "results_test" / "executed" / "02_emotion_finetuning.ipynb").read_text(encoding="utf-8")
    assert "cuda (Tesla T4 x1, bf16=False)" in executed and "4-bit NF4" in executed
    pred = json.loads((tmp_path / "results_test" / "Subtask_2_pred.json").read_text(encoding="utf-8"))
    data.validate_conversations(pred)
