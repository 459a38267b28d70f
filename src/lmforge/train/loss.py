"""Language-model loss: cross-entropy summed over target tokens, normalised by the caller.

Returning sums (not means) lets gradient accumulation and data parallelism divide by the number of
target tokens of the whole optimiser step, so k micro-batches give exactly the gradient of one
batch k times larger, however the padding is spread ("mean of means" would not).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lmforge.tokens.batch import IGNORE_INDEX


class LossSums(NamedTuple):
    total: torch.Tensor
    """Sum of the objective (cross-entropy + z-loss), fp32 scalar; divide by `count` of the step."""
    ce: torch.Tensor
    """Sum of the plain cross-entropy (what is logged and compared with validation)."""
    count: torch.Tensor
    """Normaliser contribution: target tokens (token norm) or sequences with a target (sequence norm)."""


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0, z_loss: float = 0.0,
            loss_mask: torch.Tensor | None = None, norm: str = "token",
            ignore_index: int = IGNORE_INDEX) -> LossSums:
    """logits (B, T, V), targets (B, T) with `ignore_index` where no loss is taken.

    loss_mask (B, T), bool or float: a per-token weight on top of `ignore_index` (0 = no loss).
    norm `token`: sums over tokens, count = number of weighted target tokens.
    norm `sequence`: each sequence's mean loss, summed; count = sequences with any target.
    """
    B, T, V = logits.shape
    flat = logits.reshape(B * T, V).float()
    ce = F.cross_entropy(flat, targets.reshape(-1), ignore_index=ignore_index, label_smoothing=label_smoothing,
                         reduction="none").view(B, T)  # 0 where ignored
    weight = (targets != ignore_index).float()
    if loss_mask is not None:
        weight = weight * loss_mask.to(weight.dtype)
    ce = ce * weight
    total = ce
    if z_loss > 0.0:
        lse = torch.logsumexp(flat, dim=-1).view(B, T)
        total = ce + z_loss * lse.square() * weight
    if norm == "sequence":
        per_seq = weight.sum(dim=1)
        has = per_seq > 0
        denom = per_seq.clamp_min(1e-12)
        return LossSums((total.sum(dim=1) / denom)[has].sum(), (ce.sum(dim=1) / denom)[has].sum(),
                        has.sum().float())
    return LossSums(total.sum(), ce.sum(), weight.sum())


def loss_denominator(targets: torch.Tensor, loss_mask: torch.Tensor | None = None, norm: str = "token",
                     ignore_index: int = IGNORE_INDEX) -> float:
    """The `count` that `lm_loss` will return for these targets, computed up front (on the host when
    the targets are) so that every micro-batch can be divided by the whole step's count."""
    weight = (targets != ignore_index).float()
    if loss_mask is not None:
        weight = weight * loss_mask.to(weight.dtype)
    if norm == "sequence":
        return float((weight.sum(dim=1) > 0).sum())
    return float(weight.sum())
