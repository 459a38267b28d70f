"""TokenLoader: packed (B, T) batches from a TokenDataset, seeded, sharded by rank, exactly resumable.

    loader = TokenLoader(open_split(tokens, "train"), seq_len=256, batch_size=16, seed=1, rank=r, world_size=w)
    batch = next(loader)             # Batch(input_ids, targets, doc_ids), each (B, T) torch.long
    state = loader.state_dict()      # goes into every checkpoint
    loader.load_state_dict(state)    # the next batch equals the one the uninterrupted run would see

The epoch is a list of windows (`packing.py`: seq_len + 1 tokens each, input = w[:-1], target = w[1:]).
Each epoch uses its own seeded permutation, and the epochs form one endless stream: global step s
takes stream items `[s*B*W, (s+1)*B*W)`, rank r the items `(s*B + b)*W + r`. So ranks are
disjoint, every window is seen exactly once per epoch (a step may straddle two epochs rather than
dropping or repeating the remainder), and every rank gets the same number of equal-sized batches.

Evaluation: `TokenLoader(..., shuffle=False, infinite=False)` (or `TokenLoader.for_eval`) makes
one ordered pass that also covers the tail (padded, targets -100); iterating it again restarts it.

`packing="best_fit"` keeps documents shorter than seq_len whole (padding masked out of the loss);
`prefetch=N` builds the next N batches in a background thread (pinned when CUDA is present), and
`wait_time` is the time `next()` waited. `build_loader(ds, cfg.tokens, ...)` picks the loader
(including `TokenBudgetLoader` for `tokens.packing: budget`) from the config.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from lmforge.errors import DataError, LmforgeError
from lmforge.tokens.batch import IGNORE_INDEX, Batch
from lmforge.tokens.packing import make_packer
from lmforge.tokens.prefetch import Prefetcher
from lmforge.tokens.shards import TokenDataset

_STATE_VERSION = 1


def loader_options(tokens_cfg: Any) -> dict[str, Any]:
    """TokenLoader keyword arguments from the `tokens:` config section (a TokensConfig):
    `TokenLoader(ds, seq_len=..., batch_size=..., seed=..., **loader_options(cfg.tokens))`.
    (`tokens.mmap` goes to `open_split(..., mmap=cfg.tokens.mmap)`.)"""
    return {"packing": tokens_cfg.packing, "prefetch": tokens_cfg.prefetch,
            "read_retries": tokens_cfg.read_retries, "retry_backoff": tokens_cfg.retry_backoff}


def build_loader(dataset: TokenDataset, tokens_cfg: Any, *, seq_len: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, doc_masks: bool = True) -> Any:
    """The training loader `tokens.packing` asks for: a TokenLoader (concat, best_fit) or, for
    `budget`, a TokenBudgetLoader with the same token budget per batch (batch_size x seq_len)."""
    if tokens_cfg.packing == "budget":
        from lmforge.tokens.batching import TokenBudgetLoader

        return TokenBudgetLoader(dataset, max_tokens=batch_size * seq_len, max_len=seq_len, seed=seed, rank=rank,
                                 world_size=world_size, shuffle=shuffle)
    return TokenLoader(dataset, seq_len=seq_len, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                       shuffle=shuffle, doc_masks=doc_masks, **loader_options(tokens_cfg))


class TokenLoader:
    """Iterator of `Batch`; see the module docstring for the sampling rules.

    prefetch: batches prepared ahead by a background thread (0 = in the caller's thread).
    read_retries / retry_backoff: transient OSErrors while reading a shard are retried with
    exponential backoff, then raise LmforgeError naming the shard.
    `wait_time`: total seconds `next()` spent waiting for data (log it as a fraction of step time).
    """

    def __init__(self, dataset: TokenDataset, *, seq_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, doc_masks: bool = True, infinite: bool = True,
                 packing: str = "concat", prefetch: int = 0, pin_memory: bool | None = None,
                 read_retries: int = 3, retry_backoff: float = 0.05) -> None:
        if seq_len < 1 or batch_size < 1:
            raise LmforgeError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
        if not 0 <= rank < world_size:
            raise LmforgeError(f"rank {rank} must be in [0, world_size={world_size})")
        self.dataset, self.seq_len, self.batch_size, self.seed = dataset, seq_len, batch_size, seed
        self.rank, self.world_size, self.shuffle, self.doc_masks = rank, world_size, shuffle, doc_masks
        self.infinite, self.packing_name = infinite, packing
        self.read_retries, self.retry_backoff = read_retries, retry_backoff
        self.prefetch = prefetch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.packer = make_packer(packing, dataset, seq_len, pad_tail=not infinite)
        self.num_windows = self.packer.num_windows
        if infinite and self.num_windows == 0:
            raise DataError(
                f"split {dataset.split!r} ({', '.join(dataset.shard_names)}) holds {dataset.num_tokens} tokens, fewer "
                f"than one training sequence of seq_len + 1 = {seq_len + 1}; add text to the corpus or lower "
                "model.block_size")
        self.step = 0  # batches handed to the caller (per rank; identical on every rank)
        self.wait_time = 0.0
        self._perms: dict[int, np.ndarray] = {}
        self._prefetcher: Prefetcher | None = None

    @classmethod
    def for_eval(cls, dataset: TokenDataset, *, seq_len: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 doc_masks: bool = True, packing: str = "concat") -> TokenLoader:
        """One ordered pass over every token of `dataset` (tail padded, targets -100)."""
        return cls(dataset, seq_len=seq_len, batch_size=batch_size, seed=0, rank=rank, world_size=world_size,
                   shuffle=False, doc_masks=doc_masks, infinite=False, packing=packing)

    # ------------------------------------------------------------------ budgets and progress
    @property
    def tokens_per_epoch(self) -> int:
        """Token positions (targets, all ranks together) in one epoch."""
        return self.num_windows * self.seq_len

    @property
    def epoch(self) -> float:
        """Epochs consumed so far (finite mode: fraction of this rank's pass)."""
        if self.num_windows == 0:
            return 0.0
        return self.step * self.batch_size * self.world_size / self.num_windows

    def __len__(self) -> int:
        """Batches of one pass (finite mode) or of one epoch rounded up (infinite mode)."""
        per_rank = -(-max(self.num_windows - self.rank, 0) // self.world_size)
        return -(-per_rank // self.batch_size)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "step": self.step, "consumed": self.step * self.batch_size * self.world_size,
                "seed": self.seed, "world_size": self.world_size, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "num_windows": self.num_windows, "packing": self.packing_name,
                "shuffle": self.shuffle, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after `state`. A different world size or batch size is accepted when the windows
        consumed so far divide evenly into the new global batch."""
        for key, mine in (("seed", self.seed), ("seq_len", self.seq_len), ("num_windows", self.num_windows),
                          ("packing", self.packing_name), ("shuffle", self.shuffle)):
            if state.get(key) != mine:
                raise LmforgeError(f"loader state does not match this run: {key} was {state.get(key)!r}, now {mine!r} "
                                   "(the tokens or data settings changed since the checkpoint; resume with the same "
                                   "settings or start a new run)")
        per_step = self.batch_size * self.world_size
        if state["consumed"] % per_step:
            raise LmforgeError(f"cannot resume: {state['consumed']} windows were consumed, not a multiple of the new "
                               f"global batch {self.batch_size} x {self.world_size}; keep train.batch_size and the "
                               "number of processes of the checkpoint")
        self._stop_thread()
        self.step = state["consumed"] // per_step

    # ------------------------------------------------------------------ batches
    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a step straddles at most two epochs
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.num_windows) if self.shuffle else np.arange(self.num_windows)
        return self._perms[epoch]

    def _window_ids(self, step: int) -> np.ndarray:
        g = (step * self.batch_size + np.arange(self.batch_size)) * self.world_size + self.rank
        if not self.infinite:
            return g[g < self.num_windows]
        epochs, idx = np.divmod(g, self.num_windows)
        return np.array([self._perm(int(e))[i] for e, i in zip(epochs, idx)], dtype=np.int64)

    def _read(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        delay = self.retry_backoff
        for attempt in range(self.read_retries + 1):
            try:
                return self.packer.window(w)
            except OSError as e:
                if attempt == self.read_retries:
                    shard = self.dataset.shard_of(self.packer.first_token(w))
                    raise DataError(f"token shard {shard} of split {self.dataset.split!r}: read failed after "
                                    f"{self.read_retries} retries ({e}); check the disk or file system, or "
                                    "re-create the tokens with `lmforge tokenize`") from e
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def make_batch(self, step: int) -> Batch | None:
        """The batch of `step` for this rank (a pure function of step); None past a finite pass."""
        wins = self._window_ids(step)
        if len(wins) == 0:
            return None
        T = self.seq_len
        toks = np.empty((len(wins), T + 1), dtype=np.int64)
        docs = np.empty((len(wins), T + 1), dtype=np.int64)
        valid = np.empty((len(wins), T + 1), dtype=bool)
        for row, w in enumerate(wins):
            toks[row], docs[row], valid[row] = self._read(int(w))
        vocab = self.dataset.vocab_size
        if vocab and toks.max() >= vocab:  # corrupt bytes that kept the file size; cheap per batch
            row, col = np.unravel_index(int(np.argmax(toks)), toks.shape)
            shard = self.dataset.shard_of(self.packer.first_token(int(wins[row]), int(col)))
            raise DataError(f"token shard {shard} of split {self.dataset.split!r}: token id {int(toks.max())} >= "
                            f"vocabulary size {vocab} (corrupted); delete the tokens directory and rerun "
                            "`lmforge tokenize`")
        targets = np.where(valid[:, 1:], toks[:, 1:], IGNORE_INDEX)
        batch = Batch(torch.from_numpy(toks[:, :-1].copy()), torch.from_numpy(targets),
                      torch.from_numpy(docs[:, :-1].copy()) if self.doc_masks else None)
        return batch.pin_memory() if self.pin_memory else batch

    def __iter__(self) -> TokenLoader:
        if not self.infinite:  # each pass of an evaluation loader starts from the beginning
            self._stop_thread()
            self.step = 0
        return self

    def __next__(self) -> Batch:
        t0 = time.perf_counter()
        batch = self._next_prefetched() if self.prefetch > 0 else self.make_batch(self.step)
        self.wait_time += time.perf_counter() - t0
        if batch is None:
            raise StopIteration
        self.step += 1
        return batch

    # ------------------------------------------------------------------ prefetch thread
    def _next_prefetched(self) -> Batch | None:
        if self._prefetcher is None or self._prefetcher.finished:  # after an error or the end: start again
            self._prefetcher = Prefetcher(self.make_batch, self.step, self.prefetch, "lmforge-prefetch")
        return self._prefetcher.next()

    def _stop_thread(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None

    def close(self) -> None:
        self._stop_thread()

    def __del__(self) -> None:
        try:
            self._stop_thread()
        except Exception:
            pass
