"""Logits filters with the semantics and order of Hugging Face `generate`.

Order (as `transformers.GenerationMixin._get_logits_processor` builds it):

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> sample (or argmax when greedy)

Each filter sets removed logits to -inf and always keeps at least one token. With temperature 0
(greedy) only the repetition penalty applies, then argmax, as in HF with `do_sample=False`.
"""

from __future__ import annotations

import torch

from lmforge.errors import LmforgeError


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty (HF `RepetitionPenaltyLogitsProcessor`): for every token id in `seen`
    (the prompt and the generated tokens), a positive logit is divided by `penalty`, a negative one
    multiplied. logits: (B, V); seen: (B, V) bool."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (and any tied with the k-th), as HF `TopKLogitsWarper`; 0 = off."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (HF `TopPLogitsWarper`): drop the least likely tokens whose cumulative
    probability, counted from the bottom, is <= 1 - p; the most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below `min_p` times the top token's (HF `MinPLogitsWarper`);
    probabilities are those left after the earlier filters. 0 = off."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: torch.Tensor, seen: torch.Tensor | None = None, *, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                  repetition_penalty: float = 1.0) -> torch.Tensor:
    """All filters in HF order on float32 logits (B, V). With temperature 0 the warpers are skipped
    (greedy decoding takes the argmax of the penalised logits)."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    if temperature == 0.0:
        return logits
    if temperature != 1.0:
        logits = logits / temperature
    logits = apply_top_k(logits, top_k)
    logits = apply_top_p(logits, top_p)
    return apply_min_p(logits, min_p)


def check_sampling_args(*, temperature: float, top_k: int, top_p: float, min_p: float,
                        repetition_penalty: float) -> None:
    """Raise LmforgeError naming the argument when a sampling setting is out of range."""
    if temperature < 0:
        raise LmforgeError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise LmforgeError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise LmforgeError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if not 0.0 <= min_p <= 1.0:
        raise LmforgeError(f"min_p must be in [0, 1] (0 = off), got {min_p}")
    if repetition_penalty <= 0:
        raise LmforgeError(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty}")
