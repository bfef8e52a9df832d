"""Training: answer-only masking, LoRA training on the tiny model, summaries, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from utils.lm import loss as lm_loss
from utils.io import NOTICE
from utils.lm import modeling, resume, train_data, training
from utils.lm.batch import IGNORE
from utils.lm.training import TrainConfig

WORDS = ("joy", "anger", "fear", "sadness")


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return modeling.load_tokenizer(str(tiny_model_dir))


def test_answer_only_labels_mask_exactly_the_prompt(tok):
    ex = train_data.tokenize_prompt_completion(tok, "How do you feel?", "joy", max_length=128)
    prompt = tok.apply_chat_template([{"role": "user", "content": "How do you feel?"}], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids  # exactly what inference feeds
    assert ex["labels"][:n] == [IGNORE] * n and IGNORE not in ex["labels"][n:]
    assert tok.decode(ex["labels"][n:]) == "joy<|im_end|>"  # the end token is learnt, so generation stops
    every = train_data.tokenize_prompt_completion(tok, "How do you feel?", "joy", 128, loss_on="all")
    assert every["labels"] == every["input_ids"] == ex["input_ids"]


def test_chat_messages_and_plain_prompts(tok):
    msgs = [{"role": "system", "content": "Label emotions."}, {"role": "user", "content": "I won!"}]
    ex = train_data.tokenize_prompt_completion(tok, msgs, "joy", 128)
    assert tok.decode(ex["input_ids"]).startswith("<s><|im_start|>system\nLabel emotions.")
    tok.chat_template, saved = None, tok.chat_template
    try:
        plain = train_data.tokenize_prompt_completion(tok, "I won! Emotion:", " joy", 128)
    finally:
        tok.chat_template = saved
    assert plain["input_ids"][0] == tok.bos_token_id and plain["input_ids"][-1] == tok.eos_token_id
    answer = [t for t in plain["labels"] if t != IGNORE]
    assert answer == tok.encode(" joy", add_special_tokens=False) + [tok.eos_token_id]


def test_long_prompts_lose_their_left_end_never_the_answer(tok):
    long_prompt = " ".join(f"utterance {i} says something." for i in range(60)) + " THE END"
    full = train_data.tokenize_prompt_completion(tok, long_prompt, "sadness", 10_000)
    cut = train_data.tokenize_prompt_completion(tok, long_prompt, "sadness", 40)
    assert len(cut["input_ids"]) == 40 and len(full["input_ids"]) > 40
    assert cut["input_ids"][0] == tok.bos_token_id
    assert cut["input_ids"][1:] == full["input_ids"][-39:]  # the prompt's end and the whole answer survive
    assert [t for t in cut["labels"] if t != IGNORE] == [t for t in full["labels"] if t != IGNORE]
    with pytest.raises(ValueError, match="max_length"):
        train_data.tokenize_prompt_completion(tok, "hi", "sadness " * 20, 8)


def test_collator_pads_ids_labels_and_mask():
    batch = train_data.collator(pad_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 9]},
                                        {"input_ids": [8], "labels": [4]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 9], [4, -100, -100]]  # labels kept as given, not rebuilt
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_config_and_dataset_errors_say_what_to_fix():
    with pytest.raises(ValueError, match="report_to"):
        TrainConfig(output_dir="x", report_to="mlflow")
    with pytest.raises(ValueError, match="example 1 has 5 tokens, over max_length=4"):
        train_data.make_dataset([{"input_ids": [1], "labels": [1]}, {"input_ids": [1] * 5, "labels": [1] * 5}], 4)
    with pytest.raises(ValueError, match="nothing to learn"):
        train_data.make_dataset([{"input_ids": [1, 2], "labels": [IGNORE, IGNORE]}], 4)


def _examples(tok, n: int, seed: int = 0) -> list[dict]:
    """A learnable task: the answer is the emotion word the prompt repeats."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w = rng.choice(WORDS)
        out.append(train_data.tokenize_prompt_completion(tok, f"I feel {w}, so {w}.", w, 64))
    return out


