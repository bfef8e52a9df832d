"""Batched inference: label scoring (always-valid outputs), option scoring, generation, resumable loops.

Label scoring reads the log-probabilities of a fixed set of candidate tokens at chosen positions of
one forward pass, so every answer is a valid label by construction and a conversation costs one
pass instead of one generation per utterance.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from utils.io import append_jsonl, read_jsonl

from utils.lm.batch import pad_right

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|end_of_turn|>", "<end_of_turn>")


def model_device(model):
    """The device of the model's first parameter (where inputs must go)."""
    return next(model.parameters()).device


def pad_id_of(model, tokenizer=None) -> int:
    """A pad id: the tokenizer's, else the model config's, else eos, else 0 (masked out anyway)."""
    for candidate in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(model.config, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(candidate, int):
            return candidate
    return 0


def _batches(order: Sequence[int], batch_size: int) -> Iterable[list[int]]:
    """Consecutive chunks of ``order``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(order), batch_size):
        yield list(order[start : start + batch_size])


def length_batches(lengths: Sequence[int], batch_size: int, min_fill: float = 0.8) -> list[list[int]]:
    """Indices longest first, cut into batches of at most ``batch_size`` whose sequences are all at
    least ``min_fill`` of the batch's longest: padding stays under 1 - min_fill of a batch (a
    conversation set of mixed lengths padded 40% in fixed batches of 8)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] >= min_fill * lengths[batches[-1][0]]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _pad_right(seqs: list[list[int]], pad: int, device):
    """Right-padded ids and attention mask on ``device``."""
    batch = pad_right(seqs, pad)
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def _normalise_positions(seq: Sequence[int], positions: Sequence[int]) -> list[int]:
    """Accept negative positions (from the end); reject out-of-range ones with a clear message."""
    out = []
    for p in positions:
        q = p + len(seq) if p < 0 else p
        if not 0 <= q < len(seq):
            raise IndexError(f"position {p} is outside a sequence of {len(seq)} tokens")
        out.append(q)
    return out


_SCALED_HEADS = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # heads that are not a plain matmul


