"""Export: merged safetensors + model card, and a GGUF that transformers' own GGUF loader reads back to the
merged model's logits (tiny Llama here; SmolLM2 in the slow test)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from utils.ecf import export as ecf_export
from utils.ecf.trained import NoFinishedRun
from utils.lm import export, gguf_export, modeling

TEXT = "Ana: I can't believe you did that!\nBen: Oh my God, there is something moving under the sofa."


def _adapter(base: str, out, seed: int = 0):
    """A LoRA adapter whose B matrices are random, so merging changes the logits."""
    strategy = modeling.choose_strategy(quantize=False)
    model = modeling.add_lora(modeling.load_model(base, strategy=strategy), modeling.LoraSettings(r=4, alpha=8),
                              strategy)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    model.save_pretrained(out)
    return out


def _logits(folder, text=TEXT, gguf_file=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    ids = AutoTokenizer.from_pretrained(folder, **kwargs)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return ids, model(ids).logits


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """The tiny Llama with an adapter, exported merged and as f16 and q8_0 GGUF files."""
    root = tmp_path_factory.mktemp("export")
    adapter = _adapter(str(tiny_model_dir), root / "adapter")
    card = export.Card(title="tiny test", base_model="tiny", data="none", scores=[("weighted_f1", 0.5, 0.25)],
                       prompt="U1 Ana: hi emotion: joy")
    out = export.export(str(tiny_model_dir), adapter, card, root / "merged", root / "gguf" / "tiny.f16.gguf", "f16",
                        check=False)
    gguf_export.write_gguf(root / "merged", root / "gguf" / "tiny.q8_0.gguf", "q8_0")
    return root, out


def test_export_writes_merged_weights_tokenizer_and_card(exported, tiny_model_dir):
    root, out = exported
    merged = root / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert "| weighted_f1 | 0.500 | 0.250 |" in card and "U1 Ana: hi emotion: joy" in card and "tiny.f16.gguf" in card
    _, base = _logits(tiny_model_dir)
    _, ours = _logits(merged)
    assert (base - ours).abs().max() > 1e-2  # the adapter was merged, not dropped


@pytest.mark.parametrize("quant", gguf_export.QUANTS)
def test_gguf_round_trip_through_transformers_loader(exported, quant):
    root, _ = exported
    ids, merged = _logits(root / "merged")
    ids_back, back = _logits(root / "gguf", gguf_file=f"tiny.{quant}.gguf")
    assert ids_back.tolist() == ids.tolist()  # the tokenizer travelled in the GGUF
    gap = float((merged - back).abs().max()) / float(merged.abs().max())
    assert gap < gguf_export.TOLERANCE[quant], f"{quant}: logits differ by {gap:.2%} of the largest logit"
    assert (merged.argmax(-1) == back.argmax(-1)).float().mean() >= 0.9


def test_q8_0_is_smaller_than_f16(exported):
    root, _ = exported
    assert (root / "gguf" / "tiny.q8_0.gguf").stat().st_size < (root / "gguf" / "tiny.f16.gguf").stat().st_size


def test_query_and_key_rows_are_reordered_for_gguf_rotary_layout():
    import numpy as np

    w = np.arange(2 * 8 * 3).reshape(16, 3)  # 2 heads of 8 rows
    out = gguf_export._interleave_heads(w, 2)
    assert out[:8, 0].tolist() == [w[r, 0] for r in (0, 4, 1, 5, 2, 6, 3, 7)]  # halves interleaved per head
    assert sorted(out.ravel().tolist()) == sorted(w.ravel().tolist())


def test_unmapped_architecture_is_named(tmp_path):
    from transformers import GPT2Config

    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16)
    config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(gguf_export.UnmappedArchitecture, match="GPT2LMHeadModel"):
        gguf_export.gguf_architecture(config)
    config.save_pretrained(tmp_path)
    with pytest.raises(gguf_export.UnmappedArchitecture, match="GPT2LMHeadModel"):
        gguf_export.write_gguf(tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    card = export.Card(title="gpt2", base_model=str(tmp_path), data="none")
    with pytest.raises(gguf_export.UnmappedArchitecture, match="GPT2LMHeadModel"):  # before any merge is tried
        export.export(str(tmp_path), tmp_path / "no-adapter", card, tmp_path / "merged", tmp_path / "x.gguf")
    assert not (tmp_path / "merged").exists()


def test_ecf_export_without_a_finished_run_says_which_notebook(tmp_path, capsys):
    assert ecf_export.main(["--task", "cause", "--checkpoint-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "04_cause_finetuning" in err and "python -m utils.run" in err


def test_ecf_export_cli_writes_both_forms_from_a_run(tmp_path, tiny_model_dir, capsys):
    folder = tmp_path / "checkpoints" / "emotion" / "conversation"
    _adapter(str(tiny_model_dir), folder / "adapter", seed=1)
    (folder / "task.json").write_text(json.dumps({"task": "emotion", "style": "conversation", "model": str(tiny_model_dir),
                                                  "max_length": 256, "emotion_format": "compact"}))
    (tmp_path / "results_test").mkdir()
    (tmp_path / "results_test" / "emotion_metrics.json").write_text(json.dumps(
        {"weighted_f1": 0.4, "macro_f1": 0.3, "baselines": {"majority": {"weighted_f1": 0.2, "macro_f1": 0.1}}}))
    capsys.readouterr()  # the adapter's own loading above is not the command's
    rc = ecf_export.main(["--task", "emotion", "--checkpoint-dir", str(tmp_path / "checkpoints"),
                          "--test-dir", str(tmp_path / "results_test"), "--quant", "q8_0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "top-1 agreement" in captured.out
    assert captured.err == ""  # no weight-loading, shard-writing or GGUF-reading bars
    umask = os.umask(0)
    os.umask(umask)
    for made in (folder / "export", folder / "export" / "merged"):  # mkdtemp's 0700 would hide them from others
        assert stat.S_IMODE(made.stat().st_mode) == 0o777 & ~umask, made
    card = (folder / "export" / "merged" / "README.md").read_text(encoding="utf-8")
    assert "0.400 | 0.200" in card and "emotion:" in card  # the recorded score beside its baseline; the prompt
    assert (folder / "export" / "emotion.q8_0.gguf").stat().st_size > 0
    with pytest.raises(NoFinishedRun):
        from utils.ecf.trained import trained
        trained(tmp_path / "checkpoints", "emotion", "per_utterance")


@pytest.mark.parametrize("flag, where, expected", [
    ("--gguf", "", "is a folder; give a file path such as"),
    ("--merged", "taken", "is a file; give a folder"),
    ("--gguf", "taken/x.gguf", "is a file, not a folder"),
])
def test_an_output_that_cannot_be_written_is_named_before_anything_loads(tmp_path, capsys, monkeypatch, flag, where,
                                                                         expected):
    folder = tmp_path / "checkpoints" / "emotion" / "conversation"  # a finished run as trained() finds it
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    (folder / "task.json").write_text(json.dumps({"task": "emotion", "style": "conversation", "model": "tiny"}))
    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(modeling, "load_tokenizer", lambda *a, **k: pytest.fail("loaded before the check"))
    monkeypatch.setattr(export, "merge_adapter", lambda *a, **k: pytest.fail("merged before the check"))
    target = tmp_path / where if where else tmp_path
    assert ecf_export.main(["--task", "emotion", "--checkpoint-dir", str(tmp_path / "checkpoints"), flag,
                            str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} {target}" in err and expected in err
    assert export.main(["--model", "none", "--adapter", "none", flag, str(target)]) == 2  # the generic command too
    assert f"{flag} {target}" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_round_trip(tmp_path):
    """SmolLM2-135M (tied embeddings, 9 query / 3 key-value heads) with an adapter: merged vs its f16 GGUF."""
    adapter = _adapter("smollm2", tmp_path / "adapter")
    card = export.Card(title="smollm2 test", base_model="smollm2", data="none")
    out = export.export("smollm2", adapter, card, tmp_path / "merged", tmp_path / "smollm2.f16.gguf", "f16")
    assert out["licence"] == "apache-2.0"
    check = out["check"]
    assert check["same_tokens"] and check["relative"] < gguf_export.TOLERANCE["f16"] and check["top1_agreement"] >= 0.9


def test_a_sentencepiece_tokenizer_is_refused_before_anything_is_merged(tiny_family, tmp_path, monkeypatch):
    import shutil

    merged = []
    monkeypatch.setattr(export, "merge_adapter", lambda *a, **k: merged.append(a))
    model = tmp_path / "llama-with-sentencepiece"  # Llama's weights (mapped), Mistral's SentencePiece tokenizer (not)
    shutil.copytree(tiny_family("llama"), model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_family("mistral") / name, model / name)
    with pytest.raises(gguf_export.UnmappedArchitecture, match="byte-level: False"):
        export.export(str(model), tmp_path / "adapter", export.Card("t", "m", "d"), gguf_file=tmp_path / "m.gguf")
    assert merged == []