class SimulatedKill(RuntimeError):
    """Stands for a notebook disconnect in the middle of training."""


class Capture(TrainerCallback):
    """Keeps the trained model (to compare its frozen weights) and can crash at a step."""

    def __init__(self, crash_at: int | None = None):
        self.crash_at, self.model = crash_at, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.model = model
        if self.crash_at is not None and state.global_step >= self.crash_at:
            raise SimulatedKill(f"killed at step {state.global_step}")


def test_train_lowers_loss_changes_only_lora_and_writes_artifacts(tmp_path, tiny_model_dir, tok):
    examples = _examples(tok, 32)
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), epochs=6, learning_rate=1e-2, batch_size=8,
                      logging_steps=4, save_steps=100, warmup_share=0.0)
    cap = Capture()
    result = training.train(str(tiny_model_dir), examples, examples[:8], cfg, callbacks=[cap])
    assert result.global_step == 24 and result.train_loss_last < result.train_loss_first - 1.0
    assert result.eval_loss is not None and result.strategy == "full-precision"
    assert result.train_tokens == 6 * sum(len(e["input_ids"]) for e in examples)  # non-pad tokens, each epoch
    base = modeling.load_model(str(tiny_model_dir))
    trained = {k.removeprefix("base_model.model.").replace(".base_layer", ""): p
               for k, p in cap.model.named_parameters() if "lora_" not in k}
    assert trained.keys() == dict(base.named_parameters()).keys()
    for name, p in base.named_parameters():  # frozen base weights are bit-identical
        assert torch.equal(trained[name].detach(), p), name
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: training moved it
    assert (tmp_path / "run" / "adapter" / "tokenizer.json").is_file()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["global_step"] == 24 and summary["train_tokens"] == result.train_tokens
    assert summary["tokens_per_s"] > 0 and summary["peak_memory_mb"] > 0 and summary["resumed_from"] is None
    assert any("eval_loss" in h for h in summary["log_history"])


class DtypeProbe(TrainerCallback):
    """Records the dtype a LoRA-adapted projection produces in each training forward."""

    def __init__(self):
        self.dtypes = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layer = next(m for n, m in model.named_modules() if n.endswith("q_proj"))
        layer.register_forward_hook(lambda mod, inputs, out: self.dtypes.add(out.dtype))


def test_on_the_bf16_path_training_autocasts_and_says_so_in_its_identity(tmp_path, tiny_model_dir, tok):
    examples = _examples(tok, 8)
    runs = {}
    for autocast in (False, True):
        strategy = modeling.LoadStrategy("full-precision", "cpu", torch.float32, cpu_autocast=autocast)
        assert (training.sft_config(TrainConfig(output_dir="x"), strategy, False).bf16, strategy.precision) == (
            autocast, "bf16" if autocast else "no")
        cfg = TrainConfig(output_dir=str(tmp_path / str(autocast)), max_steps=2, batch_size=4, save_steps=100)
        probe = DtypeProbe()
        result = training.train(str(tiny_model_dir), examples, None, cfg, strategy=strategy, callbacks=[probe])
        run = json.loads((tmp_path / str(autocast) / resume.RUN_FILE).read_text())
        runs[autocast] = (probe.dtypes, run, result)
    (fp32_dtypes, fp32_run, _), (bf16_dtypes, bf16_run, bf16_result) = runs[False], runs[True]
    assert fp32_dtypes == {torch.float32} and bf16_dtypes == {torch.bfloat16}
    assert "cpu_autocast" not in fp32_run["settings"] and bf16_run["settings"]["cpu_autocast"] is True
    settings = dataclasses.asdict(TrainConfig(output_dir="x", max_steps=2, batch_size=4, save_steps=100))
    before = resume.run_identity(str(tiny_model_dir), settings, examples, None)  # what fp32 runs had before
    assert fp32_run["fingerprint"] == before["fingerprint"] != bf16_run["fingerprint"]
    assert bf16_result.global_step == 2 and bf16_result.train_loss_first is not None


