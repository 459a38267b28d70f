"""Weighted data mixtures: `tokens.mix: {SOURCE_OR_GLOB: weight, ...}`.

    tokens:
      mix: {"data/wiki/*.jsonl": 0.7, "data/code/*": 0.3}   # shares of training sequences
      mix_field: source                                    # the document meta field that names a source

Recording (tokens stage): every document's `meta[mix_field]` is stored per split, in shard order, as
`sources-<split>.npy` (uint32 index into `manifest["sources"]["names"]`). It is always recorded, so
changing the weights never re-tokenizes.

Sampling (`MixtureLoader`): each group (a `mix` key, matching source values exactly or as a glob; the
first matching key wins) is packed on its own (`concat` or `best_fit`, windows never mix groups) and
has its own seeded, endless stream of epochs. Global step s hands out B x W sequences (B per rank, W
ranks): how many come from each group is fixed by largest-remainder rounding of the cumulative
target `(s + 1) * B * W * weight` (so the shares are exact to within one sequence at every step, not
just on average), and which of the step's slots gets which group is a seeded shuffle of (seed, s).
Slot j = b * W + r goes to rank r, exactly as in `TokenLoader`, and takes the next unused index of
its group's stream, so ranks are disjoint and every sequence of a group is seen once per group
epoch. The state is the step and the sequences taken per group: a restore gives the same batches.
Tokens seen and epochs per group are reported (`mix_metrics`, `mix_summary`); a small group simply
starts its next epoch (reported as `mix/<group>/epoch` > 1).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from lmforge.errors import DataError, LmforgeError
from lmforge.tokens.batch import IGNORE_INDEX, Batch
from lmforge.tokens.loader import TokenLoader
from lmforge.tokens.prefetch import Prefetcher
from lmforge.tokens.shards import TokenDataset
from lmforge.tokens.sources import assign_groups, read_sources

_STATE_VERSION = 1


class SubsetDataset:
    """Documents `docs` of a TokenDataset seen as one token stream (what the packers need)."""

    def __init__(self, ds: TokenDataset, docs: np.ndarray, name: str) -> None:
        self.ds, self.docs, self.name = ds, docs, name
        self.split, self.vocab_size, self.shard_names = ds.split, ds.vocab_size, ds.shard_names
        lengths = ds.doc_starts[docs + 1] - ds.doc_starts[docs]
        self.doc_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.num_tokens, self.num_docs = int(self.doc_starts[-1]), len(docs)

    def read(self, start: int, end: int) -> np.ndarray:
        out, pos = [], start
        d = int(np.searchsorted(self.doc_starts, start, side="right")) - 1
        while pos < end:
            base, stop = int(self.doc_starts[d]), min(end, int(self.doc_starts[d + 1]))
            orig = int(self.ds.doc_starts[self.docs[d]])
            out.append(self.ds.read(orig + pos - base, orig + stop - base))
            pos, d = stop, d + 1
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def shard_of(self, token: int) -> str:
        d = int(np.searchsorted(self.doc_starts, token, side="right")) - 1
        return self.ds.shard_of(int(self.ds.doc_starts[self.docs[d]]) + token - int(self.doc_starts[d]))


def allocate(prev: np.ndarray, weights: np.ndarray, step: int, n: int) -> np.ndarray:
    """Sequences per group in step `step` (n in all), keeping the cumulative counts within one
    sequence of `(step + 1) * n * weights` (largest remainder; ties to the lower group index)."""
    want = np.maximum((step + 1) * n * weights - prev, 0.0)
    want = want * (n / want.sum()) if want.sum() > 0 else weights * n
    base = np.floor(want).astype(np.int64)
    rem = n - int(base.sum())
    if rem > 0:
        order = np.argsort(-(want - base), kind="stable")
        base[order[:rem]] += 1
    return base


class MixtureLoader:
    """Batches drawn from groups of sources by weight; same interface as `TokenLoader` (see module doc)."""

    def __init__(self, dataset: TokenDataset, source_ids: np.ndarray, names: list[str], mix: dict[str, float], *,
                 field: str = "source", seq_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, doc_masks: bool = True, packing: str = "concat", prefetch: int = 0,
                 read_retries: int = 3, retry_backoff: float = 0.05) -> None:
        if not 0 <= rank < world_size:
            raise LmforgeError(f"rank {rank} must be in [0, world_size={world_size})")
        group_of_source = np.asarray(assign_groups(mix, names, field), dtype=np.int64)
        doc_group = group_of_source[source_ids]
        self.keys = list(mix)
        w = np.array([float(mix[k]) for k in self.keys])
        self.weights = w / w.sum()
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size, self.shuffle, self.doc_masks = rank, world_size, shuffle, doc_masks
        self.packing_name, self.prefetch, self.dataset = packing, prefetch, dataset
        self.groups: list[TokenLoader | None] = []
        for g, key in enumerate(self.keys):
            docs = np.flatnonzero(doc_group == g)
            if self.weights[g] == 0:
                self.groups.append(None)
                continue
            sub = SubsetDataset(dataset, docs, key)
            try:  # one endless, seeded stream per group; only its permutations and reads are used
                self.groups.append(TokenLoader(sub, seq_len=seq_len, batch_size=1, seed=seed * 1_000_003 + g,
                                               shuffle=shuffle, doc_masks=doc_masks, packing=packing,
                                               read_retries=read_retries, retry_backoff=retry_backoff,
                                               pin_memory=False))
            except DataError:
                raise DataError(f"tokens.mix group {key!r} ({len(docs)} documents, {sub.num_tokens} tokens) holds "
                                f"fewer than one training sequence of seq_len + 1 = {seq_len + 1} tokens; give it "
                                "weight 0, add text, or lower model.block_size") from None
        self.num_windows = int(sum(g.num_windows for g in self.groups if g is not None))
        self.step = 0
        self.wait_time = 0.0
        self._lock = threading.Lock()
        self._counts: dict[int, np.ndarray] = {0: np.zeros(len(self.keys), dtype=np.int64)}
        self._prefetcher: Prefetcher | None = None

    # ------------------------------------------------------------------ budgets and progress
    @property
    def tokens_per_epoch(self) -> int:
        return self.num_windows * self.seq_len

    @property
    def epoch(self) -> float:
        """Sequences taken / sequences of all groups (each group has its own epochs: `mix_metrics`)."""
        return self.step * self.batch_size * self.world_size / max(1, self.num_windows)

    def counts_before(self, step: int) -> np.ndarray:
        """Sequences taken from each group before `step` (all ranks together)."""
        with self._lock:
            known = max(s for s in self._counts if s <= step)
            c = self._counts[known].copy()
            n = self.batch_size * self.world_size
            for s in range(known, step):
                c += allocate(c, self.weights, s, n)
            if len(self._counts) > 64:
                for s in sorted(self._counts)[1:-32]:
                    self._counts.pop(s)
            self._counts[step] = c.copy()
            return c

    def mix_metrics(self) -> dict[str, float]:
        """`mix/<group>/tokens` (sequences x seq_len, all ranks) and `mix/<group>/epoch` so far."""
        c = self.counts_before(self.step)
        out: dict[str, float] = {}
        for g, key in enumerate(self.keys):
            out[f"mix/{key}/tokens"] = int(c[g]) * self.seq_len
            loader = self.groups[g]
            out[f"mix/{key}/epoch"] = c[g] / loader.num_windows if loader is not None else 0.0
        return out

    def mix_summary(self) -> dict[str, float]:
        return self.mix_metrics()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "kind": "mixture", "step": self.step,
                "consumed": self.step * self.batch_size * self.world_size,
                "taken": [int(x) for x in self.counts_before(self.step)], "groups": self.keys,
                "weights": [float(x) for x in self.weights],
                "windows": [g.num_windows if g else 0 for g in self.groups],
                "seed": self.seed, "world_size": self.world_size, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "packing": self.packing_name, "shuffle": self.shuffle, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        if state.get("kind") != "mixture":
            raise LmforgeError("loader state does not match this run: the checkpoint was trained without tokens.mix; "
                               "resume with the same tokens settings or start a new run")
        for key in ("groups", "weights", "windows", "seed", "seq_len", "packing", "shuffle"):
            if state.get(key) != mine[key]:
                raise LmforgeError(f"loader state does not match this run: tokens.mix {key} was {state.get(key)!r}, "
                                   f"now {mine[key]!r}; resume with the same settings or start a new run")
        per_step = self.batch_size * self.world_size
        if state["consumed"] % per_step or state["batch_size"] * state["world_size"] != per_step:
            raise LmforgeError("cannot resume a tokens.mix run with another global batch (train.batch_size x "
                               "processes): the per-group allocation depends on it")
        self._stop_thread()
        self.step = state["consumed"] // per_step
        with self._lock:
            self._counts = {0: np.zeros(len(self.keys), dtype=np.int64),
                            self.step: np.asarray(state["taken"], dtype=np.int64)}

    # ------------------------------------------------------------------ batches
    def _slots(self, step: int) -> list[tuple[int, int]]:
        """(group, index in the group's stream) for this rank's B slots of `step`."""
        n = self.batch_size * self.world_size
        prev = self.counts_before(step)
        per_group = allocate(prev, self.weights, step, n)
        labels = np.repeat(np.arange(len(self.keys)), per_group)
        labels = np.random.default_rng([self.seed, step, 0x6D6978]).permutation(labels)
        out = []
        for b in range(self.batch_size):
            j = b * self.world_size + self.rank
            g = int(labels[j])
            out.append((g, int(prev[g]) + int(np.count_nonzero(labels[:j] == g))))
        return out

    def make_batch(self, step: int) -> Any:
        T = self.seq_len
        toks = np.empty((self.batch_size, T + 1), dtype=np.int64)
        docs = np.empty((self.batch_size, T + 1), dtype=np.int64)
        valid = np.empty((self.batch_size, T + 1), dtype=bool)
        for row, (g, k) in enumerate(self._slots(step)):
            src = self.groups[g]
            epoch, i = divmod(k, src.num_windows)
            toks[row], docs[row], valid[row] = src._read(int(src._perm(epoch)[i]))
        vocab = self.dataset.vocab_size
        if vocab and toks.max() >= vocab:  # corrupt bytes that kept the file size; cheap per batch
            raise DataError(f"token shards of split {self.dataset.split!r}: token id {int(toks.max())} >= vocabulary "
                            f"size {vocab} (corrupted); delete the tokens directory and rerun `lmforge tokenize`")
        targets = np.where(valid[:, 1:], toks[:, 1:], IGNORE_INDEX)
        return Batch(torch.from_numpy(toks[:, :-1].copy()), torch.from_numpy(targets),
                     torch.from_numpy(docs[:, :-1].copy()) if self.doc_masks else None)

    def __iter__(self) -> MixtureLoader:
        return self

    def __next__(self) -> Any:
        import time

        t0 = time.perf_counter()
        batch = self._next_prefetched() if self.prefetch > 0 else self.make_batch(self.step)
        self.wait_time += time.perf_counter() - t0
        self.step += 1
        return batch

    # ------------------------------------------------------------------ prefetch thread
    def _next_prefetched(self) -> Any:
        if self._prefetcher is None or self._prefetcher.finished:  # after an error or the end: start again
            self._prefetcher = Prefetcher(self.make_batch, self.step, self.prefetch, "lmforge-mix-prefetch")
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


def mixture_loader(tokens_dir: Any, dataset: TokenDataset, tokens_cfg: Any, **kw: Any) -> MixtureLoader:
    """The training loader for `tokens.mix` over RUN_DIR/tokens (kw: seq_len, batch_size, seed, rank, ...)."""
    from lmforge.tokens.loader import loader_options
    from lmforge.tokens.shards import read_manifest

    names, ids = read_sources(tokens_dir, dataset.split, read_manifest(tokens_dir), dataset.num_docs)
    return MixtureLoader(dataset, ids, names, dict(tokens_cfg.mix), field=tokens_cfg.mix_field,
                         **loader_options(tokens_cfg), **kw)