def _backbone_and_head(model):
    """(the transformer body, the LM head) of a causal LM, PEFT-wrapped or not; None where the
    logits are more than ``head(last hidden state)`` (soft-capped or scaled heads)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(lm, getattr(lm, "base_model_prefix", "") or "", None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    config = getattr(lm, "config", None)
    if body is None or head is None or any(getattr(config, k, None) not in (None, 1, 1.0) for k in _SCALED_HEADS):
        return None
    return body, head


def _logits_at_rows(model, ids, mask, rows, cols):
    """Logits at (rows[k], cols[k]) only: the body runs once, the LM head on just those hidden states
    (a batch's rows read different positions, so this is B times less head work than a shared
    ``logits_to_keep``)."""
    parts = _backbone_and_head(model)
    if parts is None:  # an unusual head: through the model's own forward
        return logits_at_rows_via_forward(model, ids, mask, rows, cols)
    body, head = parts
    hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return head(hidden[rows, cols])


def logits_at_rows_via_forward(model, ids, mask, rows, cols):
    """Logits at (rows[k], cols[k]) through the model's own forward (any wrapper: PEFT, DDP, FSDP),
    the LM head run at the union of the positions the batch reads."""
    union = torch.unique(cols)  # sorted
    return logits_at(model, ids, mask, union)[rows, torch.searchsorted(union, cols)]


def logits_at(model, ids, mask, keep):
    """Logits at sequence indices ``keep`` only (all rows), skipping the rest of the LM head."""
    try:
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    except TypeError:  # an architecture without logits_to_keep: compute all and slice
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, keep]


def label_logprobs(
    model,
    sequences: list[list[int]],
    positions: list[list[int]],
    candidate_ids: list[int],
    batch_size: int = 8,
    progress: bool = False,
    min_fill: float = 0.8,
) -> list[np.ndarray]:
    """Per sequence, [len(positions), len(candidates)] full-vocabulary log-probs read at each position.

    The logits at position p predict token p + 1, so a label word that would follow token p is read at p.
    Batches hold sequences of at least ``min_fill`` of their longest (``length_batches``).
    """
    if len(sequences) != len(positions):
        raise ValueError(f"{len(sequences)} sequences but {len(positions)} position lists")
    model.eval()
    device = model_device(model)
    pad = pad_id_of(model)
    cand = torch.tensor(candidate_ids, dtype=torch.long, device=device)
    results: list[np.ndarray] = [np.zeros((0, len(candidate_ids)), dtype=np.float32)] * len(sequences)
    wanted = [_normalise_positions(s, p) for s, p in zip(sequences, positions)]
    todo = [i for i in range(len(sequences)) if wanted[i]]
    # similar lengths share a batch: little padding, which on a CPU is pure waste
    batches = [[todo[k] for k in b] for b in length_batches([len(sequences[i]) for i in todo], batch_size, min_fill)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="label scoring", disable=not progress):
            ids, mask = _pad_right([sequences[i] for i in batch], pad, device)
            rows = torch.tensor([r for r, i in enumerate(batch) for _ in wanted[i]], device=device)
            cols = torch.tensor([p for i in batch for p in wanted[i]], device=device)
            logp = torch.log_softmax(_logits_at_rows(model, ids, mask, rows, cols).float(), dim=-1)  # whole vocabulary
            picked, start = logp[:, cand].cpu().numpy(), 0
            for i in batch:
                results[i] = picked[start:start + len(wanted[i])]
                start += len(wanted[i])
    return results


def _cache_name(model) -> str:
    """The keyword (and output field) of the KV cache: ``cache`` since transformers 5.2x, which removes
    ``past_key_values`` in 5.40; older 5.x releases know only ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _option_scores_single(model, prompt: list[int], options: list[list[int]], batch_size: int):
    """Summed log-probs of each option after one prompt: the prompt runs once, its cache is reused."""
    device = model_device(model)
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
    cache_name = _cache_name(model)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    scores = np.zeros(len(options), dtype=np.float64)
    for chunk in _batches(range(len(options)), batch_size):
        opts = [options[j] for j in chunk]
        total = first[torch.tensor([o[0] for o in opts], device=device)].double()
        width = max(len(o) for o in opts)
        if width > 1:
            cache = copy.deepcopy(getattr(out, cache_name))
            cache.batch_repeat_interleave(len(opts))
            ids, mask = _pad_right([o[:-1] if len(o) > 1 else o[:1] for o in opts], pad_id_of(model), device)
            mask[:, 0] = 1  # single-token options feed one dummy token whose score is masked below
            full_mask = torch.cat([torch.ones(len(opts), len(prompt), dtype=torch.long, device=device), mask], 1)
            logits = model(input_ids=ids, attention_mask=full_mask, use_cache=True, **{cache_name: cache}).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, opt in enumerate(opts):
                rest = torch.tensor(opt[1:], dtype=torch.long, device=device)
                steps = torch.arange(len(opt) - 1, device=device)
                total[row] += logp[row, steps, rest].double().sum()
        scores[list(chunk)] = total.cpu().numpy()
    return scores