def test_killed_run_resumes_from_its_checkpoint_and_ends_like_an_unbroken_one(tmp_path, tiny_model_dir, tok, capsys):
    examples = _examples(tok, 24, seed=1)

    def cfg(name):
        return TrainConfig(output_dir=str(tmp_path / name), max_steps=8, batch_size=4, learning_rate=5e-3,
                           save_steps=3, save_total_limit=5, logging_steps=1)

    whole = training.train(str(tiny_model_dir), examples, None, cfg("whole"))
    with pytest.raises(SimulatedKill):
        training.train(str(tiny_model_dir), examples, None, cfg("killed"), callbacks=[Capture(crash_at=5)])
    assert not (tmp_path / "killed" / "adapter").exists()
    resumed = training.train(str(tiny_model_dir), examples, None, cfg("killed"))
    assert resumed.resumed_from.endswith("checkpoint-3")
    assert resumed.global_step == whole.global_step == 8
    assert resumed.train_tokens == whole.train_tokens and 0 < resumed.session_tokens < resumed.train_tokens
    steps = [h["step"] for h in resumed.log_history if "loss" in h]
    assert steps == list(range(1, 9))  # no step logged twice, none missing
    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    capsys.readouterr()
    again = training.train(str(tiny_model_dir), examples, None, cfg("killed"))  # a finished run stays finished
    assert again.global_step == 8 and again.resumed_from.endswith("checkpoint-8") and again.session_tokens == 0
    # its record keeps the run's own training time as the trainer logged it, not the seconds the restore took
    logged = [h["train_runtime"] for h in again.log_history if "train_runtime" in h]
    assert logged and again.wall_s == pytest.approx(logged[-1], abs=1e-3) and again.peak_memory_kind.endswith(", restore only")
    assert "restored the finished run from checkpoint-8: nothing trained in this session" in capsys.readouterr().out


def test_a_run_resumes_only_its_own_complete_checkpoints(tmp_path, tiny_model_dir, tok, capsys):
    examples = _examples(tok, 24, seed=2)

    def cfg(**changes):
        base = dict(output_dir=str(tmp_path / "run"), max_steps=8, batch_size=4, learning_rate=5e-3,
                    save_steps=3, save_total_limit=5, logging_steps=1)
        return TrainConfig(**{**base, **changes})

    with pytest.raises(SimulatedKill):
        training.train(str(tiny_model_dir), examples, None, cfg(), callbacks=[Capture(crash_at=7)])
    (tmp_path / "run" / "checkpoint-6" / "trainer_state.json").unlink()  # killed while writing checkpoint-6
    resumed = training.train(str(tiny_model_dir), examples, None, cfg())
    assert resumed.resumed_from.endswith("checkpoint-3") and resumed.global_step == 8
    assert "skipping" in capsys.readouterr().out
    finished = {p.relative_to(tmp_path / "run"): p.read_bytes() for p in (tmp_path / "run").rglob("*")
                if p.is_file() and p.name != ".lock"}
    # the same folder with another learning rate: the finished run's adapter is not handed back as this one,
    # and not lost either: it is moved aside, byte for byte, with its run.json, and the terminal is told where
    other = training.train(str(tiny_model_dir), examples, None, cfg(learning_rate=1e-2))
    assert other.resumed_from is None and other.session_tokens == other.train_tokens > 0
    said = capsys.readouterr().out
    assert "learning_rate: 0.005 -> 0.01" in said and "lora" not in said  # only what differs is named
    assert json.loads((tmp_path / "run" / "run.json").read_text())["fingerprint"] == other.fingerprint != resumed.fingerprint
    kept = tmp_path / f"run.kept-{resumed.fingerprint}"
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == finished
    assert f"{NOTICE}kept the finished run that was in {tmp_path / 'run'}" in said and str(kept) in said
    # other examples (data, LIMIT, style) are another run too
    fewer = training.train(str(tiny_model_dir), examples[:20], None, cfg(learning_rate=1e-2))
    assert fewer.resumed_from is None and "train_examples_sha256" in capsys.readouterr().out
    assert (tmp_path / f"run.kept-{other.fingerprint}" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_run_stopped_beside_a_finished_one_leaves_it_usable_in_place(tmp_path, tiny_model_dir, tok, capsys):
    """A run of another identity trains in run.next-<its fingerprint>; stopped, the finished adapter is still in
    run/ (not moved aside before training); rerun, it resumes there and only then takes run/'s place."""
    examples = _examples(tok, 16, seed=3)

    def cfg(**changes):
        return TrainConfig(**{**dict(output_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, learning_rate=5e-3,
                                     save_steps=2, logging_steps=1), **changes})

    first = training.train(str(tiny_model_dir), examples, None, cfg())
    finished = {p.relative_to(tmp_path / "run"): p.read_bytes() for p in (tmp_path / "run").rglob("*")
                if p.is_file() and p.name != ".lock"}
    with pytest.raises(SimulatedKill):
        training.train(str(tiny_model_dir), examples, None, cfg(learning_rate=1e-2), callbacks=[Capture(crash_at=3)])
    assert {p.relative_to(tmp_path / "run"): p.read_bytes() for p in (tmp_path / "run").rglob("*")
            if p.is_file() and p.name != ".lock"} == finished  # in place, byte for byte
    [stage] = tmp_path.glob("run.next-*")
    assert (stage / "checkpoint-2").is_dir() and not list(tmp_path.glob("run.kept-*"))
    assert "takes its place only when it finishes" in capsys.readouterr().out
    second = training.train(str(tiny_model_dir), examples, None, cfg(learning_rate=1e-2))
    assert second.resumed_from == str(stage / "checkpoint-2") and second.global_step == 4
    assert not stage.exists() and second.adapter_dir == str(tmp_path / "run" / "adapter")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["fingerprint"] == second.fingerprint
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["output_dir"] == str(tmp_path / "run")
    kept = tmp_path / f"run.kept-{first.fingerprint}"
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == finished
    assert f"{NOTICE}kept the finished run that was in {tmp_path / 'run'}" in capsys.readouterr().out


def _fake_run(folder, fingerprint: str, finished: bool, steps=(3, 6)) -> None:
    for step in steps:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"ckpt%d" % step)
    (folder / resume.RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint, "settings": {"seed": 1}}))
    if finished:
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"weights " + fingerprint.encode())
        (folder / "train_summary.json").write_text("{}")


