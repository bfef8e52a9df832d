"""Response-generation metrics: BLEU (sacrebleu), ROUGE (rouge-score), perplexity, distinct-n.

Everything runs offline: sacrebleu and rouge-score compute locally, nothing is fetched from a
hub. ROUGE uses a Unicode tokenizer because rouge-score's default one deletes every character
outside [a-z0-9], which scores any Bangla, Hindi or Chinese response as empty.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import regex
import torch
import torch.nn.functional as F
from nltk.stem import porter  # rouge-score depends on nltk; its stemmer needs no download
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from utils.lm.batch import IGNORE, pad_right

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# One token per CJK character (those scripts do not separate words by spaces), otherwise runs
# of letters, digits and combining marks (a Bangla vowel sign is a mark, not a letter).
_TOKEN = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]|(?:(?![\p{Han}\p{Hiragana}\p{Katakana}])[\p{L}\p{N}\p{M}])+")


class UnicodeTokenizer:
    """rouge-score tokenizer: lowercase Unicode words; Porter stemming for ASCII words > 3 chars."""

    def __init__(self, use_stemmer: bool = True):
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(text.lower())
        if self._stemmer is None:
            return tokens
        # rouge-score stems only words longer than 3 characters; the stemmer is English-only
        return [self._stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: pass one each")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) with one reference per hypothesis; sacrebleu's standard settings."""
    _check(hypotheses, references)
    return float(BLEU(tokenize=tokenize).corpus_score(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0-1) over the pairs."""
    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer(use_stemmer))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references):
        scores = scorer.score(ref, hyp)  # rouge-score takes (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: total / len(hypotheses) for name, total in totals.items()}


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Share of distinct n-grams among all n-grams of the texts (a diversity measure)."""
    grams = [tuple(tokens[i:i + n]) for text in texts
             for tokens in [_TOKEN.findall(text.lower())] for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generation_scores(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> dict[str, float]:
    """BLEU, ROUGE-1/2/L, distinct-1/2 and mean length in words, in one dict."""
    scores = {"bleu": bleu(hypotheses, references, tokenize), **rouge(hypotheses, references)}
    scores["distinct_1"] = distinct_n(hypotheses, 1)
    scores["distinct_2"] = distinct_n(hypotheses, 2)
    scores["mean_words"] = sum(len(_TOKEN.findall(h)) for h in hypotheses) / len(hypotheses)
    return scores


def _batches(examples: Sequence[dict], batch_size: int) -> Iterable[Sequence[dict]]:
    # longest first: padding stays small and an out-of-memory error shows up on the first batch
    ordered = sorted(examples, key=lambda e: -len(e["input_ids"]))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start:start + batch_size]


def response_nll(model: Any, examples: Sequence[dict], batch_size: int = 8) -> tuple[float, int]:
    """Summed negative log-likelihood and token count over the label tokens (labels != IGNORE).

    ``examples`` hold ``input_ids`` and ``labels`` as from ``train_data.tokenize_prompt_completion``,
    so only the reference response is scored, never the prompt.
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in _batches(examples, batch_size):
            padded = pad_right([e["input_ids"] for e in batch], 0, [e["labels"] for e in batch])
            logits = model(input_ids=padded["input_ids"].to(device),
                           attention_mask=padded["attention_mask"].to(device)).logits.float()
            # token t is predicted from position t-1: the same shift the model's own loss applies
            targets = padded["labels"][:, 1:].to(device)
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE, reduction="sum")
            total += float(nll)
            count += int((targets != IGNORE).sum())
    model.train(was_training)
    return total, count


def perplexity(model: Any, examples: Sequence[dict], batch_size: int = 8) -> float:
    """exp(mean token loss) over all reference-response tokens."""
    total, count = response_nll(model, examples, batch_size)
    if count == 0:
        raise ValueError("no label tokens to score: every label is -100 (responses truncated away?)")
    return math.exp(total / count)
