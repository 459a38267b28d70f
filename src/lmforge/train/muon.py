"""Muon for the hidden matrices and AdamW for the rest, as one optimiser (one state dict, one set of
param groups for the schedule, the checkpoint and FSDP2's state-dict gather).

Muon (Keller Jordan, 2024; modded-nanogpt, nanochat): SGD with Nesterov momentum whose update is
replaced by its nearest semi-orthogonal matrix, computed with 5 quintic Newton-Schulz iterations:

    buf = lerp(buf, g, 1 - momentum);  u = lerp(g, buf, momentum)        # Nesterov
    O = NS5(u) * sqrt(max(1, rows / cols));  p *= 1 - lr * wd;  p -= lr * O

Fused projections are orthogonalised per part (q, k, v of `c_attn`; gate and up of a SwiGLU `c_fc`),
as modded-nanogpt does with its separate q/k/v matrices.

Why not `torch.optim.Muon` (torch 2.13 has one): it updates only 2-D parameters (a second optimiser
would be needed for embeddings, head, norms and biases, while checkpoints and the schedule handle one),
it always runs Newton-Schulz in bf16 (here fp32 on CPU, where bf16 matmuls are emulated and 1 vs 2
process runs must agree), and it does not gather FSDP2 shards.

Distributed: under DDP every rank holds the all-reduced gradient and computes the same update.
Under FSDP2 a matrix is a DTensor sharded by rows; Newton-Schulz needs the whole matrix, so each
rank all-gathers the momentum-updated gradient, orthogonalises it, and keeps its own rows (the
"Distributed Muon" of Moonlight, Liu et al. 2025). Every rank does the same NS work: compute is
replicated, memory for the optimiser state stays sharded.
"""

from __future__ import annotations

import math
from typing import Any

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise the 2-D matrix g (U S V^T -> U S' V^T, S' ~ 1): Keller Jordan's
    quintic iteration, in bf16 on CUDA (as published) and fp32 elsewhere."""
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16 if g.device.type == "cuda" else torch.float32)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return (x.T if tall else x).to(g.dtype)


def orthogonal_update(u: torch.Tensor, splits: list[int] | None, steps: int) -> torch.Tensor:
    """Newton-Schulz per row block of `u` (the parts of a fused projection), each scaled by
    sqrt(max(1, rows / cols)) so tall and wide blocks get updates of the same RMS per element."""
    parts = u.split(splits, dim=0) if splits else (u,)
    return torch.cat([newton_schulz(p, steps) * math.sqrt(max(1.0, p.size(0) / p.size(1))) for p in parts])


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `ref`: this rank's shard of it when `ref` is a DTensor."""
    if not hasattr(ref, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, ref.device_mesh, ref.placements, src_data_rank=None)  # local slice, no comms


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with `kind: muon` (2-D matrices; keys lr, momentum, weight_decay, ns_steps, splits)
    or `kind: adamw` (keys lr, betas, eps, weight_decay, fused). `lr_scale` in a group is the ratio to
    the schedule's rate that `lmforge.train.optim.set_lr` keeps."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        for g in groups:
            if g["kind"] == "muon" and any(p.ndim != 2 for p in g["params"]):
                raise ValueError("Muon groups hold only 2-D matrices")
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (self._muon if group["kind"] == "muon" else self._adamw)(group)
        return loss

    def _muon(self, group: dict[str, Any]) -> None:
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mom)
            u = p.grad.lerp(buf, mom)  # Nesterov
            o = _like(orthogonal_update(_full(u), group["splits"], group["ns_steps"]), p)
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(o, alpha=-lr)

    def _adamw(self, group: dict[str, Any]) -> None:
        from torch.optim.adam import adam

        params, grads, avgs, sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                step_dev = p.device if group["fused"] else "cpu"
                state["step"] = torch.zeros((), dtype=torch.float32, device=step_dev)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adam(params, grads, avgs, sqs, [], steps, fused=group["fused"] or None, decoupled_weight_decay=True,
             amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
             eps=group["eps"], maximize=False)