def test_making_room_keeps_a_finished_run_and_clears_only_an_unfinished_ones_checkpoints(tmp_path):
    new = {"fingerprint": "new", "settings": {"seed": 2}}
    finished, unfinished, replaced = tmp_path / "finished", tmp_path / "unfinished", tmp_path / "replaced"
    for folder, done in ((finished, True), (unfinished, False), (replaced, True)):
        _fake_run(folder, "old", done)
    stale = lambda folder: resume.resume_plan(folder, new, True)[1:]  # noqa: E731 (the checkpoints, why)
    lines = resume.make_room(finished, new, *stale(finished))
    kept = tmp_path / "finished.kept-old"
    assert len(lines) == 1 and str(kept) in lines[0] and "settings.seed: 1 -> 2" in lines[0]
    assert (kept / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights old"
    assert sorted(p.name for p in kept.iterdir()) == ["adapter", "checkpoint-3", "checkpoint-6", "run.json",
                                                      "train_summary.json"]
    assert [p.name for p in finished.iterdir()] == []  # room for the new run; nothing of the old one deleted
    _fake_run(finished, "old", True, steps=())  # kept twice: the earlier copy stays too
    resume.make_room(finished, new, [], "")
    assert (tmp_path / "finished.kept-old-2" / "adapter").is_dir() and (kept / "adapter").is_dir()
    lines = resume.make_room(unfinished, new, *stale(unfinished))  # no adapter: its checkpoints may go
    assert len(lines) == 1 and "removing 2 checkpoint(s), they belong to another run" in lines[0]
    assert sorted(p.name for p in unfinished.iterdir()) == ["run.json"] and not list(tmp_path.glob("unfinished.kept*"))
    lines = resume.make_room(replaced, new, *stale(replaced), replace=True)  # asked for: replaced, and said
    assert "replacing the finished run" in lines[0] and not list(tmp_path.glob("replaced.kept*"))
    assert not (replaced / "checkpoint-3").exists()
    assert resume.make_room(replaced, {"fingerprint": "old"}, [], "") == []  # its own identity: nothing to keep


def test_a_second_run_on_the_same_folder_stops_with_a_message(tmp_path, tiny_model_dir, tok):
    from utils.io import Busy, folder_lock

    with folder_lock(tmp_path / "run", "training run"):
        with pytest.raises(Busy, match="in use by training run pid"):
            training.train(str(tiny_model_dir), _examples(tok, 8), None,
                           TrainConfig(output_dir=str(tmp_path / "run"), max_steps=1, batch_size=4))


def _answer_examples(tok, n: int, seed: int = 0) -> tuple[list[dict], list[int]]:
    """Label-at-a-position examples like the conversation style's: the word a line repeats, read at its end."""
    ids = modeling.label_token_ids(tok, WORDS)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        input_ids, answers = [], {}
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(WORDS))
            input_ids += tok(f" I feel {WORDS[k]} today .\n", add_special_tokens=False)["input_ids"]
            answers[len(input_ids)] = ids[k]  # read at the newline p: labels[p + 1], as in the pipeline
        input_ids.append(tok.eos_token_id)
        out.append({"input_ids": input_ids, "labels": [answers.get(t, IGNORE) for t in range(len(input_ids))]})
    return out, ids


