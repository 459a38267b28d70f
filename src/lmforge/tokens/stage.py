"""Stage 3: stream clean documents, encode them in batches, split train/val by a hash of the document
id and write token shards + `manifest.json`.

The stage runs as `tokens.ranks` rank tasks on `tokens.executor` (local processes, Ray tasks or a Slurm
array, like the data stage): clean shard i goes to rank i % ranks, which writes that shard's train and
val token shards in its folder (`OUT/_work/rank-R/`) with a completion marker. The merge renames them,
in clean-shard order, to `train-NNNNN` / `val-NNNNN` and writes the manifest, so the tokens and the
split are identical for any number of ranks. Inside a rank, `tokens.workers` > 1 encodes in that many
processes; with 1, two threads of this process encode (HF tokenizers' own thread pool) while this one
reads and writes.

Memory stays flat in corpus size: documents are read as a stream, at most two batches of
`batch_bytes` text per encoding thread or process are in flight (across the ends of clean shards,
so the encoders never wait for a shard's last batch), and shard writers keep only the current
shard's offsets.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.configtools import fingerprint
from lmforge.data.document import clean_shards, read_shard
from lmforge.data.executors import RankJob, run_job
from lmforge.data.executors.base import mark_reading, usable_cores
from lmforge.errors import DataError
from lmforge.io import atomic_write_json, is_complete, write_marker
from lmforge.tokenizer.core import Tokenizer, load_tokenizer
from lmforge.tokens.config import TokensConfig
from lmforge.tokens.format import HEADER, ShardHeader, dtype_for_vocab, write_shard
from lmforge.tokens.shards import MANIFEST, SPLITS, TokenShardWriter, split_summary
from lmforge.tokens.sources import SourceTags
from lmforge.tokens.split import routed_documents, split_hashes

WORK = "_work"
_worker_tok: Tokenizer | None = None


def encode_docs(tok: Tokenizer, texts: list[str], add_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch; returns (flat uint32 tokens with <bos>?/<eos> per doc, per-doc lengths)."""
    table = tok.kind in ("byte", "char")  # numpy arrays from a lookup table, else HF's lists
    ids = [tok.encode_array(t) for t in texts] if table else tok.encode_batch(texts)
    extra = 1 + int(add_bos)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + extra
    flat = np.empty(int(lengths.sum()), dtype=np.uint32)
    ends = np.cumsum(lengths)
    special = np.zeros(len(flat), dtype=bool)
    special[ends - 1] = True
    flat[ends - 1] = tok.eos_id
    if add_bos:
        special[ends - lengths] = True
        flat[ends - lengths] = tok.bos_id
    if table:
        flat[~special] = np.concatenate(ids) if ids else []
    else:  # all the lists at once, in C: half the time of a slice assignment per document
        flat[~special] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint32,
                                     count=len(flat) - extra * len(ids))
    return flat, lengths


def _init_worker(tokenizer_file: str) -> None:
    global _worker_tok
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism; no oversubscription
    _worker_tok = load_tokenizer(tokenizer_file)


