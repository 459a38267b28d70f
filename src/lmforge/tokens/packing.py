"""Packing: how the token stream of a split becomes fixed-size windows of seq_len + 1 tokens.

A packer exposes `num_windows`, `window(i) -> (tokens, doc_ids, valid)` (three arrays of
seq_len + 1; `valid` is False on padding, whose targets become -100 and doc id -1),
`first_token(i)` (for error messages) and `stats()` (padding and split rates).

* `concat`: the split as one stream cut every seq_len tokens (windows overlap by one token, so
  every token is a target exactly once). No padding; documents are split at window edges.
* `best_fit`: best-fit-decreasing bin packing (Ding et al. 2024, "Fewer Truncations Improve
  Language Modeling"): documents that fit in a window are never split; longer ones are cut into
  window-sized pieces first. The rest of each window is padding.

Positions restart at every document in both (the model derives them from `doc_ids`).
"""

from __future__ import annotations

from typing import Any

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

    def first_token(self, i: int, col: int = 0) -> int:
        """Split-wide index of the token at column `col` of window i (for error messages)."""
        return i * self.T + col

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

    def stats(self) -> dict[str, Any]:
        """Padding rate 0; split rate = documents that cross a window edge / documents."""
        T, starts = self.T, self.ds.doc_starts
        # document d is split when a window edge (a multiple of T) lies strictly inside (start, end - 1]
        first_edge_after = (starts[:-1] // T + 1) * T
        split = int(np.sum(first_edge_after <= starts[1:] - 1))
        used = self.num_full * T + (1 if self.num_full else 0)
        return {"packing": "concat", "windows": self.num_windows, "padding_rate": 0.0,
                "split_rate": split / max(self.ds.num_docs, 1), "docs_split": split,
                "dropped_tokens": int(self.ds.num_tokens - min(used, self.ds.num_tokens))}


def split_pieces(dataset: TokenDataset, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Documents as pieces of at most `max_len` tokens: (piece doc, piece start, piece length,
    pieces per document). Longer documents are cut into pieces that overlap by one token, so every
    token after a document's first is a target exactly once; a final 1-token piece is dropped."""
    starts, lengths = dataset.doc_starts[:-1], np.diff(dataset.doc_starts)
    step = max_len - 1
    n_pieces = np.where(lengths <= max_len, 1, 1 + np.ceil((lengths - max_len) / max(step, 1)).astype(np.int64))
    doc = np.repeat(np.arange(len(lengths)), n_pieces)
    k = np.arange(len(doc)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    p_start = starts[doc] + k * step
    p_len = np.minimum(max_len, starts[doc] + lengths[doc] - p_start)
    keep = (p_len >= 2) | (k == 0)
    return doc[keep], p_start[keep], p_len[keep], n_pieces


class _MinFit:
    """Bins bucketed by free space, with a segment tree to find the fullest bin that still fits."""

    def __init__(self, capacity: int) -> None:
        self.size = 1 << int(np.ceil(np.log2(capacity + 1)))
        self.tree = [0] * (2 * self.size)  # counts of bins per free space, summed up the tree
        self.buckets: list[list[int]] = [[] for _ in range(capacity + 1)]

    def _add(self, free: int, delta: int) -> None:
        i = free + self.size
        while i:
            self.tree[i] += delta
            i //= 2

    def push(self, free: int, bin_id: int) -> None:
        self.buckets[free].append(bin_id)
        self._add(free, 1)

    def pop_fit(self, need: int) -> tuple[int, int] | None:
        """Remove and return (free, bin) with the smallest free space >= need, or None."""
        free = self._find(1, 0, self.size - 1, need)
        if free < 0:
            return None
        self._add(free, -1)
        return free, self.buckets[free].pop()

    def _find(self, node: int, lo: int, hi: int, need: int) -> int:
        """Leftmost free space >= need that has a bin, under `node` (covering [lo, hi]); -1 if none."""
        if hi < need or self.tree[node] == 0:
            return -1
        if lo == hi:
            return lo
        mid = (lo + hi) // 2
        left = self._find(2 * node, lo, mid, need)
        return left if left >= 0 else self._find(2 * node + 1, mid + 1, hi, need)


class BestFitPacker:
    def __init__(self, dataset: TokenDataset, seq_len: int, *, pad_tail: bool = False) -> None:
        self.ds, self.T = dataset, seq_len
        C = seq_len + 1
        doc, p_start, p_len, n_pieces = split_pieces(dataset, C)
        order = np.lexsort((np.arange(len(p_len)), -p_len))  # longest first, ties in corpus order
        n_full = int(np.sum(p_len == C))  # full pieces come first and fill a window each
        bins: list[list[int]] = [[p] for p in order[:n_full].tolist()]
        fit = _MinFit(C)
        for p in order[n_full:].tolist():
            L = int(p_len[p])
            got = fit.pop_fit(L)
            if got is None:
                bins.append([p])
                free, b = C - L, len(bins) - 1
            else:
                free, b = got[0] - L, got[1]
                bins[b].append(p)
            if free > 0:
                fit.push(free, b)
        # compact CSR form: window i holds pieces items[ptr[i]:ptr[i + 1]]
        self.ptr = np.concatenate([[0], np.cumsum([len(b) for b in bins])]).astype(np.int64)
        self.items = np.fromiter((p for b in bins for p in b), dtype=np.int64, count=int(self.ptr[-1]))
        self.p_doc, self.p_start, self.p_len = doc, p_start, p_len
        self.num_windows = len(bins)
        self.docs_split = int(np.sum(n_pieces > 1))

    def first_token(self, i: int, col: int = 0) -> int:
        """Split-wide index of the token at column `col` of window i (for error messages)."""
        pieces = self.items[self.ptr[i]:self.ptr[i + 1]]
        for p in pieces:
            if col < self.p_len[p]:
                return int(self.p_start[p]) + col
            col -= int(self.p_len[p])
        return int(self.p_start[pieces[-1]])

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        C = self.T + 1
        toks = np.zeros(C, np.int64)
        docs = np.full(C, PAD_DOC, np.int64)
        valid = np.zeros(C, bool)
        pos = 0
        for p in self.items[self.ptr[i]:self.ptr[i + 1]]:
            s, L = int(self.p_start[p]), int(self.p_len[p])
            toks[pos:pos + L] = self.ds.read(s, s + L)
            docs[pos:pos + L] = self.p_doc[p]
            valid[pos:pos + L] = True
            pos += L
        return toks, docs, valid

    def stats(self) -> dict[str, Any]:
        used = int(self.p_len.sum())
        total = self.num_windows * (self.T + 1)
        return {"packing": "best_fit", "windows": self.num_windows, "padding_rate": 1 - used / max(total, 1),
                "split_rate": self.docs_split / max(self.ds.num_docs, 1), "docs_split": self.docs_split,
                "dropped_tokens": 0}


PACKERS = {"concat": ConcatPacker, "best_fit": BestFitPacker}


def make_packer(name: str, dataset: TokenDataset, seq_len: int, *, pad_tail: bool = False):
    if name not in PACKERS:
        raise ConfigError(f"config key 'tokens.packing': {name!r} is not a packing of TokenLoader (use concat or "
                          "best_fit; `budget` is TokenBudgetLoader, see lmforge.tokens.loader.build_loader)")
    return PACKERS[name](dataset, seq_len, pad_tail=pad_tail)