def test_answer_loss_is_the_softmax_over_the_answers_at_the_labelled_positions(tiny_model_dir, tok):
    model = modeling.load_model(str(tiny_model_dir))
    examples, ids = _answer_examples(tok, 3)
    batch = train_data.collator(tok.pad_token_id)(examples)
    loss, picked = lm_loss.answer_loss(model, batch, ids)
    with torch.no_grad():  # by hand: every position's full logits, then the answers' softmax
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = []
    for row in range(len(examples)):
        for t in range(batch["labels"].shape[1] - 1):
            gold = int(batch["labels"][row, t + 1])
            if gold != IGNORE:
                logp = torch.log_softmax(logits[row, t, ids].float(), dim=-1)
                want.append(-logp[ids.index(gold)])
    assert picked.shape == (len(want), len(ids))
    torch.testing.assert_close(loss.detach(), torch.stack(want).mean(), atol=1e-5, rtol=1e-5)
    summed, _ = lm_loss.answer_loss(model, batch, ids, num_items_in_batch=1)  # divided by the count given
    torch.testing.assert_close(summed.detach(), torch.stack(want).sum(), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match=r"not among answer_ids"):
        lm_loss.answer_loss(model, batch, ids[:2])
    with pytest.raises(ValueError, match="answer_ids"):
        TrainConfig(output_dir="x", answer_ids=(5, 5))


def test_class_weights_follow_the_answer_frequencies_and_scale_each_answers_loss(tiny_model_dir, tok):
    examples = [{"labels": [IGNORE, 7, 7, 7, 9]}, {"labels": [7, 7, 7, 7, 7, 9, IGNORE]}]  # 7: 80%, 9: 20%, 11: never
    assert lm_loss.answer_weights(examples, (7, 9, 11), "none") is None
    sqrt = lm_loss.answer_weights(examples, (7, 9, 11), "sqrt")
    inverse = lm_loss.answer_weights(examples, (7, 9, 11), "inverse")
    assert sqrt[1] / sqrt[0] == pytest.approx(2.0) and inverse[1] / inverse[0] == pytest.approx(4.0)
    for w in (sqrt, inverse):  # the average training answer keeps weight 1; an unseen answer the largest
        assert 0.8 * w[0] + 0.2 * w[1] == pytest.approx(1.0) and w[2] == w[1]
    with pytest.raises(ValueError, match="no training answer"):
        lm_loss.answer_weights(examples, (1, 2), "sqrt")
    with pytest.raises(ValueError, match="answer_weighting='log'"):
        TrainConfig(output_dir="x", answer_ids=(1, 2), answer_weighting="log")
    with pytest.raises(ValueError, match="needs answer_ids"):
        TrainConfig(output_dir="x", answer_weighting="sqrt")

    model = modeling.load_model(str(tiny_model_dir))
    found, ids = _answer_examples(tok, 3)
    batch = train_data.collator(tok.pad_token_id)(found)
    weights = [1.0 + k for k in range(len(ids))]
    plain, picked = lm_loss.answer_loss(model, batch, ids, num_items_in_batch=1)
    weighted, _ = lm_loss.answer_loss(model, batch, ids, num_items_in_batch=1, weights=weights)
    gold = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE].tolist()
    nll = -torch.log_softmax(picked.detach(), dim=-1)[range(len(gold)), [ids.index(g) for g in gold]]
    torch.testing.assert_close(plain.detach(), nll.sum(), atol=1e-4, rtol=1e-5)
    want = sum(weights[ids.index(g)] * n for g, n in zip(gold, nll))  # each answer's loss times its gold's weight
    torch.testing.assert_close(weighted.detach(), want, atol=1e-4, rtol=1e-5)


