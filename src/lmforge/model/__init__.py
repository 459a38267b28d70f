"""Decoder-only transformer (architecture only) and its named presets.

The model classes load on first use, so that `lmforge.model.config` (which every config imports)
does not import torch: `import lmforge.config` stays light, and so do the processes that spawn
workers re-importing it (tokenize and data ranks, encoding workers)."""

from __future__ import annotations

from typing import Any

from lmforge.model.presets import PRESETS, get_preset

__all__ = ["GPT", "KVCache", "PRESETS", "get_preset"]


def __getattr__(name: str) -> Any:
    if name in ("GPT", "KVCache"):
        from lmforge.model import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module 'lmforge.model' has no attribute {name!r}")
