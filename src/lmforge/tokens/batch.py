"""The batch every loader yields (a leaf: loaders and the training step import it, it imports no loader)."""

from __future__ import annotations

from typing import NamedTuple

import torch

IGNORE_INDEX = -100
"""Target id where no loss is taken (padding, masked positions); PyTorch's cross-entropy default."""


class Batch(NamedTuple):
    input_ids: torch.Tensor  # (B, T) long
    targets: torch.Tensor  # (B, T) long, -100 where no loss is taken
    doc_ids: torch.Tensor | None  # (B, T) long, or None when doc masks are off

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)
        return Batch(move(self.input_ids), move(self.targets), move(self.doc_ids))

    def pin_memory(self) -> Batch:
        return Batch(*(None if t is None else t.pin_memory() for t in self))
