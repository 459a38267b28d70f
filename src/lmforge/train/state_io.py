"""Model and optimiser state in and out of checkpoints, for one process, DDP and FSDP2 alike.

Single process and DDP: every rank holds the full model; rank 0 writes it. FSDP2: the full
(consolidated) state is gathered to rank 0 on the CPU with `torch.distributed.checkpoint.state_dict`,
so a checkpoint is always one plain `model.safetensors` that loads in one process for eval/export;
on restore every rank reads the full state and keeps its shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmforge import checkpoint as ck


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def _full_module(raw: nn.Module, msd: dict[str, torch.Tensor]) -> nn.Module:
    """A plain GPT holding the gathered full state dict, with `raw`'s requires_grad flags (so frozen
    parameters are still recognised as such by the checkpoint writer)."""
    from lmforge.model import GPT

    with torch.device("meta"):
        full = GPT(raw.cfg)
    # own storage per tensor: gathered tensors can be views of one flat buffer, which safetensors refuses
    full.load_state_dict({k: v.clone() for k, v in msd.items()}, assign=True)
    return ck.mirror_model(full, raw)


def gather_for_save(raw: nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> tuple[nn.Module | None, dict]:
    """(module whose weights rank 0 writes, optimiser state rank 0 writes). Collective under FSDP:
    every rank must call it; other ranks get (None, {})."""
    if not is_fsdp(raw):
        return raw, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    msd = get_model_state_dict(raw, options=_options(cpu_offload=True))
    osd = get_optimizer_state_dict(raw, optimizer, options=_options(cpu_offload=True))
    if rank != 0:
        return None, {}
    return _full_module(raw, msd), osd


def gather_weights_for_save(raw: nn.Module, rank: int) -> nn.Module | None:
    """The module whose weights rank 0 writes in a weights-only checkpoint (no optimiser gather).
    Collective under FSDP: every rank must call it; other ranks get None."""
    if not is_fsdp(raw):
        return raw if rank == 0 else None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    msd = get_model_state_dict(raw, options=_options(cpu_offload=True))
    return _full_module(raw, msd) if rank == 0 else None


def load_model_and_optimizer(raw: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """Load weights and optimiser state from checkpoint `path`; returns the rest of optimizer.pt."""
    blob = ck.load_optimizer_file(path)
    if not is_fsdp(raw):
        ck.load_weights(raw, path, next(raw.parameters()).device)
        optimizer.load_state_dict(blob["optimizer"])
        return blob
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    sd = ck.read_weights(path)  # model.safetensors + the shared frozen file, if any
    if raw.cfg.tie_embeddings:  # safetensors keeps one name of a tied pair
        shared = sd.get("wte.weight", sd.get("lm_head.weight"))
        sd["wte.weight"] = sd["lm_head.weight"] = shared
    set_model_state_dict(raw, sd, options=_options())
    set_optimizer_state_dict(raw, optimizer, blob["optimizer"], options=_options())
    return blob
