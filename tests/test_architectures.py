"""Every model family users pick, as a tiny random model with a tokenizer of its kind made here: both ECF stages
(train, label, causes), the fused one read with its KV cache, the merge, and the empathetic track (classify,
generate, chat), through the functions the notebooks call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from utils.ecf import artifacts, config, data, examples, finetune, predict, prompts
from utils.ecf.data import EMOTIONS
from utils.ed import config as ed_config
from utils.ed.chat import ChatSession
from utils.ed.data import EMOTIONS_32
from utils.ed.predict import classify, respond
from utils.ed.prompts import classification_examples, response_examples
from utils.lm import lora, training
from utils.lm.inference import stop_token_ids
from utils.lm.modeling import label_token_ids, load_model, load_tokenizer, merge_adapter
from utils.lm.tiny import ARCHITECTURES, FAMILIES, KINDS

# the layers that prove attention was adapted, by family (Phi-3 and GPT-2 fuse their projections)
ATTENTION = {"phi3": {"qkv_proj", "o_proj"}, "gpt2": {"c_attn", "attn.c_proj"}}
LLAMA_ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def family(request, tiny_family) -> tuple[str, Path]:
    return request.param, tiny_family(request.param)


def ecf_config(cls, model: Path, work: Path, **more):
    return cls(MODEL=str(model), SMOKE=True, MAX_STEPS=2, CHECKPOINT_DIR=str(work / "ck"),
               TRAIN_DIR=str(work / "rt"), TEST_DIR=str(work / "rs"), TRACKING_DB=str(work / "log.sqlite"), **more)


def test_the_tokenizer_is_of_its_family_kind(family):
    arch, model = family
    tok, kind = load_tokenizer(str(model)), KINDS[FAMILIES[arch].tokenizer]
    assert tok.pad_token_id is not None  # gpt2 has none of its own: eos stands in
    ids = tok("Rachel: hi")["input_ids"]
    assert (ids[0] == tok.bos_token_id) == kind.adds_bos
    assert bool(tok.chat_template) == (kind.template is not None)
    header = prompts.header_ids(tok, "x")
    assert (header[0] == tok.bos_token_id) == kind.adds_bos  # bos exactly where the family adds it
    assert len(set(label_token_ids(tok, EMOTIONS))) == len(EMOTIONS)
    stops = set(stop_token_ids(load_model(str(model)), tok))  # generation ends at eos and at the turn's end
    assert tok.eos_token_id in stops
    if kind.end_of_turn:
        assert tok.convert_tokens_to_ids(kind.end_of_turn) in stops


def test_every_family_runs_both_ecf_stages_the_fused_read_and_the_merge(family, tmp_path):
    arch, model = family
    tok = load_tokenizer(str(model))
    cfg = ecf_config(config.FinetuneConfig, model, tmp_path)
    splits = artifacts.load_splits(cfg)
    result = finetune.finetune(cfg, "emotion", examples.task_examples(cfg, "emotion", splits["train"], tok),
                               examples.task_examples(cfg, "emotion", splits["val"], tok))
    assert ATTENTION.get(arch, LLAMA_ATTENTION) <= set(result.lora_targets)
    saved = load_file(str(Path(result.adapter_dir) / "adapter_model.safetensors"))
    for target in ATTENTION.get(arch, LLAMA_ATTENTION):  # the weights are there, not only the names
        assert any(f".{target}.lora_A" in key for key in saved), (target, sorted(saved)[:4])
    assert 0 < result.trainable_parameters < result.total_parameters
    assert result.global_step == 2 and result.train_loss_first is not None
    assert (Path(result.adapter_dir) / "NOTICE.md").is_file() == (arch == "gemma3")  # Gemma's terms travel along
    emotion_model = load_model(str(model), adapter=result.adapter_dir)
    test = data.strip_labels(splits["test"])
    labelled = predict.predict_emotions(emotion_model, tok, test, "conversation", max_length=cfg.MAX_LENGTH).convs
    assert all(u["emotion"] in EMOTIONS for c in labelled for u in c["conversation"])

    cause_cfg = ecf_config(config.CauseFinetuneConfig, model, tmp_path)
    cause = finetune.finetune(cause_cfg, "cause", examples.task_examples(cause_cfg, "cause", splits["train"], tok), None)
    cause_model = load_model(str(model), adapter=cause.adapter_dir)
    found = predict.predict_causes(cause_model, tok, splits["test"], "conversation", max_length=cfg.MAX_LENGTH,
                                   threshold=0.0)  # every candidate kept: each must point inside its conversation
    for conv in found.convs:
        n = len(conv["conversation"])
        for emotion, cause in conv["emotion-cause_pairs"]:
            assert 1 <= int(emotion.split("_")[0]) <= n and 1 <= int(cause) <= n
    assert sum(len(c["emotion-cause_pairs"]) for c in found.convs) > 0

    fused_cfg = ecf_config(config.FinetuneConfig, model, tmp_path / "fused", STYLE="fused")
    fused = finetune.finetune(fused_cfg, "emotion", examples.task_examples(fused_cfg, "emotion", splits["train"], tok),
                              None)
    fused_model = load_model(str(model), adapter=fused.adapter_dir)
    read = predict.predict_causes(fused_model, tok, test, "fused", max_length=cfg.MAX_LENGTH, threshold=0.0,
                                  decide_offsets={})  # the one read: emotions decided, then causes, one KV cache
    assert all(u["emotion"] in EMOTIONS for c in read.convs for u in c["conversation"])
    assert read.stats["invalid_outputs"] == 0

    merged_dir = merge_adapter(str(model), result.adapter_dir, tmp_path / "merged")
    assert (merged_dir / "NOTICE.md").is_file() == (arch == "gemma3")
    merged = load_model(str(merged_dir))
    ids = torch.tensor([tok("Joey: how you doin'?")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, emotion_model(ids).logits, atol=1e-4)


def test_every_family_runs_the_empathetic_track(family, tmp_path):
    arch, model = family
    tok = load_tokenizer(str(model))
    common = dict(MODEL=str(model), SMOKE=True, MAX_STEPS=2, CHECKPOINT_DIR=str(tmp_path / "ck"),
                  TRAIN_DIR=str(tmp_path / "rt"), TRACKING_DB=str(tmp_path / "log.sqlite"))
    cls_cfg = ed_config.apply_smoke(ed_config.EdClassifyConfig(**common))
    df, _ = ed_config.load_for(cls_cfg)
    splits = ed_config.splits_for(cls_cfg, df)
    clf = training.train(cls_cfg.MODEL, classification_examples(tok, splits["train"], cls_cfg.TEXT_FIELDS, 256), None,
                         ed_config.train_config(cls_cfg, "emotion", tok))
    assert ATTENTION.get(arch, LLAMA_ATTENTION) < set(clf.lora_targets)  # attention and MLP for the label read
    lm = load_model(str(model), adapter=clf.adapter_dir)
    labels = classify(lm, tok, ["I lost my keys again", "We won the cup!"], 256)
    assert [p["label"] in EMOTIONS_32 for p in labels] == [True, True]

    gen_cfg = ed_config.apply_smoke(ed_config.EdGenerateConfig(**common))
    resp = training.train(gen_cfg.MODEL, response_examples(tok, splits["train"], 256), None,
                          ed_config.train_config(gen_cfg, "response"))
    assert ATTENTION.get(arch, LLAMA_ATTENTION) == set(resp.lora_targets)  # attention only for the replies
    replies = respond(load_model(str(model), adapter=resp.adapter_dir), tok, ["My dog is sick."], max_new_tokens=8)
    assert len(replies) == 1 and isinstance(replies[0], str)
    turn = ChatSession(str(model), resp.adapter_dir, clf.adapter_dir, max_new_tokens=8).turn("I failed my exam")
    assert turn["emotion"] in EMOTIONS_32 and isinstance(turn["reply"], str)


def test_a_lora_list_that_matches_nothing_names_the_architecture_and_its_layers(tiny_family):
    model = tiny_family("gpt2")
    with pytest.raises(ValueError) as e:
        lora.resolve(lora.LoraSettings(target_modules=("q_proj", "c_attn")), str(model))
    message = str(e.value)
    assert "'q_proj'" in message and "GPT2LMHeadModel (gpt2)" in message
    assert "attention c_attn, attn.c_proj" in message and "mlp c_fc, mlp.c_proj" in message
    assert "\n" not in message


def test_auto_keeps_the_llama_lists_so_earlier_runs_keep_their_identity(tiny_model_dir):
    ecf = lora.resolve(lora.LoraSettings(target_modules=lora.parse_targets("auto")), str(tiny_model_dir))
    ed = lora.resolve(lora.LoraSettings(target_modules=lora.parse_targets("auto", ("attention",))),
                      str(tiny_model_dir))
    assert ecf.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert ed.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.mark.parametrize("field,value", [("LORA_R", -3), ("LORA_ALPHA", 0), ("LORA_DROPOUT", 1.0),
                                         ("LORA_TARGETS", " , ")])
def test_lora_numbers_are_checked_with_the_other_parameters(field, value):
    with pytest.raises(ValueError, match=field):
        config.FinetuneConfig(**{field: value})


def test_gemma3_is_the_embedded_gguf_and_what_is_made_from_it_carries_its_terms(tmp_path):
    from utils.lm import sources

    folder, name = sources.resolve_model_source("gemma3")
    assert name == "gemma-3-270m-q4_k_m.gguf" and (Path(folder) / name).stat().st_size > 200e6
    assert sources.model_identity("gemma3")["sha256"].startswith("a5fd3b62")  # the package's checked file
    assert sources.write_notice(tmp_path, "gemma3").read_text(encoding="utf-8").count("Gemma Terms of Use") == 1
    assert sources.write_notice(tmp_path / "other", "smollm2") is None
    renamed = tmp_path / "model.gguf"  # no "gemma" in its name: its own metadata says what it is
    renamed.symlink_to(Path(folder) / name)
    assert sources.is_gemma(str(renamed)) and not sources.is_gemma(str(sources.smollm2_path()))


def test_a_tokenizer_that_cannot_tell_the_labels_apart_says_what_to_do():
    from utils.lm.tiny import build_tokenizer

    tok = build_tokenizer("mistral", ["so so so", "sun sea"],
                          vocab_size=60)  # no label word is a token: several start with "▁s"
    with pytest.raises(ValueError) as e:
        label_token_ids(tok, EMOTIONS)
    assert "['sadness', 'surprise']" in str(e.value) and "STYLE='per_utterance'" in str(e.value)
