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


def token_coefficients(targets: torch.Tensor, loss_mask: torch.Tensor | None, norm: str,
                       ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token weight c (B, T) with loss sums = sum(c * loss_t), count) for `norm`, as `lm_loss` defines them."""
    weight = (targets != ignore_index).float()
    if loss_mask is not None:
        weight = weight * loss_mask.to(weight.dtype)
    if norm == "sequence":
        per_seq = weight.sum(dim=1, keepdim=True)
        return weight / per_seq.clamp_min(1e-12), (per_seq > 0).sum().float()
    return weight, weight.sum()


def chunked_lm_loss(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor, *,
                    chunk_rows: int = 4096, label_smoothing: float = 0.0, z_loss: float = 0.0,
                    loss_mask: torch.Tensor | None = None, norm: str = "token",
                    ignore_index: int = IGNORE_INDEX) -> LossSums:
    """`lm_loss(hidden @ head_weight.T, ...)` without ever holding the (B*T, V) logits.

    hidden (B, T, C) (the final norm's output), head_weight (V, C). The LM head and the loss run over
    `chunk_rows` rows at a time, and the gradients of hidden and head_weight are computed in the same
    pass (as Liger's fused linear cross-entropy does), so the head costs no recompute and peak memory
    holds one chunk of fp32 logits instead of all of them. Under autocast the head matmuls run in the
    autocast dtype and the softmax in fp32, like the unfused path.
    """
    B, T, C = hidden.shape
    coef, count = token_coefficients(targets, loss_mask, norm, ignore_index)
    if not torch.is_grad_enabled():  # evaluation: no gradient buffers
        hidden, head_weight = hidden.detach(), head_weight.detach()
    total, ce = _FusedHeadLoss.apply(hidden.reshape(B * T, C), head_weight, targets.reshape(-1).to(hidden.device),
                                     coef.reshape(-1).to(hidden.device), max(1, chunk_rows), label_smoothing,
                                     z_loss, ignore_index)
    return LossSums(total, ce, count.to(hidden.device))


def _head_dtype(weight: torch.Tensor) -> torch.dtype:
    dev = weight.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype


class _FusedHeadLoss(torch.autograd.Function):
    """(total, ce) sums over row chunks; gradients of `total` computed in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, h, w, tgt, coef, chunk, eps, zl, ignore_index):  # noqa: PLR0913 (autograd signature)
        dtype = _head_dtype(w)
        grad_on = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        hc, wc = h.to(dtype), w.to(dtype)
        V = w.size(0)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        ce_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        for s in range(0, h.size(0), chunk):
            z = (hc[s:s + chunk] @ wc.T).float()  # (n, V): the only logits alive at a time
            y, c = tgt[s:s + chunk], coef[s:s + chunk]
            y_safe = torch.where(y == ignore_index, torch.zeros_like(y), y)
            lse = torch.logsumexp(z, dim=-1)
            ce = lse - (1.0 - eps) * z.gather(1, y_safe[:, None]).squeeze(1)
            if eps > 0.0:
                ce = ce - eps * z.mean(dim=-1)
            ce = torch.where(y == ignore_index, torch.zeros_like(ce), ce)
            total = total + (c * (ce + zl * lse.square())).sum() if zl > 0.0 else total + (c * ce).sum()
            ce_sum = ce_sum + (c * ce).sum()
            if not grad_on:
                continue
            g = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g.mul_((c * (1.0 + 2.0 * zl * lse))[:, None])
            g.scatter_add_(1, y_safe[:, None], (-(1.0 - eps) * c)[:, None])
            if eps > 0.0:
                g.sub_((c * eps / V)[:, None])
            g = g.to(dtype)
            if grad_h is not None:
                grad_h[s:s + chunk] = g @ wc
            if grad_w is not None and dtype == torch.float32:
                grad_w.addmm_(g.T, hc[s:s + chunk])
            elif grad_w is not None:  # low-precision matmul, fp32 accumulation over the chunks
                grad_w.add_((g.T @ hc[s:s + chunk]).float())
        ctx.mark_non_differentiable(ce_sum)
        ctx.save_for_backward(grad_h if grad_h is not None else torch.empty(0),
                              grad_w if grad_w is not None else torch.empty(0))
        ctx.has = (grad_h is not None, grad_w is not None)
        ctx.w_dtype = w.dtype
        return total, ce_sum

    @staticmethod
    def backward(ctx, grad_total, grad_ce):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_total.to(grad_h.dtype) if ctx.has[0] else None
        gw = (grad_w * grad_total).to(ctx.w_dtype) if ctx.has[1] else None
        return gh, gw, None, None, None, None, None, None