def _encode_in_worker(texts: list[str], add_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    return encode_docs(_worker_tok, texts, add_bos)


def _batches(unit: list[Path], cfg: TokensConfig, tags: SourceTags) -> Iterator[tuple[list, list[str], list[int]]]:
    """(ids, texts, utf8 sizes) batches of about `cfg.batch_bytes` bytes of text from one unit of clean
    shards. An id is (document id, split or None when the hash decides, source tag for tokens.mix)."""
    ids: list[tuple[str, str | None, int]] = []
    texts: list[str] = []
    sizes: list[int] = []
    total = 0
    for doc, split in routed_documents(lambda: (d for shard in unit for d in read_shard(shard)), cfg):
        n = len(doc.text) if doc.text.isascii() else len(doc.text.encode("utf-8", "surrogatepass"))
        ids.append((doc.id, split, tags.tag(doc.meta)))
        texts.append(doc.text)
        sizes.append(n)
        total += n
        if total >= cfg.batch_bytes:
            yield ids, texts, sizes
            ids, texts, sizes, total = [], [], [], 0
    if ids:
        yield ids, texts, sizes


class _Splitter:
    """Routes encoded documents to the train/val writers (the split given, else by hash); remembers the
    train document with the smallest hash so a corpus whose hashes put nothing in val can still get one
    val document."""

    def __init__(self, cfg: TokensConfig, writers: dict[str, TokenShardWriter], tags: SourceTags) -> None:
        self.cfg, self.writers, self.tags = cfg, writers, tags
        self.best: tuple[float, int, int, int] | None = None  # (hash, shard, doc, bytes)
        self.docs = {"train": 0, "val": 0}

    def add(self, doc_ids: list[tuple[str, str | None, int]], sizes: list[int], flat: np.ndarray,
            lengths: np.ndarray) -> None:
        hashes = split_hashes((d for d, _, _ in doc_ids), self.cfg.split_seed)
        given = [g for _, g, _ in doc_ids]
        split = np.array([g or ("val" if h < self.cfg.val_fraction else "train") for g, h in zip(given, hashes)])
        sizes_a, tags = np.asarray(sizes, dtype=np.int64), [t for _, _, t in doc_ids]
        for name in SPLITS:
            mine = split == name
            if not mine.any():
                continue
            idx = np.flatnonzero(mine)
            shard, doc = self.writers[name].add_many(flat[np.repeat(mine, lengths)], lengths[idx], sizes_a[idx])
            self.tags.extend(name, [tags[i] for i in idx])
            self.docs[name] += len(idx)
            if name == "train":  # the train document with the smallest hash, for a val split left empty
                free = np.array([given[i] is None for i in idx])
                if free.any():
                    k = int(np.argmin(np.where(free, hashes[idx], np.inf)))
                    if self.best is None or hashes[idx[k]] < self.best[0]:
                        self.best = (float(hashes[idx[k]]), int(shard[k]), int(doc[k]), int(sizes_a[idx[k]]))


def _remove_doc(out_dir: Path, rec: dict[str, Any], doc_no: int, nbytes: int, fp: str, vocab: int) -> bool:
    """Rewrite shard `rec` without document `doc_no`; returns False when the shard became empty
    (its files are then deleted)."""
    bin_path, idx_path = out_dir / f"{rec['name']}.bin", out_dir / f"{rec['name']}.idx"
    dtype = dtype_for_vocab(vocab)
    tokens = np.fromfile(bin_path, dtype=dtype)
    offsets = np.fromfile(idx_path, dtype="<i8", offset=HEADER.size)
    a, b = int(offsets[doc_no]), int(offsets[doc_no + 1])
    tokens = np.concatenate([tokens[:a], tokens[b:]])
    offsets = np.concatenate([offsets[: doc_no + 1], offsets[doc_no + 2:] - (b - a)])
    if len(tokens) == 0:
        bin_path.unlink()
        idx_path.unlink()
        return False
    header = ShardHeader(dtype.itemsize, len(tokens), len(offsets) - 1, fp, vocab)
    write_shard(bin_path, idx_path, tokens, offsets, header)
    from lmforge.io import sha256_file

    rec.update(tokens=len(tokens), docs=len(offsets) - 1, bytes=rec["bytes"] - nbytes,
               sha256_bin=sha256_file(bin_path), sha256_idx=sha256_file(idx_path))
    return True


def _doc_tokens(out_dir: Path, rec: dict[str, Any], doc_no: int, vocab: int) -> np.ndarray:
    offsets = np.fromfile(out_dir / f"{rec['name']}.idx", dtype="<i8", offset=HEADER.size)
    tokens = np.fromfile(out_dir / f"{rec['name']}.bin", dtype=dtype_for_vocab(vocab))
    return tokens[int(offsets[doc_no]): int(offsets[doc_no + 1])].copy()


def _threads() -> int:
    """Encoding threads of an in-process rank: its share of the cores (RAYON_NUM_THREADS, which the
    executors set per rank and a user may set), else every core it may use."""
    try:
        return max(1, int(os.environ["RAYON_NUM_THREADS"]))
    except (KeyError, ValueError):
        return usable_cores()


def _in_flight(cfg: TokensConfig) -> int:
    return 2 * (_threads() if cfg.workers == 1 else cfg.workers)  # two batches per encoding thread or process


def _encoded(cfg: TokensConfig, tok: Tokenizer, units: list[tuple[int, list[Path]]], pool: Executor,
             tags: dict[int, SourceTags], work_dir: Path) -> Iterator[tuple[int, list, list, np.ndarray, np.ndarray]]:
    """(unit, ids, sizes, tokens, lengths) batches in corpus order over all of a rank's units, at most
    `_in_flight` batches in the pool: reading, splitting and writing here overlap with encoding, also
    across the end of one unit and the start of the next. `tags[unit]` is created as the unit is read."""

    def read() -> Iterator[tuple[int, list, list[str], list[int]]]:
        for i, unit in units:
            mark_reading(work_dir, ", ".join(str(p) for p in unit))
            tags[i] = SourceTags(cfg.mix_field)
            for ids, texts, sizes in _batches(unit, cfg, tags[i]):
                yield i, ids, texts, sizes

    pending: deque = deque()
    for i, ids, texts, sizes in read():
        if isinstance(pool, ThreadPoolExecutor):
            fut = pool.submit(encode_docs, tok, texts, cfg.add_bos)
        else:
            fut = pool.submit(_encode_in_worker, texts, cfg.add_bos)
        pending.append((i, ids, sizes, fut))
        if len(pending) >= _in_flight(cfg):
            i0, ids0, sizes0, res = pending.popleft()
            yield i0, ids0, sizes0, *res.result()
    while pending:
        i0, ids0, sizes0, res = pending.popleft()
        yield i0, ids0, sizes0, *res.result()


def _pool(cfg: TokensConfig, tok: Tokenizer) -> Executor:
    if cfg.workers == 1:
        # a thread per core, each encoding whole batches (HF's own pool off: `_serial_encoding`); HF
        # releases the GIL while it encodes, so one batch's Encodings are read out under the GIL while
        # the others encode, instead of HF's pool waiting for that at the end of every batch
        return ThreadPoolExecutor(_threads())
    # spawn: safe with the tokenizers thread pool; each worker encodes on one thread
    return ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(str(tok.path),))


