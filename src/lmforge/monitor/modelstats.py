"""Per-layer training diagnostics for the metrics stream (call every N steps: they cost a pass over the weights).

    mon.log("train", step, **layer_grad_norms(model))          # after backward (and unscaling), before the step
    tracker = UpdateTracker(model)                             # update-to-weight ratio
    tracker.before()                                           # just before optimizer.step()
    optimizer.step()
    mon.log("train", step, **tracker.after())                  # update_ratio, update_ratio/blocks.0, ...

Parameters are grouped by the first `depth` parts of their name (`blocks.3.attn.q.weight` ->
`blocks.3` for depth 2), so a 12-layer model yields a dozen keys, not hundreds. A healthy
update-to-weight ratio is around 1e-3 per step (Karpathy's rule of thumb); far above means the learning
rate is too high for that layer, far below that it is barely learning.
"""

from __future__ import annotations

import math
from typing import Any


def _group(name: str, depth: int) -> str:
    """`blocks.3.attn.q.weight` -> `blocks.3` (depth 2); `tok_emb.weight` -> `tok_emb`."""
    # wrappers add prefixes (torch.compile: _orig_mod., DDP: module.) that would split the groups
    parts = [p for p in name.split(".") if p not in ("_orig_mod", "module")]
    if len(parts) > depth:
        return ".".join(parts[:depth])
    return ".".join(parts[:-1]) or parts[0]


def layer_grad_norms(model: Any, depth: int = 2, prefix: str = "grad_norm/") -> dict[str, float]:
    """L2 norm of the gradients of each parameter group, plus the total as `grad_norm`.

    Parameters without a gradient are skipped. Values are Python floats (one device sync).
    """
    import torch

    sq: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g = _group(name, depth)
        s = p.grad.detach().float().pow(2).sum()
        sq[g] = sq[g] + s if g in sq else s
    if not sq:
        return {}
    keys = list(sq)
    vals = torch.stack([sq[k] for k in keys]).cpu().tolist()  # one transfer for all groups
    out = {f"{prefix}{k}": math.sqrt(v) for k, v in zip(keys, vals)}
    out["grad_norm"] = math.sqrt(sum(vals))
    return out


class UpdateTracker:
    """||W_after - W_before|| / ||W_before|| per parameter group and in total."""

    def __init__(self, model: Any, depth: int = 2, prefix: str = "update_ratio/") -> None:
        self.model = model
        self.depth = depth
        self.prefix = prefix
        self._before: dict[str, Any] | None = None

    def before(self) -> None:
        """Snapshot the trainable weights (a copy of them: call only on logging steps)."""
        self._before = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def after(self) -> dict[str, float]:
        import torch

        if self._before is None:
            raise RuntimeError("UpdateTracker.after() called without before()")
        upd: dict[str, Any] = {}
        ref: dict[str, Any] = {}
        for name, p in self.model.named_parameters():
            if name not in self._before:
                continue
            g = _group(name, self.depth)
            old = self._before[name].float()
            d = (p.detach().float() - old).pow(2).sum()
            w = old.pow(2).sum()
            upd[g] = upd[g] + d if g in upd else d
            ref[g] = ref[g] + w if g in ref else w
        self._before = None
        keys = list(upd)
        if not keys:
            return {}
        u = torch.stack([upd[k] for k in keys]).cpu().tolist()
        r = torch.stack([ref[k] for k in keys]).cpu().tolist()
        out = {f"{self.prefix}{k}": math.sqrt(a) / math.sqrt(b) if b > 0 else math.inf for k, a, b in zip(keys, u, r)}
        out["update_ratio"] = math.sqrt(sum(u)) / math.sqrt(sum(r)) if sum(r) > 0 else math.inf
        return out
