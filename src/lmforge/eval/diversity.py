"""Diversity and quality figures for a set of generated samples.

Texts are split into words on whitespace. Definitions:

* distinct-n (Li et al., 2016), pooled: distinct n-grams over all samples / all n-grams over all
  samples (one ratio for the set, not a mean of per-sample ratios).
* self-BLEU-4 (Zhu et al., 2018, Texygen): each sample is scored with BLEU-4 (uniform weights,
  NLTK's smoothing method 1) against all the other samples as references; the mean over samples.
  High = samples resemble each other. Uses `nltk` (optional extra); None when it is missing.
* rep-4 (Welleck et al., 2019, seq-rep-n): within one sample, 1 - unique 4-grams / 4-grams; the
  mean over samples with at least one 4-gram. High = the model loops.
* mean length in words (and tokens when given).
* fluency proxy: perplexity of each sample under a reference model (see `fluency_perplexities`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Pooled distinct-n; None when the samples hold no n-gram."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else None


def rep_n(texts: Sequence[str], n: int = 4) -> float | None:
    """Mean within-sample repeated n-gram rate (seq-rep-n)."""
    rates = []
    for t in texts:
        grams = ngrams(t.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else None


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float | None:
    """Mean BLEU-`max_n` of each sample against the others; None without nltk or < 2 samples."""
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    except ImportError:
        return None
    toks = [t.split() for t in texts]
    toks_nonempty = [i for i, t in enumerate(toks) if t]
    if len(toks_nonempty) < 2:
        return None
    smooth = SmoothingFunction().method1
    weights = tuple(1.0 / max_n for _ in range(max_n))
    scores = []
    for i in toks_nonempty:
        refs = [toks[j] for j in toks_nonempty if j != i]
        scores.append(sentence_bleu(refs, toks[i], weights=weights, smoothing_function=smooth))
    return sum(scores) / len(scores)


def fluency_perplexities(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16) -> list[float | None]:
    """Perplexity of each text as one document under `model` (None for an empty text)."""
    from lmforge.eval.scoring import evaluate_texts

    keep = [i for i, t in enumerate(texts) if t.strip()]
    out: list[float | None] = [None] * len(texts)
    if not keep:
        return out
    _, scores = evaluate_texts(model, tokenizer, [texts[i] for i in keep], batch_size=batch_size)
    for i, nll, n in zip(keep, scores.nll, scores.tokens):
        out[i] = math.exp(nll / n) if n and nll / n < 700 else float("inf")
    return out


def diversity_metrics(texts: Sequence[str], token_counts: Sequence[int] | None = None,
                      fluency: Sequence[float | None] | None = None) -> dict[str, Any]:
    """All set-level figures for the report (and for a sampling callback during training)."""
    words = [len(t.split()) for t in texts]
    out: dict[str, Any] = {"samples": len(texts)}
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_n(texts, n)
    out["self_bleu_4"] = self_bleu(texts)
    out["rep_4"] = rep_n(texts, 4)
    out["mean_words"] = sum(words) / len(words) if words else None
    if token_counts:
        out["mean_tokens"] = sum(token_counts) / len(token_counts)
    flu = [f for f in (fluency or []) if f is not None and math.isfinite(f)]
    if flu:
        out["fluency_ppl_median"] = statistics.median(flu)
        out["fluency_ppl_mean"] = sum(flu) / len(flu)
    return out
