"""Per-layer training diagnostics: gradient norms and update-to-weight ratios by layer.

The trainer logs them every `monitor.layer_stats_every` steps as a `layers` event in metrics.jsonl
(keys `grad_norm/blocks.3`, `update_ratio/blocks.3`, ...), in TensorBoard under `layers/`, and the
dashboard draws them as a layers × steps heat map:

    grads = layer_grad_norms(model)            # after backward (and unscaling), before the step
    tracker = UpdateTracker(model)
    tracker.before()                           # just before optimizer.step()
    optimizer.step()
    ratios = tracker.after()                   # update_ratio/blocks.0, ..., update_ratio

Parameters are grouped by the first `depth` parts of their name (`blocks.3.attn.q.weight` ->
`blocks.3` for depth 2), so a 12-layer model yields a dozen keys, not hundreds. A healthy
update-to-weight ratio is around 1e-3 per step (Karpathy's rule of thumb); far above means the
learning rate is too high for that layer, far below that it is barely learning.

Sharded parameters (FSDP2 DTensors) are summed over their local shard; pass `reduce` (a sum over
ranks, called on every rank) to get the norms of the whole tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Reduce = Callable[[Any], Any]


def _group(name: str, depth: int) -> str:
    """`blocks.3.attn.q.weight` -> `blocks.3` (depth 2); `tok_emb.weight` -> `tok_emb`."""
    # wrappers add prefixes (torch.compile: _orig_mod., DDP: module.) that would split the groups
    parts = [p for p in name.split(".") if p not in ("_orig_mod", "module")]
    if len(parts) > depth:
        return ".".join(parts[:depth])
    return ".".join(parts[:-1]) or parts[0]


def _local(t: Any) -> Any:
    return t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard on this rank


def _sum_by_group(items: list[tuple[str, Any]], reduce: Reduce | None) -> tuple[list[str], list[float]]:
    """Sum scalar tensors by group name; one device transfer (and one collective) for all groups."""
    import torch

    sums: dict[str, Any] = {}
    for g, s in items:
        sums[g] = sums[g] + s if g in sums else s
    if not sums:
        return [], []
    keys = list(sums)
    vec = torch.stack([sums[k].double() for k in keys])
    if reduce is not None:
        vec = reduce(vec)
    return keys, vec.cpu().tolist()


def layer_grad_norms(model: Any, depth: int = 2, prefix: str = "grad_norm/", *,
                     reduce: Reduce | None = None) -> dict[str, float]:
    """L2 norm of the gradients of each parameter group, plus the total as `grad_norm`.
    Parameters without a gradient are skipped. Values are Python floats."""
    items = [(_group(n, depth), _local(p.grad).detach().float().pow(2).sum())
             for n, p in model.named_parameters() if p.grad is not None]
    keys, vals = _sum_by_group(items, reduce)
    if not keys:
        return {}
    out = {f"{prefix}{k}": math.sqrt(v) for k, v in zip(keys, vals)}
    out["grad_norm"] = math.sqrt(sum(vals))
    return out


class UpdateTracker:
    """||W_after - W_before|| / ||W_before|| per parameter group and in total."""

    def __init__(self, model: Any, depth: int = 2, prefix: str = "update_ratio/", *,
                 reduce: Reduce | None = None) -> None:
        self.model, self.depth, self.prefix, self.reduce = model, depth, prefix, reduce
        self._before: dict[str, Any] | None = None

    @property
    def armed(self) -> bool:
        return self._before is not None

    def before(self) -> None:
        """Snapshot the trainable weights (a copy of them: call only on logging steps)."""
        self._before = {n: _local(p).detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def after(self) -> dict[str, float]:
        if self._before is None:
            raise RuntimeError("UpdateTracker.after() called without before()")
        items = []
        for name, p in self.model.named_parameters():
            if name not in self._before:
                continue
            g = _group(name, self.depth)
            old = self._before[name].float()
            items.append((g + "\0u", (_local(p).detach().float() - old).pow(2).sum()))
            items.append((g + "\0w", old.pow(2).sum()))
        self._before = None
        keys, vals = _sum_by_group(items, self.reduce)
        sums = dict(zip(keys, vals))
        groups = [k[:-2] for k in keys if k.endswith("\0u")]
        out = {f"{self.prefix}{g}": _ratio(sums[g + "\0u"], sums[g + "\0w"]) for g in groups}
        if groups:
            out["update_ratio"] = _ratio(sum(sums[g + "\0u"] for g in groups), sum(sums[g + "\0w"] for g in groups))
        return out


def _ratio(update_sq: float, weight_sq: float) -> float:
    return math.sqrt(update_sq) / math.sqrt(weight_sq) if weight_sq > 0 else math.inf