@contextlib.contextmanager
def _serial_encoding(on: bool) -> Iterator[None]:
    """HF tokenizers encode a batch on the calling thread while `on` (TOKENIZERS_PARALLELISM=false, which
    it reads at every call; the user's value comes back after). The in-process rank's threads are the
    parallelism, rather than each batch fanned out over HF's pool, which idles while a batch's Encodings
    are built under the GIL: on 2 cores (benchmarks/tokenize_throughput.py, medians of 3 rounds) the
    stage went from 0.82x to 0.95x of raw `encode_batch` on ~190-byte documents, 0.88x to 1.36x on ~3 KB."""
    if not on:
        yield
        return
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _finish_unit(d: Path, i: int, sp: _Splitter, state: dict[str, Any]) -> None:
    state["units"][str(i)] = {s: sp.writers[s].close() for s in SPLITS}
    state["units"][str(i)]["sources"] = sp.tags.save_unit(d, f"{i:05d}")
    for s in SPLITS:
        state["docs"][s] += sp.docs[s]
    if sp.best and (state["best"] is None or sp.best[0] < state["best"][0]):
        state["best"] = [*sp.best[:1], i, *sp.best[1:]]  # (hash, unit, shard, doc, bytes)


def _encode_units(cfg: TokensConfig, tok: Tokenizer, units: list[tuple[int, list[Path]]], d: Path, pool: Executor,
                  bar: Any, state: dict[str, Any]) -> None:
    """Encode the rank's units into token shards in `d`: a train and a val writer per unit, whose
    records go to `state["units"]` (a unit without documents gets empty ones)."""
    tags: dict[int, SourceTags] = {}
    new = lambda i: _Splitter(cfg, {s: TokenShardWriter(d, f"{s}-{i:05d}", shard_tokens=cfg.shard_tokens,  # noqa: E731
                                                        fingerprint=tok.fingerprint, vocab_size=tok.vocab_size)
                                    for s in SPLITS}, tags.setdefault(i, SourceTags(cfg.mix_field)))
    cur, splitter = None, None
    try:
        for i, ids, sizes, flat, lengths in _encoded(cfg, tok, units, pool, tags, d):
            if i != cur:
                if splitter is not None:
                    _finish_unit(d, cur, splitter, state)
                cur, splitter = i, new(i)
            splitter.add(ids, sizes, flat, lengths)
            state["bytes"] += sum(sizes)
            bar.update(sum(sizes))
        if splitter is not None:
            _finish_unit(d, cur, splitter, state)
    except BaseException as e:
        if splitter is not None:
            for w in splitter.writers.values():
                w.abort()
        if isinstance(e, BrokenProcessPool):
            raise DataError(f"tokenize: an encoding worker process died ({e}); the machine may be out of memory, or "
                            "the calling script cannot be re-imported by `spawn` (guard it with "
                            "`if __name__ == '__main__':`); set tokens.workers=1 to encode in-process") from e
        raise
    for i, _ in units:
        if str(i) not in state["units"]:
            _finish_unit(d, i, new(i), state)


