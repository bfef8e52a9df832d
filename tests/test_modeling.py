"""Model loading: strategy by hardware, source resolution, GGUF cache, label tokens, LoRA, merge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from utils.io import file_sha256
from utils.lm import modeling, precision, sources, tiny
from utils.env import Environment

EMOTIONS = ("neutral", "anger", "disgust", "fear", "joy", "sadness", "surprise")
LABEL_WORDS = (*EMOTIONS, "yes", "no")  # the words conftest's tiny model makes single tokens


def _env(device: str, bf16: bool, name: str | None = None) -> Environment:
    return Environment(platform="local", device=device, gpu_name=name, gpu_count=int(device == "cuda"), bf16=bf16)


@pytest.fixture
def cpu_has(monkeypatch):
    """``cpu_has(hardware)``: the CPU's bf16 units as ``precision.bf16_hardware`` reports them ("AMX", None: none),
    $EMOCAUSE_CPU_PRECISION unset and no decision printed yet in this process."""
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    monkeypatch.setattr(precision, "_said", set())
    return lambda hardware: monkeypatch.setattr(precision, "bf16_hardware", lambda: hardware)


def test_cpu_strategy_is_float32_unquantised(cpu_has):
    cpu_has(None)
    s = modeling.choose_strategy(_env("cpu", False))
    assert (s.name, s.device, s.torch_dtype, s.quantization_config, s.precision) == (
        "full-precision", "cpu", torch.float32, None, "no",
    )


def test_cpu_bf16_autocast_only_where_the_cpu_has_bf16(monkeypatch):
    monkeypatch.setattr(modeling, "cpu_has_fast_bf16", lambda: False)
    assert modeling.choose_strategy(_env("cpu", False), cpu_bf16=True).precision == "no"
    monkeypatch.setattr(modeling, "cpu_has_fast_bf16", lambda: True)
    s = modeling.choose_strategy(_env("cpu", False), cpu_bf16=True)
    assert (s.precision, s.torch_dtype) == ("bf16", torch.float32)  # weights stay fp32, matmuls run in bf16
    with modeling.autocast(s):
        assert torch.is_autocast_enabled("cpu")
    with modeling.autocast(modeling.choose_strategy(_env("cpu", False), cpu_bf16=False)):
        assert not torch.is_autocast_enabled("cpu")


def test_the_cpu_computes_in_bf16_where_it_has_the_hardware_and_says_so_once(cpu_has, monkeypatch, capsys):
    cpu_has(None)
    assert [modeling.choose_strategy(_env("cpu", False)).precision for _ in range(2)] == ["no", "no"]
    out = capsys.readouterr().out
    assert out.count("CPU bf16") == 1 and re.fullmatch(r"\[emocause\] CPU bf16: no \(\w+ only\) -> fp32\n", out)
    cpu_has("AMX")
    s = modeling.choose_strategy(_env("cpu", False))
    assert (s.cpu_autocast, s.precision, s.torch_dtype) == (True, "bf16", torch.float32)  # weights stay fp32
    assert capsys.readouterr().out == "[emocause] CPU bf16: yes (AMX) -> autocast bf16\n"
    monkeypatch.setenv(precision.PRECISION_ENV, "fp32")  # the override, said
    assert not modeling.choose_strategy(_env("cpu", False)).cpu_autocast
    assert "yes (AMX) -> fp32 (EMOCAUSE_CPU_PRECISION=fp32)" in capsys.readouterr().out
    cpu_has(None)
    monkeypatch.setenv(precision.PRECISION_ENV, "bf16")
    assert modeling.choose_strategy(_env("cpu", False)).cpu_autocast  # forced where the hardware lacks it
    assert "only) -> autocast bf16 (EMOCAUSE_CPU_PRECISION=bf16)" in capsys.readouterr().out
    monkeypatch.setenv(precision.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="EMOCAUSE_CPU_PRECISION='half': use one of"):
        modeling.choose_strategy(_env("cpu", False))
    cpu_has("AMX")  # CUDA keeps its own dtype and asks nothing of the CPU
    monkeypatch.delenv(precision.PRECISION_ENV)
    assert modeling.choose_strategy(_env("cuda", True), quantize=False).torch_dtype == torch.bfloat16
    assert not modeling.choose_strategy(_env("cuda", True), quantize=False).cpu_autocast
    assert capsys.readouterr().out == ""


def _reads(tiny_model_dir, adapter=None) -> tuple[set, str]:
    """(the dtypes a LoRA-adapted projection and the LM head produced in a label read and a forward, the
    reader's checkpoint identity); autocast must not outlive a read."""
    from utils.ecf.predict import Reader
    from utils.lm import inference

    model = modeling.load_model(str(tiny_model_dir), adapter=adapter)
    dtypes = []
    watched = [m for n, m in model.named_modules() if n.endswith("q_proj")][:1] + [model.get_output_embeddings()]
    for module in watched:
        module.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    inference.label_logprobs(model, [[5, 6, 7, 8]], [[2]], [9, 10])  # the body and the head, called apart
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))  # the model's own forward (generate, the fused reads)
    assert not torch.is_autocast_enabled("cpu") and len(dtypes) == 4
    return set(dtypes), Reader(model, None).identity()


