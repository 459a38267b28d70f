"""AdamW (or Muon + AdamW) with parameter groups, and learning-rate schedules as pure functions of the step.

    opt = build_optimizer(model, cfg.train, device)          # train.optimizer: adamw | muon
    for g in opt.param_groups: g["lr"] = lr_at(step, cfg.train, total_steps)

The schedule has no state of its own: the step (saved in every checkpoint) determines the rate,
so resuming needs nothing but the step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lmforge.model.gpt import MLP, Attention
from lmforge.train.config import TrainConfig
from lmforge.train.muon import MuonAdamW


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matmul weights (2-D Linear weights); norms, biases and embeddings get none.

    Tied parameters (lm_head = wte) appear once, in the group of the module seen first.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, nn.Linear) and name == "weight" and not _is_tied_embedding(model, p):
                decay.append(p)
            else:
                no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def _is_tied_embedding(model: nn.Module, p: torch.Tensor) -> bool:
    return any(isinstance(m, nn.Embedding) and m.weight is p for m in model.modules())


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """`train.optimizer`: AdamW over `param_groups`, with PyTorch's fused kernel (one launch for all
    parameters on CUDA, and on the CPU about 4x faster than the per-tensor loop,
    benchmarks/train_throughput.py); or `muon`: `MuonAdamW` over `muon_param_groups`."""
    fused = device.type in ("cuda", "cpu")
    if cfg.optimizer == "muon":
        return MuonAdamW(muon_param_groups(model, cfg, fused))
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps, fused=fused or None)


def _row_splits(module: nn.Module) -> list[int] | None:
    """Row blocks of a fused projection, orthogonalised separately: q|k|v, gate|up."""
    if isinstance(module, Attention):
        return [module.n_head * module.hd, module.n_kv * module.hd, module.n_kv * module.hd]
    if isinstance(module, MLP) and module.swiglu:
        half = module.c_fc.out_features // 2
        return [half, half]
    return None


def muon_param_groups(model: nn.Module, cfg: TrainConfig, fused: bool) -> list[dict]:
    """Muon for the 2-D weights of Linear layers inside the blocks (one group per fused-split layout);
    AdamW (decay / no_decay as `param_groups`) for embeddings, the LM head, norms and biases."""
    muon: dict[tuple, list] = {}
    for block in getattr(model, "blocks", []):
        for owner in block.modules():
            for name, lin in owner.named_children():
                if isinstance(lin, nn.Linear) and lin.weight.requires_grad and lin.weight.ndim == 2:
                    splits = _row_splits(owner) if name in ("c_attn", "c_fc") else None
                    muon.setdefault(tuple(splits or ()), []).append(lin.weight)
    ids = {id(p) for ps in muon.values() for p in ps}
    groups = []  # AdamW groups first: param_groups[0]["lr"] (what the logs show) stays train.lr
    for g in param_groups(model, cfg.weight_decay):
        rest = [p for p in g["params"] if id(p) not in ids]
        if rest:
            groups.append({**g, "params": rest, "kind": "adamw", "lr": cfg.lr, "lr_scale": 1.0,
                           "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps, "fused": fused})
    groups += [{"params": ps, "kind": "muon", "name": f"muon{list(k) if k else ''}", "splits": list(k) or None,
                "lr": cfg.muon_lr, "lr_scale": cfg.muon_lr / cfg.lr, "momentum": cfg.muon_momentum,
                "weight_decay": cfg.muon_weight_decay, "ns_steps": 5} for k, ps in muon.items()]
    return groups


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for optimiser step `step` (0-based) of `total_steps`.

    Linear warmup from lr/warmup to lr over `warmup_steps`, then the schedule:
    cosine / linear decay to `min_lr` at `total_steps`; constant; `wsd` (warmup-stable-decay:
    constant, then linear decay to `min_lr` over the last `decay_fraction` of the steps); `step`
    (multiply by `gamma` at each of `milestones`); `exponential` (multiply by `gamma` each step,
    floored at `min_lr`).
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    kind = cfg.schedule
    if kind == "constant":
        return cfg.lr
    if kind == "step":
        return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if step >= m)
    if kind == "exponential":
        return max(cfg.min_lr, cfg.lr * cfg.gamma ** (step - cfg.warmup_steps))
    total = max(total_steps, cfg.warmup_steps + 1)
    if kind == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * total))
        start = total - decay_steps
        if step < start:
            return cfg.lr
        frac = min(1.0, (step - start) / decay_steps)
        return cfg.lr + frac * (cfg.min_lr - cfg.lr)
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if kind == "linear":
        return cfg.lr + frac * (cfg.min_lr - cfg.lr)
    # cosine
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to `lr` times its `lr_scale` (Muon groups run at muon_lr / lr of it)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