def _rank_dir(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / WORK / f"rank-{rank:05d}"


def _units(cfg: TokensConfig, shards: list[Path]) -> list[list[Path]]:
    """The work units, in corpus order (unit i goes to rank i % ranks): one per clean shard, or the
    whole corpus as one unit for a tail split (it needs each source's length before the first cut)."""
    return [shards] if cfg.val_split == "tail" else [[s] for s in shards]


def _task_fingerprint(cfg: TokensConfig, shards: list[Path], tok: Tokenizer, rank: int, world: int) -> str:
    mine = [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
            for i, unit in enumerate(_units(cfg, shards)) if i % world == rank for p in unit]
    return fingerprint(cfg, tok.fingerprint, len(shards), mine, rank, world)


def run_tokenize_task(cfg: TokensConfig, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, *,
                      rank: int, world_size: int, progress: bool = False) -> bool:
    """Rank `rank` of `world_size`: encode the work units i % world_size == rank (`_units`) into token
    shards in the rank's folder. Returns False when the rank was already complete."""
    from tqdm import tqdm

    shards, tok, d = clean_shards(data_dir), load_tokenizer(tokenizer_dir), _rank_dir(Path(out_dir), rank)
    fp = _task_fingerprint(cfg, shards, tok, rank, world_size)
    if is_complete(d, fp):
        return False
    shutil.rmtree(d, ignore_errors=True)  # a crashed attempt: start the rank again
    d.mkdir(parents=True)
    state: dict[str, Any] = {"units": {}, "best": None, "bytes": 0, "docs": {"train": 0, "val": 0}}
    pool = _pool(cfg, tok)
    bar = tqdm(desc=f"tokenize rank {rank}" if world_size > 1 else "tokenize", unit="B", unit_scale=True,
               unit_divisor=1000, disable=not progress, file=sys.stderr)
    try:
        mine = [(i, unit) for i, unit in enumerate(_units(cfg, shards)) if i % world_size == rank]
        with _serial_encoding(cfg.workers == 1):
            _encode_units(cfg, tok, mine, d, pool, bar, state)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    state["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    atomic_write_json(d / "state.json", state)
    write_marker(d, fp, rank=rank, world_size=world_size)
    return True


def _collect(out_dir: Path, states: list[dict[str, Any]], world: int) -> tuple[dict[str, list], dict]:
    """Move every rank's shards into `out_dir` as train-NNNNN / val-NNNNN, in clean-shard order.
    Returns the records per split and where each (unit, split, shard) went."""
    owner = {int(u): r for r, st in enumerate(states) for u in st["units"]}
    recs: dict[str, list] = {s: [] for s in SPLITS}
    where: dict[tuple[int, str, int], int] = {}
    for u in sorted(owner):
        src = _rank_dir(out_dir, owner[u])
        for s in SPLITS:
            for k, rec in enumerate(states[owner[u]]["units"][str(u)][s]):
                name = f"{s}-{len(recs[s]):05d}"
                for ext in (".bin", ".idx"):
                    os.replace(src / f"{rec['name']}{ext}", out_dir / f"{name}{ext}")
                where[(u, s, k)] = len(recs[s])
                recs[s].append({**rec, "name": name})
    return recs, where


def merge_tokenize_tasks(cfg: TokensConfig, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path,
                         world_size: int, *, progress: bool = True, started: float | None = None) -> dict[str, Any]:
    """Needs every rank's marker: moves the ranks' shards into place, guarantees a val document and
    writes the manifest (returned)."""
    out_dir, tok, shards = Path(out_dir), load_tokenizer(tokenizer_dir), clean_shards(data_dir)
    dirs = [_rank_dir(out_dir, r) for r in range(world_size)]
    missing = [r for r, d in enumerate(dirs) if not is_complete(d, _task_fingerprint(cfg, shards, tok, r, world_size))]
    if missing:
        raise DataError(f"tokenize ranks {missing} of {world_size} have not finished (or ran with another config)")
    states = [json.loads((d / "state.json").read_text()) for d in dirs]
    recs, where = _collect(out_dir, states, world_size)
    tags = SourceTags(cfg.mix_field)  # each document's source, in the merged shards' order (as _collect)
    owner = {int(u): r for r, st in enumerate(states) for u in st["units"]}
    for u in sorted(owner):
        tags.merge_unit(dirs[owner[u]], f"{u:05d}", states[owner[u]]["units"][str(u)]["sources"])
    total_docs = sum(st["docs"]["train"] + st["docs"]["val"] for st in states)
    if total_docs == 0:
        raise DataError(f"no clean documents in {data_dir}: run the data stage first and check data/report.md")
    moved = False
    # hash split: guarantee a validation document, chosen by the same hash order
    if not recs["val"] and total_docs >= 2 and any(st["best"] for st in states):
        _, unit, shard, doc_no, size = min(st["best"] for st in states if st["best"])
        pos = where[(unit, "train", shard)]
        rec = recs["train"][pos]
        tags.move("train", sum(r["docs"] for r in recs["train"][:pos]) + doc_no, "val")
        writer = TokenShardWriter(out_dir, "val", shard_tokens=cfg.shard_tokens, fingerprint=tok.fingerprint,
                                  vocab_size=tok.vocab_size)
        writer.add(_doc_tokens(out_dir, rec, doc_no, tok.vocab_size), size)
        recs["val"] = writer.close()
        if not _remove_doc(out_dir, rec, doc_no, size, tok.fingerprint, tok.vocab_size):
            recs["train"].remove(rec)
        moved = True
    elapsed = time.time() - started if started is not None else 0.0
    manifest = _manifest(cfg, tok, recs["train"], recs["val"], moved, sum(st["bytes"] for st in states), elapsed,
                         max(st["peak_rss_mb"] for st in states))
    manifest["sources"] = tags.write(out_dir)  # per-document source, for tokens.mix
    atomic_write_json(out_dir / MANIFEST, manifest)
    shutil.rmtree(out_dir / WORK, ignore_errors=True)
    return manifest


def _manifest(cfg: TokensConfig, tok: Tokenizer, train: list, val: list, moved: bool, nbytes: int,
              elapsed: float, rank_rss_mb: float) -> dict[str, Any]:
    overhead = 1 + int(cfg.add_bos)
    # Linux, KiB. RUSAGE_CHILDREN = the largest finished child (the workers; a forked child starts
    # at its parent's size before exec, so this is an upper bound)
    rss = lambda who: round(resource.getrusage(who).ru_maxrss / 1024, 1)
    manifest = {
        "format": "lmforge-tokens", "version": 1, "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size, "dtype": str(dtype_for_vocab(tok.vocab_size).name),
        "eos_id": tok.eos_id, "bos_id": tok.bos_id, "pad_id": tok.pad_id, "add_bos": cfg.add_bos,
        "val_fraction": cfg.val_fraction, "val_split": cfg.val_split, "split_seed": cfg.split_seed,
        "val_doc_forced": moved,
        "splits": {"train": split_summary(train, overhead), "val": split_summary(val, overhead)},
        "stats": {"elapsed_s": round(elapsed, 3), "bytes": nbytes,
                  "mb_per_s": round(nbytes / 1e6 / max(elapsed, 1e-9), 3), "workers": cfg.workers,
                  "ranks": cfg.ranks, "executor": cfg.executor, "rank_peak_rss_mb": round(rank_rss_mb, 1),
                  "peak_rss_mb": rss(resource.RUSAGE_SELF), "peak_rss_workers_mb": rss(resource.RUSAGE_CHILDREN)},
    }
    # bytes of text per token, specials excluded: the tokenizer's compression on held-out text
    manifest["val_bytes_per_token"] = manifest["splits"]["val"]["bytes_per_token"]
    return manifest


def tokenize_job(cfg: TokensConfig, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, *,
                 progress: bool) -> RankJob:
    """The tokenize stage as a RankJob: `tokens.ranks` rank tasks, then the merge."""
    world, local = cfg.ranks, cfg.executor == "local"
    args = (cfg, str(data_dir), str(tokenizer_dir), str(out_dir))
    merge = functools.partial(merge_tokenize_tasks, *args, world, progress=progress and local, started=time.time())
    return RankJob("tokenize", run_tokenize_task, args, world, merge, (), Path(out_dir) / WORK, progress=progress,
                   kwargs={"progress": progress and local and world == 1})


def run_tokenize_stage(cfg: TokensConfig, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, *,
                       progress: bool = True) -> dict[str, Any]:
    """Stage 3: clean documents -> train/val token shards + manifest.json, as `cfg.ranks` rank tasks on
    `cfg.executor`. Returns the manifest."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    load_tokenizer(tokenizer_dir)  # a missing tokenizer is named here, before any task starts
    if not clean_shards(data_dir):
        raise DataError(f"no clean documents in {data_dir}: run the data stage first and check data/report.md")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = run_job(tokenize_job(cfg, data_dir, tokenizer_dir, out_dir, progress=progress), cfg.executor,
                       ray=cfg.ray, slurm=cfg.slurm, workers=cfg.ranks)
    if progress:
        sp = manifest["splits"]
        print(f"tokenize: train {sp['train']['docs']} docs / {sp['train']['tokens']} tokens, val {sp['val']['docs']} "
              f"docs / {sp['val']['tokens']} tokens; val bytes per token {manifest['val_bytes_per_token']}; "
              f"{manifest['stats']['mb_per_s']} MB/s", file=sys.stderr)
    return manifest