def test_on_the_bf16_path_every_read_multiplies_in_bf16_and_its_checkpoints_say_so(cpu_has, tiny_model_dir,
                                                                                   tmp_path):
    from peft import LoraConfig, get_peft_model

    cpu_has(None)
    dtypes, fp32_identity = _reads(tiny_model_dir)
    assert dtypes == {torch.float32} and "+" not in fp32_identity  # as before: the identity reads had
    cpu_has("AMX")
    dtypes, bf16_identity = _reads(tiny_model_dir)
    assert dtypes == {torch.bfloat16} and bf16_identity == fp32_identity + "+cpu-bf16"
    lora = get_peft_model(modeling.load_model(str(tiny_model_dir), strategy=modeling.choose_strategy(cpu_bf16=False)),
                          LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "adapter")
    dtypes, adapted = _reads(tiny_model_dir, tmp_path / "adapter")  # through peft's wrappers too
    assert dtypes == {torch.bfloat16} and adapted.endswith("+cpu-bf16")


def test_t4_strategy_is_nf4_with_fp16_compute():
    s = modeling.choose_strategy(_env("cuda", False, "Tesla T4"))
    q = s.quantization_config
    assert (s.name, s.device, s.torch_dtype, s.attn_implementation, s.precision) == (
        "qlora-nf4", "cuda", torch.float16, "sdpa", "fp16",
    )
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16


@pytest.mark.parametrize("gpu, capability, dtype", [("Tesla T4", 7.5, torch.float16),
                                                     ("NVIDIA A100-SXM4-40GB", 8.0, torch.bfloat16)])
def test_strategy_detected_from_the_gpu(monkeypatch, gpu, capability, dtype):
    from utils import env

    monkeypatch.setattr(env, "gpus", lambda: [env.Gpu(gpu, capability, None)])
    s = modeling.choose_strategy()
    assert (s.name, s.device, s.torch_dtype) == ("qlora-nf4", "cuda", dtype)
    assert s.quantization_config.bnb_4bit_compute_dtype == dtype
    unquantised = modeling.choose_strategy(quantize=False)
    assert (unquantised.name, unquantised.quantization_config) == ("full-precision", None)
    assert unquantised.torch_dtype == dtype


def test_resolve_model_source(tmp_path, smollm2):
    assert sources.resolve_model_source("smollm2") == (str(smollm2.parent), smollm2.name)
    assert sources.resolve_model_source(str(smollm2)) == (str(smollm2.parent), smollm2.name)
    assert sources.resolve_model_source(str(tmp_path)) == (str(tmp_path.resolve()), None)
    assert sources.resolve_model_source("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0", None,
    )
    with pytest.raises(FileNotFoundError):
        sources.resolve_model_source(str(tmp_path / "missing.gguf"))


