"""Packing: how the token stream of a split becomes fixed-size windows of seq_len + 1 tokens.

A packer exposes `num_windows` and `window(i) -> (tokens, doc_ids, valid)`, three arrays of
seq_len + 1; `valid` is False on padding (its targets become -100, its doc id is -1).

* `concat`: the split as one stream cut every seq_len tokens (windows overlap by one token, so
  every token is a target exactly once). Documents are split at window edges.
"""

from __future__ import annotations

import numpy as np

from lmforge.errors import ConfigError
from lmforge.tokens.shards import TokenDataset

PAD_DOC = -1


class ConcatPacker:
    def __init__(self, dataset: TokenDataset, seq_len: int, *, pad_tail: bool = False) -> None:
        self.ds, self.T = dataset, seq_len
        n = dataset.num_tokens
        self.num_full = max(n - 1, 0) // seq_len
        # the tail (>= 2 tokens, so at least one target) becomes one padded window when asked for
        tail = n - self.num_full * seq_len
        self.num_windows = self.num_full + int(pad_tail and tail >= 2)

    def first_token(self, i: int) -> int:
        return i * self.T

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = i * self.T
        end = min(start + self.T + 1, self.ds.num_tokens)
        toks = self.ds.read(start, end)
        docs = np.searchsorted(self.ds.doc_starts, np.arange(start, end), side="right") - 1
        n = end - start
        if n == self.T + 1:
            return toks, docs, np.ones(n, dtype=bool)
        pad = self.T + 1 - n
        return (np.concatenate([toks, np.zeros(pad, np.int64)]), np.concatenate([docs, np.full(pad, PAD_DOC)]),
                np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]))


def make_packer(name: str, dataset: TokenDataset, seq_len: int, *, pad_tail: bool = False):
    if name == "concat":
        return ConcatPacker(dataset, seq_len, pad_tail=pad_tail)
    raise ConfigError(f"config key 'tokens.packing': unknown packing {name!r} (use concat or best_fit)")
