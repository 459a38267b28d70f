"""One optimiser step: forward/backward over micro-batches, gradient clipping, the update.

The loss of every micro-batch is divided by the target-token count of the whole step (all
micro-batches, all ranks), so accumulation and data parallelism are exact. The only host sync is
one `.tolist()` of (loss, grad-norm) at the end, which both the NaN check and the logs use.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from lmforge.train.distributed import all_reduce_sum
from lmforge.train.loss import chunked_lm_loss, lm_loss, loss_denominator


@dataclass(kw_only=True)
class StepSettings:
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    loss_norm: str = "token"
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    scaler: Any = None
    """torch.amp.GradScaler for fp16, else None."""
    world_size: int = 1
    loss_chunk_rows: int = 4096
    """Rows per chunk of the fused LM-head + loss (`chunked_lm_loss`); 0 = full logits (`lm_loss`)."""


@dataclass
class StepResult:
    loss: float
    """Cross-entropy per target token (or per sequence) of the whole step, all ranks."""
    grad_norm: float
    """Global gradient norm before clipping (nan/inf when not finite)."""
    count: float
    """Target tokens (or sequences) of the step, all ranks."""
    applied: bool
    """False when the update was skipped (non-finite loss or gradient, fp16 overflow, or vetoed)."""
    bad: bool
    """Non-finite loss, or non-finite gradient without a GradScaler: a fault for the NaN policy."""


def _forward_loss(model: nn.Module, batch: Any, s: StepSettings):
    device = next(model.parameters()).device
    idx = batch.input_ids.to(device, non_blocking=True)
    tgt = batch.targets.to(device, non_blocking=True)
    doc = batch.doc_ids.to(device, non_blocking=True) if getattr(batch, "doc_ids", None) is not None else None
    mask = getattr(batch, "loss_mask", None)
    mask = mask.to(device) if mask is not None else None
    kw = dict(label_smoothing=s.label_smoothing, z_loss=s.z_loss, norm=s.loss_norm, loss_mask=mask)
    with s.autocast():
        if s.loss_chunk_rows > 0:  # the head runs inside the model's forward, chunk by chunk: no (B, T, V)
            return model(idx, doc_ids=doc, head=functools.partial(chunked_lm_loss, targets=tgt,
                                                                  chunk_rows=s.loss_chunk_rows, **kw))
        logits = model(idx, doc_ids=doc)  # (B, T, V)
    return lm_loss(logits, tgt, **kw)


def step_denominator(micro_batches: Sequence[Any], s: StepSettings) -> float:
    count = sum(loss_denominator(b.targets, getattr(b, "loss_mask", None), s.loss_norm) for b in micro_batches)
    if s.world_size > 1:
        count = float(all_reduce_sum(torch.tensor([count], dtype=torch.float64)).item())
    return count


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Sequence[Any],
               s: StepSettings, *, apply_update: Callable[[float, float], bool] | None = None,
               on_grads: Callable[[], None] | None = None) -> StepResult:
    """Accumulate gradients over `micro_batches`, clip, and update unless the step is not finite.

    `model` may be wrapped in DDP: gradient all-reduce is deferred to the last micro-batch (no_sync).
    `apply_update(loss, grad_norm)` may veto the update (e.g. an injected fault); default: finite.
    `on_grads()` runs once the gradients are complete (reduced and unscaled, not yet clipped) and the
    weights not yet updated: the moment for per-layer gradient statistics.
    """
    denom = step_denominator(micro_batches, s)
    scale = s.world_size / max(denom, 1e-12)  # DDP averages gradients over ranks; undo that
    ce_sum = torch.zeros((), device=next(model.parameters()).device)
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            sums = _forward_loss(model, mb, s)
            loss = sums.total * scale
            (s.scaler.scale(loss) if s.scaler is not None else loss).backward()
        ce_sum = ce_sum + sums.ce.detach()
    if s.scaler is not None:
        s.scaler.unscale_(optimizer)
    if on_grads is not None:
        on_grads()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip if s.grad_clip > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
        norm = norm.full_tensor()
    if s.world_size > 1:
        ce_sum = all_reduce_sum(ce_sum)
    loss_v, norm_v = torch.stack([ce_sum.float(), norm.float().to(ce_sum.device)]).tolist()
    # fp16: overflowing gradients are the scaler's business (it skips and lowers the scale), not a fault
    bad = not math.isfinite(loss_v) or (s.scaler is None and not math.isfinite(norm_v))
    result = StepResult(loss=loss_v / max(denom, 1e-12), grad_norm=norm_v, count=denom, applied=False, bad=bad)
    ok = not bad if apply_update is None else apply_update(result.loss, result.grad_norm)
    if ok and s.scaler is not None:
        s.scaler.step(optimizer)  # skips by itself when the fp16 gradients overflowed
        result.applied = math.isfinite(norm_v)
    elif ok:
        optimizer.step()
        result.applied = True
    if s.scaler is not None:
        s.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return result