def test_a_run_with_other_class_weights_is_another_run():
    from utils.lm.resume import run_identity

    examples = [{"input_ids": [1, 2], "labels": [IGNORE, 2]}]
    ident = {w: run_identity("m", {"answer_ids": (2, 3), "answer_weighting": w}, examples, None)["fingerprint"]
             for w in ("none", "sqrt")}
    assert ident["none"] != ident["sqrt"]  # resuming would mix two losses
    assert ident["none"] == run_identity("m", {"answer_ids": (2, 3)}, examples, None)["fingerprint"]  # runs made before


def test_the_notebooks_class_weighting_reaches_the_trainer_config():
    from utils.ecf import config, finetune

    cfg = config.FinetuneConfig(MODEL="smollm2", CLASS_WEIGHTING="sqrt")
    assert finetune.train_config(cfg, "emotion").answer_weighting == "sqrt"
    with pytest.raises(ValueError, match="CLASS_WEIGHTING='sqrt' needs STYLE='conversation'"):
        finetune.train_config(config.FinetuneConfig(MODEL="smollm2", CLASS_WEIGHTING="sqrt", STYLE="per_utterance"),
                              "emotion")
    with pytest.raises(ValueError, match="CLASS_WEIGHTING='balanced'"):
        config.FinetuneConfig(CLASS_WEIGHTING="balanced")


def test_a_neutral_factor_composes_with_the_class_weights_and_keeps_the_average_answer_at_1():
    examples = [{"labels": [IGNORE, 7, 7, 7, 9]}, {"labels": [7, 7, 7, 7, 7, 9, IGNORE]}]  # 7: 80%, 9: 20%, 11: never
    assert lm_loss.answer_weights(examples, (7, 9, 11), "none", ()) is None
    masked = lm_loss.answer_weights(examples, (7, 9, 11), "none", (0.0, 1.0, 1.0))
    assert masked == pytest.approx((0.0, 5.0, 5.0))  # 7 teaches nothing; 0.2 * 5 = 1
    half = lm_loss.answer_weights(examples, (7, 9, 11), "sqrt", (0.5, 1.0, 1.0))
    sqrt = lm_loss.answer_weights(examples, (7, 9, 11), "sqrt")
    assert half[0] / half[1] == pytest.approx(0.5 * sqrt[0] / sqrt[1])  # the factor multiplies the class weight
    assert 0.8 * half[0] + 0.2 * half[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="every training answer at weight 0"):
        lm_loss.answer_weights(examples, (7, 9, 11), "none", (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="one factor >= 0 per answer id"):
        TrainConfig(output_dir="x", answer_ids=(1, 2), answer_scales=(1.0,))


def test_a_zero_factor_takes_an_answers_positions_out_of_the_loss_and_leaves_the_tokens(tiny_model_dir, tok):
    model = modeling.load_model(str(tiny_model_dir))
    examples, ids = _answer_examples(tok, 4)
    batch = train_data.collator(tok.pad_token_id)(examples)
    masked_word = ids[0]  # "joy" stands for neutral here
    weights = lm_loss.answer_weights(examples, ids, "none", tuple(0.0 if t == masked_word else 1.0 for t in ids))
    loss, picked = lm_loss.answer_loss(model, batch, ids, num_items_in_batch=1, weights=weights)
    gold = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE].tolist()
    assert masked_word in gold and any(g != masked_word for g in gold)
    nll = -torch.log_softmax(picked.detach(), dim=-1)[range(len(gold)), [ids.index(g) for g in gold]]
    rest = [n for g, n in zip(gold, nll) if g != masked_word]
    scale = len(gold) / len(rest)  # the other answers' weights, rescaled so the average answer keeps weight 1
    torch.testing.assert_close(loss.detach(), scale * torch.stack(rest).sum(), atol=1e-4, rtol=1e-5)


