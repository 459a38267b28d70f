"""Dedup decisions from signatures on disk, in memory proportional to the duplicates (datatrove's
signatures → buckets → clusters, on sorted files).

Rank phase: `SignatureWriter` buffers, per band, (key, order) records — `order` is the document's
global input position, `encode_order(meta["_o"])` — and writes each full buffer as a sorted run
`sig-bBB-RRRRR.bin` (little-endian uint64 pairs, written to `.tmp` then renamed) in the rank's work
folder. Exact dedup is one more "band" whose key is 64 bits of the normalised-text hash.

Merge phase: `dedup_decisions` k-way merges every run of a band in chunks (memory: a chunk per run
plus the key groups that straddle chunks), and in each key group every document but the earliest
gets a link to that earliest document; a document keeps the link of its lowest band. The links
form a forest whose roots are kept: a duplicate's cluster is its first link's cluster, so
`duplicate_of` names the cluster's first document in input order. This reproduces exactly the
in-memory decisions of `NearDedup` / `ExactDedup`: a document is a duplicate when it shares a band
with any earlier document, and joins the cluster of the first such band.

`Decisions` answers in stream order with two pointers into sorted arrays (16 bytes per duplicate
plus the ids of the clusters' first documents); building it holds one band's links at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lmforge.errors import DataError

REC = np.dtype([("key", "<u8"), ("order", "<u8")])
_N_BITS = 40  # record number within a source: up to 2^40; sources up to 2^24
EXACT_BAND = 99  # file band number of the exact-dedup hash (near bands are 0 … bands-1)


def encode_order(o: Sequence[int]) -> int:
    """(source index, record number) → one integer increasing with the input order."""
    src, n = int(o[0]), int(o[1])
    if src >= 1 << (64 - _N_BITS) or n >= 1 << _N_BITS:
        raise DataError(f"dedup: input {src} record {n} is beyond the supported {1 << (64 - _N_BITS)} inputs "
                        f"x {1 << _N_BITS} records each; split the corpus into several runs")
    return src << _N_BITS | n


class SignatureWriter:
    """Collects (order, keys[bands]) of one rank; writes sorted runs of `buffer_docs` documents."""

    def __init__(self, work_dir: Path, bands: Sequence[int], buffer_docs: int = 1 << 16) -> None:
        self.dir, self.bands, self.cap = Path(work_dir), list(bands), buffer_docs
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys = np.empty((buffer_docs, len(self.bands)), np.uint64)
        self.orders = np.empty(buffer_docs, np.uint64)
        self.n = self.runs = 0

    def add(self, order: int, keys: Sequence[int]) -> None:
        self.keys[self.n] = keys
        self.orders[self.n] = order
        self.n += 1
        if self.n == self.cap:
            self.flush()

    def flush(self) -> None:
        if self.n == 0:
            return
        orders = self.orders[:self.n]
        for j, band in enumerate(self.bands):
            rec = np.empty(self.n, REC)
            rec["key"], rec["order"] = self.keys[:self.n, j], orders
            rec = rec[np.lexsort((rec["order"], rec["key"]))]
            path = self.dir / f"sig-b{band:02d}-{self.runs:05d}.bin"
            tmp = path.with_name(path.name + ".tmp")
            rec.tofile(tmp)
            os.replace(tmp, path)
        self.runs += 1
        self.n = 0


class _Run:
    """Sequential chunked reader of one sorted run file."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path, self.chunk, self.pos = path, chunk, 0
        self.total = path.stat().st_size // REC.itemsize

    @property
    def done(self) -> bool:
        return self.pos >= self.total

    def read(self) -> np.ndarray:
        n = min(self.chunk, self.total - self.pos)
        rec = np.fromfile(self.path, dtype=REC, count=n, offset=self.pos * REC.itemsize)
        self.pos += n
        return rec


