"""Generation with a KV cache and the sampling filters: used by training callbacks, eval and export alike."""

from lmforge.infer.generate import generate

__all__ = ["generate"]
