"""Gopher's word n-gram repetition measures, vectorised over integer word ids.

Each distinct word gets an id; an n-gram is one 64-bit value Σ id[i+j]·M[j] (mod 2^64, fixed odd
random multipliers), so counting n-grams is one `np.unique` instead of building n-tuples. Two
different n-grams collide with probability ~2^-64 (then a ratio moves by one n-gram).
"""

from __future__ import annotations

import numpy as np

_MULT = np.random.default_rng(20240611).integers(1, 1 << 63, size=16, dtype=np.uint64) | np.uint64(1)


class NGrams:
    """The words of one document, ready for any n."""

    def __init__(self, words: list[str]) -> None:
        vocab: dict[str, int] = {}
        n = len(words)
        self.ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.uint64, n)
        self.chars = np.concatenate([[0], np.cumsum(np.fromiter(map(len, words), np.int64, n))])

    def _hash(self, n: int) -> np.ndarray:
        k = len(self.ids) - n + 1
        h = self.ids[:k] * _MULT[0]
        for j in range(1, n):
            h += self.ids[j:j + k] * _MULT[j]  # wraps mod 2^64
        return h

    def top_fraction(self, n: int, total_chars: int) -> float:
        """Characters covered by the most frequent n-gram: count × its length with the spaces between
        its words, / all characters. Ties go to the n-gram seen first (as `Counter.most_common`)."""
        if len(self.ids) < n:
            return 0.0
        _, first, counts = np.unique(self._hash(n), return_index=True, return_counts=True)
        top = counts.max()
        at = int(first[counts == top].min())
        return int(top) * (int(self.chars[at + n] - self.chars[at]) + n - 1) / total_chars

    def dup_fraction(self, n: int, total_chars: int) -> float:
        """Characters of n-grams repeating an earlier one / all characters, scanning left to right and
        skipping a counted repeat whole (so overlapping repeats count once). Only positions whose n-gram
        occurs more than once can matter, so the scan visits just those."""
        if len(self.ids) < n:
            return 0.0
        _, inv, counts = np.unique(self._hash(n), return_inverse=True, return_counts=True)
        multi = np.flatnonzero(counts[inv] > 1)
        if multi.size == 0:
            return 0.0
        seen: set[int] = set()
        nxt = repeated = 0
        grams = inv[multi].tolist()
        for p, g in zip(multi.tolist(), grams):
            if p < nxt:  # inside a repeat already counted
                continue
            if g in seen:
                repeated += int(self.chars[p + n] - self.chars[p])
                nxt = p + n
            else:
                seen.add(g)
                nxt = p + 1
        return repeated / total_chars