def test_gguf_cache_converts_once_and_rebuilds_a_damaged_copy(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    calls = []

    def fake_convert(directory, name, out):
        calls.append(name)
        (out / "model.safetensors").write_bytes(b"x" * 10)

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "_convert_gguf", fake_convert)
    first = sources.local_source(str(gguf))
    assert sources.local_source(str(gguf)) == first and len(calls) == 1  # second load hits the cache
    assert json.loads((Path(first) / "emocause_cache.json").read_text())["sha256"] == file_sha256(gguf)
    (Path(first) / "model.safetensors").write_bytes(b"torn")  # e.g. a disk-full partial write
    assert sources.local_source(str(gguf)) == first and len(calls) == 2
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_tiny_llama_words_are_single_tokens(tiny_model_dir):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    ids = modeling.label_token_ids(tok, LABEL_WORDS)
    assert len(set(ids)) == len(LABEL_WORDS)
    assert [tok.decode([i]) for i in ids] == [" " + w for w in LABEL_WORDS]
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"


def test_label_token_ids_names_colliding_words(tiny_model_dir):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match=r"'joy', 'joy!'"):
        modeling.label_token_ids(tok, ["anger", "joy", "joy!"])  # " joy!" starts with the token " joy"


def test_build_tiny_llama_is_deterministic_and_loadable(tmp_path):
    texts = ["Il a dit : « non ! »", "আমি খুব খুশি", "You made up! I can't believe it."] * 5  # any script
    first = tiny.build_tiny_llama(tmp_path / "first", texts, ["joy", "fear"])
    again = tiny.build_tiny_llama(tmp_path / "again", texts, ["joy", "fear"])
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (first / name).read_bytes()
    tok = modeling.load_tokenizer(str(again))
    assert tok.decode(tok.encode(texts[1], add_special_tokens=False)) == texts[1]
    model = modeling.load_model(str(again))
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (64, 2, 4, 128)
    assert not model.training and model.dtype == torch.float32


def _lora_model(tiny_model_dir, strategy):
    torch.manual_seed(0)
    model = modeling.add_lora(modeling.load_model(str(tiny_model_dir), strategy=strategy, for_training=True),
                              modeling.LoraSettings(r=4, alpha=8), strategy)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter do something
            torch.nn.init.normal_(p, std=0.5)
    return model


def test_lora_trains_only_adapters_and_round_trips_through_save_load_merge(tmp_path, tiny_model_dir):
    strategy = modeling.choose_strategy(_env("cpu", False))
    model = _lora_model(tiny_model_dir, strategy)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-2] for n in trainable if "lora_A" in n} == {"default"}
    assert {n.split(".")[-4] for n in trainable} == set(modeling.LoraSettings().target_modules)
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 30, 7, 2]])
    model.eval()
    with torch.no_grad():
        expected = model(ids).logits
        base = modeling.load_model(str(tiny_model_dir))(ids).logits
        loaded = modeling.load_model(str(tiny_model_dir), adapter=tmp_path / "adapter")(ids).logits
        merged_dir = modeling.merge_adapter(str(tiny_model_dir), tmp_path / "adapter", tmp_path / "merged")
        merged = modeling.load_model(str(merged_dir))(ids).logits
    assert not torch.allclose(expected, base, atol=1e-3)  # the adapter matters
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()


def test_adapter_without_safetensors_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        modeling.load_model(str(tiny_model_dir), adapter=tmp_path)


def test_smollm2_loads_from_gguf_and_knows_its_labels():
    tok = modeling.load_tokenizer("smollm2")
    model = modeling.load_model("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 49152
    assert not model.training and tok.eos_token == "<|im_end|>" and tok.chat_template
    ids = modeling.label_token_ids(tok, EMOTIONS)
    assert len(set(ids)) == 7
    assert [tok.decode([i]) for i in ids] == [" " + e for e in EMOTIONS]
    prompt = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(prompt).logits[0, -1]
    paris, london = (tok.encode(w, add_special_tokens=False)[0] for w in (" Paris", " London"))
    assert logits[paris] > logits[london]  # dequantised weights are real weights, not noise


def test_a_mistyped_local_model_path_is_an_error_not_a_hub_request(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="is a local path .* check the path"):
        sources.resolve_model_source("checkpoints/tiny-lama")  # checkpoints/ exists: a typo, not a hub id
    with pytest.raises(FileNotFoundError, match="local path"):
        sources.resolve_model_source("./my-model")
    assert sources.resolve_model_source("TinyLlama/TinyLlama-1.1B-Chat-v1.0") == ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", None)
