"""Token batches: the label id the loss skips, and right padding (positions keep their index)."""

from __future__ import annotations

from typing import Sequence

IGNORE = -100  # the label id Hugging Face losses (and ours) skip: prompt, padding, unscored tokens
ANSWER_WEIGHTINGS = ("none", "sqrt", "inverse")  # the answers-only loss's per-answer weights (training.answer_weights)


def pad_right(seqs: Sequence[Sequence[int]], pad: int, labels: Sequence[Sequence[int]] | None = None) -> dict:
    """Right-padded ``input_ids`` and ``attention_mask`` (and ``labels``, padded with IGNORE, when given)."""
    import torch  # deferred: prompts and configs import IGNORE from here and stay torch-free

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for row, lab in enumerate(labels):
            out["labels"][row, : len(lab)] = torch.as_tensor(lab, dtype=torch.long)
    return out
