"""Inference: label scoring and option scoring equal naive computations; generation stops; loops resume."""

from __future__ import annotations

import warnings

import random

import numpy as np
import pytest
import torch

from utils.lm import inference, modeling
from utils.io import read_jsonl


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return modeling.load_model(str(tiny_model_dir)), modeling.load_tokenizer(str(tiny_model_dir))


def _random_sequences(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(3, 40))] for _ in range(n)]


def _naive_logprobs(model, seq: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([seq])).logits[0].float(), dim=-1)


def test_label_logprobs_equal_one_sequence_at_a_time(tiny):
    model, tok = tiny
    seqs = _random_sequences(11, len(tok))
    rng = random.Random(1)
    positions = [sorted(rng.sample(range(len(s)), k=min(3, len(s)))) for s in seqs]
    positions[4] = []  # a sequence with nothing to read
    positions[5] = [-1, 0]  # negative positions count from the end
    cands = modeling.label_token_ids(tok, ["neutral", "joy", "anger", "yes", "no"])
    got = inference.label_logprobs(model, seqs, positions, cands, batch_size=4, min_fill=0.0)  # padded batches
    assert len(got) == len(seqs) and got[4].shape == (0, len(cands))
    for seq, pos, arr in zip(seqs, positions, got):
        want = _naive_logprobs(model, seq)[[p % len(seq) for p in pos]][:, cands]
        np.testing.assert_allclose(arr, want.numpy(), atol=2e-5)
        assert arr.shape == (len(pos), len(cands)) and (arr < 0).all()  # full-vocabulary log-softmax
    with pytest.raises(IndexError, match="outside a sequence of"):
        inference.label_logprobs(model, [[5, 6]], [[2]], cands)


def test_score_options_equal_manual_sums(tiny):
    model, tok = tiny
    prompts = _random_sequences(3, len(tok), seed=2)
    options = [[7], [8, 9], [10, 11, 12], [8, 13]]  # shared prefixes and lengths 1-3
    with warnings.catch_warnings():  # the KV cache goes by the keyword transformers keeps after 5.40
        warnings.filterwarnings("error", message=".*past_key_values.*", category=FutureWarning)
        got = inference.score_options(model, prompts, options, batch_size=3)
    for i, prompt in enumerate(prompts):
        for j, opt in enumerate(options):
            logp = _naive_logprobs(model, prompt + opt)
            want = sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(opt))
            assert got[i, j] == pytest.approx(want, abs=1e-4)
    singles = inference.score_options(model, prompts, [[7], [9]])  # the batched one-token path
    np.testing.assert_allclose(singles[:, 0], got[:, 0], atol=1e-5)


