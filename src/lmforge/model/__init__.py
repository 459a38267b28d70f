"""Decoder-only transformer (architecture only) and its named presets."""

from lmforge.model.gpt import GPT, KVCache
from lmforge.model.presets import PRESETS, get_preset

__all__ = ["GPT", "KVCache", "PRESETS", "get_preset"]
