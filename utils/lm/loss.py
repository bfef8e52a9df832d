"""The answers-only loss: a softmax over the answer words (the seven labels, or yes/no) at the labelled positions,
weighted by how often each answer occurs if asked, and the SFTTrainer subclass that trains with it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from utils.lm.batch import ANSWER_WEIGHTINGS, IGNORE
from utils.lm.inference import logits_at_rows_via_forward


def answer_weights(examples: Sequence[dict], answer_ids: Sequence[int], weighting: str,
                   scales: Sequence[float] = ()) -> tuple[float, ...] | None:
    """One loss weight per answer id from how often each is a training answer (``TrainConfig.answer_weighting``),
    times its factor in ``scales`` (``TrainConfig.answer_scales``); None for "none" without factors. An answer
    that never occurs gets the largest weight of those that do."""
    if weighting == "none" and not scales:
        return None
    if weighting not in ANSWER_WEIGHTINGS:
        raise ValueError(f"answer_weighting={weighting!r}: use one of {list(ANSWER_WEIGHTINGS)}")
    index = {int(t): k for k, t in enumerate(answer_ids)}
    counts = np.zeros(len(index))
    for ex in examples:
        for t in ex["labels"]:
            if t in index:
                counts[index[t]] += 1
    if not counts.any():
        raise ValueError("no training answer is among answer_ids: nothing to weight")
    share = counts / counts.sum()
    seen = share > 0
    raw = np.zeros(len(index))
    raw[seen] = share[seen] ** {"none": 0.0, "sqrt": -0.5, "inverse": -1.0}[weighting]
    raw[~seen] = raw[seen].max()
    raw = raw * (np.asarray(scales, dtype=float) if len(scales) else 1.0)
    if not (share * raw).sum() > 0:
        raise ValueError(f"answer_scales {list(scales)} leave every training answer at weight 0: nothing to learn")
    return tuple(float(w) for w in raw / float((share * raw).sum()))  # sum over answers of share * weight = 1


def answer_loss(model, inputs: dict, answer_ids: Sequence[int], num_items_in_batch=None,
                weights: Sequence[float] | None = None):
    """(summed-or-mean loss, logits) of the answers only: a softmax over ``answer_ids`` at each position
    whose next label is not -100; the model's LM head runs at those positions only (``logits_to_keep``).
    ``weights`` (one per answer id, ``answer_weights``) scale each answer's loss by its gold answer.

    Labels follow the HF convention (``labels[t + 1]`` is read at ``t``). A label outside
    ``answer_ids`` is an error, not a silent skip."""
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    target = labels[:, 1:]
    rows, cols = (target != IGNORE).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("a training batch has no labelled position: every example needs an answer")
    # the model's own forward, so DDP/FSDP wrappers see the call and synchronise gradients
    logits = logits_at_rows_via_forward(model, inputs["input_ids"], inputs.get("attention_mask"), rows, cols)
    answers = torch.as_tensor(list(answer_ids), device=labels.device)
    picked = logits[:, answers].float()  # [n answers, k]
    gold = target[rows, cols]
    match = gold.unsqueeze(1) == answers.unsqueeze(0)
    if not bool(match.any(dim=1).all()):
        bad = sorted({int(t) for t in gold[~match.any(dim=1)].tolist()})
        raise ValueError(f"labels {bad} are not among answer_ids {list(answer_ids)}")
    weight = None if weights is None else torch.as_tensor(list(weights), dtype=picked.dtype, device=picked.device)
    total = F.cross_entropy(picked, match.float().argmax(dim=1), weight=weight, reduction="sum")
    loss = total / (num_items_in_batch if num_items_in_batch is not None else rows.numel())
    return loss, picked


def trainer_class(answer_ids: Sequence[int] = (), weights: Sequence[float] | None = None):
    """SFTTrainer that counts the samples it trains on (for samples/s) and, given ``answer_ids``,
    computes the answers-only loss of ``answer_loss`` (weighted by ``weights``)."""
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        session_samples = 0

        def training_step(self, model, inputs, *args, **kwargs):
            self.session_samples += int(inputs["input_ids"].shape[0]) * self.args.world_size
            return super().training_step(model, inputs, *args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not answer_ids:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, logits = answer_loss(model, inputs, answer_ids, num_items_in_batch, weights)
            # normalised by the answers of the whole accumulated (and, under DDP, global) batch, as
            # Trainer counts them; DDP averages gradients over processes, so scale back up like Trainer
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, {"logits": logits}) if return_outputs else loss

    return CountingSFTTrainer
