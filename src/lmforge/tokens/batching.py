"""Token-budget dynamic batching of unpacked, variable-length sequences.

    loader = TokenBudgetLoader(open_split(tokens, "train"), max_tokens=8192, max_len=512, seed=1)
    batch = next(loader)   # Batch(input_ids (B, L), targets (B, L) with -100 on padding, doc_ids=None)

Each row is one document (documents longer than max_len + 1 tokens are cut into pieces that
overlap by one token). Every epoch the rows are shuffled, sorted by length inside chunks of
`sort_chunk` rows (so rows of a batch have similar lengths and little padding), cut into batches
whose padded size rows x (longest row) stays within `max_tokens`, and the batch order is shuffled.
Rows are right-padded: causal attention never lets a real token see the padding after it, so no
attention mask is needed, and padded targets are -100 (no loss).

Ranks: batch j of an epoch goes to rank j % world_size; the last `len % world_size` batches of an
epoch are dropped so every rank takes the same number of steps (a different few each epoch).
State = (epoch, step within the epoch); the batches after `load_state_dict` equal the
uninterrupted run's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.tokens.batch import IGNORE_INDEX, Batch
from lmforge.tokens.packing import split_pieces
from lmforge.tokens.shards import TokenDataset


class TokenBudgetLoader:
    def __init__(self, dataset: TokenDataset, *, max_tokens: int, max_len: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, infinite: bool = True, pad_id: int = 0,
                 sort_chunk: int = 256) -> None:
        if max_tokens < max_len:
            raise LmforgeError(f"max_tokens ({max_tokens}) must be >= max_len ({max_len}): one row must fit a batch")
        if not 0 <= rank < world_size:
            raise LmforgeError(f"rank {rank} must be in [0, world_size={world_size})")
        self.ds, self.max_tokens, self.max_len, self.seed = dataset, max_tokens, max_len, seed
        self.rank, self.world_size, self.shuffle, self.infinite = rank, world_size, shuffle, infinite
        self.pad_id, self.sort_chunk = pad_id, sort_chunk
        _, self.p_start, self.p_len, _ = split_pieces(dataset, max_len + 1)
        keep = self.p_len >= 2  # a row needs an input and a target
        self.p_start, self.p_len = self.p_start[keep], self.p_len[keep]
        if len(self.p_len) == 0:
            raise LmforgeError(f"split {dataset.split!r} ({', '.join(dataset.shard_names)}) has no document with "
                               "2 or more tokens; add text to the corpus")
        self.epoch_idx, self.step_in_epoch = 0, 0
        self.wait_time = 0.0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of row ids) for `epoch`, a pure function of (seed, epoch)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.p_len)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        rows_len = self.p_len - 1
        batches: list[np.ndarray] = []
        for c in range(0, n, self.sort_chunk):
            chunk = order[c:c + self.sort_chunk]
            chunk = chunk[np.argsort(-rows_len[chunk], kind="stable")]
            start = 0
            while start < len(chunk):
                longest = int(rows_len[chunk[start]])  # sorted: the first row of a batch is its longest
                size = max(1, self.max_tokens // longest)
                batches.append(chunk[start:start + size])
                start += size
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size
        mine = batches[self.rank:usable:self.world_size]
        self._cache = (epoch, mine)
        return mine

    def __iter__(self) -> TokenBudgetLoader:
        if not self.infinite:
            self.epoch_idx, self.step_in_epoch = 0, 0
        return self

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        batches = self._epoch_batches(self.epoch_idx)
        if self.step_in_epoch >= len(batches):
            if not self.infinite:
                raise StopIteration
            self.epoch_idx, self.step_in_epoch = self.epoch_idx + 1, 0
            batches = self._epoch_batches(self.epoch_idx)
        rows = batches[self.step_in_epoch]
        batch = self._make(rows)
        self.step_in_epoch += 1
        self.wait_time += time.perf_counter() - t0
        return batch

    def _make(self, rows: np.ndarray) -> Batch:
        L = int(self.p_len[rows].max()) - 1
        inp = np.full((len(rows), L), self.pad_id, dtype=np.int64)
        tgt = np.full((len(rows), L), IGNORE_INDEX, dtype=np.int64)
        for i, r in enumerate(rows):
            s, n = int(self.p_start[r]), int(self.p_len[r])
            toks = self.ds.read(s, s + n)
            inp[i, :n - 1], tgt[i, :n - 1] = toks[:-1], toks[1:]
        return Batch(torch.from_numpy(inp), torch.from_numpy(tgt), None)

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens (all ranks, before the per-epoch remainder is dropped) in one epoch."""
        return int((self.p_len - 1).sum())

    def close(self) -> None:
        """Nothing to stop (no prefetch thread); here for interface parity with TokenLoader."""

    @property
    def epoch(self) -> float:
        n = len(self._epoch_batches(self.epoch_idx))
        return self.epoch_idx + (self.step_in_epoch / n if n else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "token_budget", "epoch": self.epoch_idx, "step_in_epoch": self.step_in_epoch,
                "seed": self.seed, "world_size": self.world_size, "max_tokens": self.max_tokens,
                "max_len": self.max_len, "rows": len(self.p_len)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"seed": self.seed, "world_size": self.world_size, "max_tokens": self.max_tokens,
                "max_len": self.max_len, "rows": len(self.p_len)}
        for key, value in mine.items():
            if state.get(key) != value:
                raise LmforgeError(f"loader state does not match this run: {key} was {state.get(key)!r}; resume "
                                   "with the checkpoint's settings and tokens")
        self.epoch_idx, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