def score_options(
    model,
    prompt_ids: list[list[int]],
    options: list[list[int]],
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """[n_prompts, n_options]: summed log-prob of each option's full token sequence after each prompt."""
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")
    if all(len(o) == 1 for o in options):  # one token each: the batched single-pass path is exact
        rows = label_logprobs(model, prompt_ids, [[-1]] * len(prompt_ids), [o[0] for o in options], batch_size)
        return np.stack([r[0] for r in rows]).astype(np.float64) if rows else np.zeros((0, len(options)))
    model.eval()
    out = np.zeros((len(prompt_ids), len(options)), dtype=np.float64)
    with torch.inference_mode():
        for i, prompt in enumerate(tqdm(prompt_ids, desc="option scoring", disable=not progress)):
            out[i] = _option_scores_single(model, prompt, options, batch_size)
    return out


def stop_token_ids(model, tokenizer) -> list[int]:
    """eos plus the chat template's end-of-turn tokens: generation stops at any of them."""
    ids = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        ids.extend(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(set(ids))


def generate(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    progress: bool = False,
    min_fill: float = 0.8,
    **generate_kwargs: Any,
) -> list[str]:
    """Batched (left-padded) generation; returns only the new text of each prompt, cut at the first stop token.
    Batches hold prompts of at least ``min_fill`` of their longest (``length_batches``)."""
    model.eval()
    device = model_device(model)
    pad = pad_id_of(model, tokenizer)
    stops = stop_token_ids(model, tokenizer)
    texts: list[str] = [""] * len(prompt_ids)
    batches = length_batches([len(p) for p in prompt_ids], batch_size, min_fill)
    with torch.inference_mode():
        for batch in tqdm(batches, desc="generating", disable=not progress):
            width = max(len(prompt_ids[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
                seq = prompt_ids[i]
                ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                mask[row, width - len(seq) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                eos_token_id=stops,
                pad_token_id=pad,
                **generate_kwargs,
            )
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in stops), len(new))
                texts[i] = tokenizer.decode(new[:cut], skip_special_tokens=True)
    return texts


def _key_fn(key: str | Callable[[Any], Any]) -> Callable[[Any], str]:
    """A callable key, or the name of a dict field."""
    return (lambda item: str(key(item))) if callable(key) else (lambda item: str(item[key]))


def _drop_torn_tail(path: str | os.PathLike) -> None:
    """Cut a partial last line left by a kill, so the next append starts on a fresh line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _resumed(checkpoint_path: str | os.PathLike, identity: Any) -> dict[str, Any]:
    """The results a checkpoint holds for this run (key -> result). A checkpoint written by another run
    (its first line names the run), or one that cannot be read, is removed with a line saying why:
    this run starts over rather than mixing another's results into its output."""
    path = Path(checkpoint_path)
    if not path.exists():
        return {}
    _drop_torn_tail(path)
    problem, done = None, {}
    try:
        records = read_jsonl(path)
    except (UnicodeDecodeError, OSError) as e:
        records, problem = [], f"unreadable ({e})"
    if records and records[0] != {"identity": identity}:
        problem = "written by another run (other model, adapter or settings)"
    for record in records[1:]:
        if problem:
            break
        if not (isinstance(record, dict) and isinstance(record.get("keys"), list)
                and isinstance(record.get("results"), list) and len(record["keys"]) == len(record["results"])):
            problem = f"a line without matching 'keys' and 'results' lists: {str(record)[:80]}"
        else:
            done.update(zip(record["keys"], record["results"]))
    if problem or not records:
        if problem:
            print(f"[emocause] {path}: {problem}; starting over", flush=True)
        path.unlink()
        return {}
    return done


def resumable_map(
    items: Sequence[Any],
    key: str | Callable[[Any], Any],
    fn: Callable[[list[Any]], list[Any]],
    checkpoint_path: str | os.PathLike,
    batch_size: int = 16,
    desc: str = "",
    identity: Any = None,
) -> list[Any]:
    """``fn`` over ``items`` in batches, each batch appended to a JSONL checkpoint; a rerun skips done keys.

    ``identity`` (JSON) names what produces the results (model, adapter, settings); the checkpoint's first
    line records it and only a rerun with the same identity resumes. Results come back in input order and
    pass through JSON either way, so a resumed run returns exactly what an uninterrupted one does.
    """
    keys = [_key_fn(key)(item) for item in items]
    duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
    if duplicates:
        raise ValueError(f"resumable_map needs unique keys; repeated: {duplicates[:5]}")
    identity = json.loads(json.dumps(identity))
    done = _resumed(checkpoint_path, identity)
    if not Path(checkpoint_path).exists():
        append_jsonl(checkpoint_path, {"identity": identity})
    todo = [i for i, k in enumerate(keys) if k not in done]
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=desc or "items") as bar:
        for batch in _batches(todo, batch_size):
            results = fn([items[i] for i in batch])
            if len(results) != len(batch):
                raise ValueError(f"fn returned {len(results)} results for a batch of {len(batch)}")
            record = json.loads(json.dumps({"keys": [keys[i] for i in batch], "results": list(results)}))
            append_jsonl(checkpoint_path, record)
            done.update(zip(record["keys"], record["results"]))
            bar.update(len(batch))
    return [done[k] for k in keys]