def merged_groups(paths: Sequence[Path], chunk: int = 1 << 16) -> Iterator[np.ndarray]:
    """Records of sorted runs, merged: successive arrays sorted by (key, order), each holding only
    whole key groups (a group is never split across two arrays)."""
    runs = [_Run(p, chunk) for p in paths]
    bufs = [r.read() for r in runs]
    while True:
        live = [i for i, r in enumerate(runs) if not r.done]
        # every record still unread in a live run has key >= its buffer's last key
        bound = min(int(bufs[i]["key"][-1]) for i in live) if live else None
        take = []
        for i, buf in enumerate(bufs):
            cut = len(buf) if bound is None else int(np.searchsorted(buf["key"], np.uint64(bound), "left"))
            take.append(buf[:cut])
            bufs[i] = buf[cut:]
        batch = np.concatenate(take) if take else np.empty(0, REC)
        if batch.size:
            yield batch[np.lexsort((batch["order"], batch["key"]))]
        if bound is None:
            return
        for i in live:  # refill the runs that hold back the bound (and the emptied ones)
            if bufs[i].size == 0 or int(bufs[i]["key"][-1]) == bound:
                bufs[i] = np.concatenate([bufs[i], runs[i].read()])


def band_links(paths: Sequence[Path], chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """(later, first) order pairs of one band: every record but the earliest of its key group,
    linked to the earliest."""
    later, first = [np.empty(0, np.uint64)], [np.empty(0, np.uint64)]
    for g in merged_groups(paths, chunk):
        k, o = g["key"], g["order"]
        starts = np.r_[True, k[1:] != k[:-1]]
        firsts = o[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        dup = ~starts
        if dup.any():
            later.append(o[dup])
            first.append(firsts[dup])
    return np.concatenate(later), np.concatenate(first)


class Decisions:
    """Duplicates in stream order: `root_of(order, doc_id)` → order of the kept document of its
    cluster, or None when the document is kept. Call it for every document, in increasing order."""

    def __init__(self, dups: np.ndarray, roots: np.ndarray) -> None:
        self.dups, self.roots = dups, roots  # dups: (order, root order) sorted; roots: sorted unique
        self.i = self.j = 0
        self.ids: dict[int, str] = {}  # root order -> id, filled as the stream passes the root

    def root_of(self, order: int, doc_id: str) -> int | None:
        r = self.roots
        while self.j < len(r) and r[self.j] < order:
            self.j += 1
        if self.j < len(r) and r[self.j] == order:
            self.ids[order] = doc_id
        d = self.dups
        while self.i < len(d) and d[self.i, 0] < order:
            self.i += 1
        if self.i < len(d) and d[self.i, 0] == order:
            return int(d[self.i, 1])
        return None

    def id_of(self, root: int) -> str:
        """Id of a cluster's kept document (seen earlier in the stream). A root that never reached this
        step (only possible after a 64-bit exact-dedup key collision) is named by its input position."""
        if root in self.ids:
            return self.ids[root]
        return f"input {root >> _N_BITS} record {root & ((1 << _N_BITS) - 1)}"


def dedup_decisions(dirs: Sequence[Path], bands: Sequence[int], chunk: int = 1 << 16) -> Decisions:
    """Read the sorted runs of `bands` in every rank folder and decide which documents are duplicates."""
    lt, ft = np.empty(0, np.uint64), np.empty(0, np.uint64)  # (document, first link), sorted by document
    for band in bands:  # a document keeps the link of its lowest band: later bands only add new documents
        paths = sorted(p for d in dirs for p in Path(d).glob(f"sig-b{band:02d}-*.bin"))
        bl, bf = band_links(paths, chunk)
        order = np.argsort(bl, kind="stable")
        bl, bf = bl[order], bf[order]
        new = ~_member(bl, lt)
        lt, ft = np.concatenate([lt, bl[new]]), np.concatenate([ft, bf[new]])
        order = np.argsort(lt, kind="stable")
        lt, ft = lt[order], ft[order]
    # root of a document = root of its link's target (targets are earlier); pointer jumping
    root = ft.copy()
    while True:
        pos = np.searchsorted(lt, root).clip(max=max(len(lt) - 1, 0))
        linked = (lt[pos] == root) if len(lt) else np.zeros(0, bool)
        if not linked.any():
            break
        root = np.where(linked, root[pos], root)
    return Decisions(np.stack([lt, root], axis=1), np.unique(root))


def _member(x: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """x[i] in sorted_ref, vectorised."""
    if len(sorted_ref) == 0:
        return np.zeros(len(x), bool)
    pos = np.searchsorted(sorted_ref, x).clip(max=len(sorted_ref) - 1)
    return sorted_ref[pos] == x