def test_neutral_weight_reaches_the_trainer_only_off_its_default_and_leaves_the_examples(tiny_model_dir, tok):
    from utils.ecf import config, data, examples, finetune
    from utils.lm.resume import run_identity

    base = config.FinetuneConfig(MODEL=str(tiny_model_dir))
    lever = config.FinetuneConfig(MODEL=str(tiny_model_dir), NEUTRAL_WEIGHT=0.25, CLASS_WEIGHTING="sqrt")
    default, weighted = finetune.train_config(base, "emotion"), finetune.train_config(lever, "emotion")
    assert default.answer_scales == () and weighted.answer_weighting == "sqrt"
    words = examples.answer_words("conversation", "emotion")
    assert weighted.answer_scales == tuple(0.25 if w == "neutral" else 1.0 for w in words)
    convs = data.load_ecf(data.SAMPLE_PATH)[:3]
    same = examples.task_examples(lever, "emotion", convs, tok)
    assert same == examples.task_examples(base, "emotion", convs, tok)  # every utterance stays, labels too
    settings = dataclasses.asdict(default)
    now = run_identity("m", settings, same, None)
    assert now == run_identity("m", {k: v for k, v in settings.items() if k != "answer_scales"}, same, None)
    assert run_identity("m", dataclasses.asdict(weighted), same, None)["fingerprint"] != now["fingerprint"]
    assert finetune.train_config(lever, "cause").answer_scales == ()  # yes/no: no neutral answer
    with pytest.raises(ValueError, match="NEUTRAL_WEIGHT=0.0 needs STYLE='conversation'"):
        finetune.train_config(config.FinetuneConfig(MODEL=str(tiny_model_dir), NEUTRAL_WEIGHT=0.0,
                                                    STYLE="per_utterance"), "emotion")
    with pytest.raises(ValueError, match="NEUTRAL_WEIGHT=-1"):
        config.FinetuneConfig(MODEL=str(tiny_model_dir), NEUTRAL_WEIGHT=-1.0)


def test_answer_loss_trains_and_accumulated_batches_match_one_big_batch(tmp_path, tiny_model_dir, tok):
    examples, ids = _answer_examples(tok, 16, seed=3)
    lora = modeling.LoraSettings(r=8, alpha=16, dropout=0.0)

    def run(name, batch_size, grad_accum, steps):
        cfg = TrainConfig(output_dir=str(tmp_path / name), max_steps=steps, batch_size=batch_size,
                          grad_accum=grad_accum, learning_rate=1e-2, warmup_share=0.0, logging_steps=1,
                          save_steps=100, group_by_length=False, lora=lora, answer_ids=tuple(ids))
        result = training.train(str(tiny_model_dir), examples, examples[:4], cfg)
        return result, load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")

    big, a = run("big", 8, 1, 1)
    small, b = run("accumulated", 4, 2, 1)
    assert big.global_step == small.global_step == 1
    # Adam hides a constant factor in the update; the logged loss does not: a mean over all 8 examples' answers
    assert small.train_loss_first == pytest.approx(big.train_loss_first, rel=1e-4)
    for k in a:  # the same 8 examples, the loss normalised over all their answers either way
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-4)
    long, _ = run("long", 8, 1, 20)
    assert long.train_loss_last < long.train_loss_first * 0.5 and long.eval_loss is not None