def test_batched_generation_equals_one_prompt_at_a_time(tiny):
    model, tok = tiny
    prompts = [tok(t)["input_ids"] for t in ("I am so happy", "What?", "There is something under the sofa")]
    batched = inference.generate(model, tok, prompts, max_new_tokens=6, batch_size=3, min_fill=0.0)  # one batch
    alone = [inference.generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone  # left padding does not leak into the answers


def test_generation_stops_at_eos_and_returns_only_new_text(tiny):
    model, tok = tiny
    joy, anger, fear = modeling.label_token_ids(tok, ["joy", "anger", "fear"])
    plans = [[joy], [anger, fear, joy]]  # then eos; rows ordered longest prompt first
    step = {"n": 0}

    def force(module, args, output):
        out = torch.full_like(output, -1e4)
        for row, plan in enumerate(plans):
            out[row, -1, plan[step["n"]] if step["n"] < len(plan) else tok.eos_token_id] = 0.0
        step["n"] += 1
        return out

    handle = model.lm_head.register_forward_hook(force)
    try:
        prompts = [tok("a longer prompt here")["input_ids"], tok("short")["input_ids"]]
        texts = inference.generate(model, tok, prompts, max_new_tokens=10, batch_size=2, min_fill=0.0)
    finally:
        handle.remove()
    assert texts == [" joy", " anger fear joy"]
    assert step["n"] == 4  # stopped once both rows hit eos, not after max_new_tokens


def test_resumable_map_resumes_after_a_crash_with_identical_results(tmp_path):
    items = [{"id": f"c{i}", "x": i} for i in range(10)]
    calls = []

    def fn(batch):
        calls.append([b["id"] for b in batch])
        if len(calls) == 3 and crash["on"]:
            raise RuntimeError("simulated kill")
        return [{"sq": b["x"] ** 2, "pair": (b["x"], "x")} for b in batch]

    crash = {"on": False}
    whole = inference.resumable_map(items, "id", fn, tmp_path / "whole.jsonl", batch_size=3, desc="test")
    crash["on"], calls[:] = True, []
    with pytest.raises(RuntimeError):
        inference.resumable_map(items, "id", fn, tmp_path / "ckpt.jsonl", batch_size=3)
    assert len(read_jsonl(tmp_path / "ckpt.jsonl")) == 1 + 2  # the run's identity, then two batches
    with open(tmp_path / "ckpt.jsonl", "a", encoding="utf-8") as f:
        f.write('{"keys": ["c6"], "resu')  # a torn line from a kill mid-write
    crash["on"], calls[:] = False, []
    resumed = inference.resumable_map(items, lambda it: it["id"], fn, tmp_path / "ckpt.jsonl", batch_size=3)
    assert calls == [["c6", "c7", "c8"], ["c9"]]  # only what was not done
    assert resumed == whole and whole[4] == {"sq": 16, "pair": [4, "x"]}
    assert len(read_jsonl(tmp_path / "ckpt.jsonl")) == 1 + 4  # the torn line was cut, later batches readable
    with pytest.raises(ValueError, match="unique keys"):
        inference.resumable_map([{"id": 1}, {"id": 1}], "id", fn, tmp_path / "dup.jsonl")


def test_a_checkpoint_of_another_run_or_a_bad_line_is_not_resumed(tmp_path, capsys):
    items = [{"id": f"c{i}", "x": i} for i in range(6)]
    path = tmp_path / "ckpt.jsonl"

    def run(identity, scale, fail_after=None):
        calls = []

        def fn(batch):
            calls.append(len(batch))
            if fail_after is not None and len(calls) > fail_after:
                raise RuntimeError("killed")
            return [b["x"] * scale for b in batch]
        return inference.resumable_map(items, "id", fn, path, batch_size=2, identity=identity), calls

    with pytest.raises(RuntimeError):
        run({"adapter": "A"}, 1, fail_after=2)  # A labels 4 of 6, then the kill
    out, calls = run({"adapter": "B"}, 10)
    assert out == [x * 10 for x in range(6)] and calls == [2, 2, 2]  # none of A's results in B's output
    assert "written by another run" in capsys.readouterr().out
    for bad in (b'{"keys": ["c0"]}\n', b'{"keys": ["c0"], "results": [1, 2]}\n', b"\xff\xfe\n"):
        with open(path, "ab") as f:
            f.write(bad)
        out, calls = run({"adapter": "B"}, 10)
        assert out == [x * 10 for x in range(6)] and calls == [2, 2, 2], bad
        assert str(path) in capsys.readouterr().out  # the hidden checkpoint file is named


def test_label_logprobs_through_a_lora_adapter_and_the_fallback_head(tiny, tiny_model_dir):
    model, tok = tiny
    strategy = modeling.choose_strategy()
    lm = modeling.add_lora(modeling.load_model(str(tiny_model_dir), strategy=strategy),
                           modeling.LoraSettings(r=4, alpha=8, dropout=0.0), strategy)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:  # B starts at zero: move it, so the adapter changes the logits
                p.copy_(torch.randn_like(p) * 0.5)
    seqs = _random_sequences(6, len(tok), seed=4)
    positions = [[0, len(s) - 1] for s in seqs]
    cands = modeling.label_token_ids(tok, ["joy", "anger", "yes"])
    got = inference.label_logprobs(lm, seqs, positions, cands, batch_size=3)
    lm.eval()
    for seq, pos, arr in zip(seqs, positions, got):
        want = _naive_logprobs(lm, seq)[pos][:, cands]
        np.testing.assert_allclose(arr, want.numpy(), atol=2e-5)
        assert not np.allclose(arr, _naive_logprobs(model, seq)[pos][:, cands].numpy(), atol=1e-3)
    lm.get_base_model().config.logit_scale = 0.5  # a scaled head: the plain-matmul shortcut must stand aside
    assert inference._backbone_and_head(lm) is None
    np.testing.assert_allclose(inference.label_logprobs(lm, seqs, positions, cands, batch_size=3)[0], got[0],
                               atol=2e-5)  # Llama ignores logit_scale, so the fallback gives the same numbers


def test_length_batches_bound_the_padding_and_cover_every_sequence_once():
    rng = random.Random(5)
    lengths = [rng.randint(5, 500) for _ in range(200)]
    batches = inference.length_batches(lengths, 8)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 8 and lengths[b[0]] == width
        assert all(lengths[i] >= 0.8 * width for i in b)  # under 20% padding in any batch
    fixed = [sorted(lengths, reverse=True)[k:k + 8] for k in range(0, 200, 8)]
    assert sum(len(b) * max(lengths[i] for i in b) for b in batches) <= sum(len(b) * b[0] for b in fixed)
    assert inference.length_batches([10] * 20, 8) == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    with pytest.raises(ValueError, match="batch_size"):
        inference.length_batches([3], 0)
