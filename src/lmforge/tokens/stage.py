"""Stage 3 body: stream clean documents, encode them in batches (optionally in worker processes),
split train/val (`tokens.split`: a hash of the document id, or each source's tail) and write
token shards + `manifest.json`.

Memory stays flat in corpus size: documents are read as a stream, at most `2 * workers` batches of
`batch_bytes` text are in flight, and shard writers keep only the current shard's offsets.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.document import iter_clean_documents
from lmforge.errors import DataError
from lmforge.io import atomic_write_json
from lmforge.tokenizer.core import Tokenizer, load_tokenizer
from lmforge.tokens.config import TokensConfig
from lmforge.tokens.format import HEADER, ShardHeader, dtype_for_vocab, write_shard
from lmforge.tokens.shards import MANIFEST, TokenShardWriter, split_summary
from lmforge.tokens.split import routed_documents, split_hash

_worker_tok: Tokenizer | None = None


def encode_docs(tok: Tokenizer, texts: list[str], add_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch; returns (flat uint32 tokens with <bos>?/<eos> per doc, per-doc lengths)."""
    if tok.kind in ("byte", "char"):
        ids = [tok.encode_array(t) for t in texts]
    else:
        ids = tok.encode_batch(texts)
    extra = 1 + int(add_bos)
    lengths = np.fromiter((len(x) + extra for x in ids), dtype=np.int64, count=len(ids))
    flat = np.empty(int(lengths.sum()), dtype=np.uint32)
    pos = 0
    for x in ids:  # one slice assignment per document (numpy converts the list in C)
        if add_bos:
            flat[pos] = tok.bos_id
        flat[pos + extra - 1: pos + extra - 1 + len(x)] = x
        pos += len(x) + extra
        flat[pos - 1] = tok.eos_id
    return flat, lengths


def _init_worker(tokenizer_file: str) -> None:
    global _worker_tok
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the processes are the parallelism; no oversubscription
    _worker_tok = load_tokenizer(tokenizer_file)


def _encode_in_worker(texts: list[str], add_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    return encode_docs(_worker_tok, texts, add_bos)


def _batches(data_dir: Path, cfg: TokensConfig) -> Iterator[tuple[list[str], list[str], list[int]]]:
    """(ids, texts, utf8 sizes) batches of about `cfg.batch_bytes` bytes of text. An id is a
    (document id, split) pair: the split is None when the hash decides (`tokens.split`)."""
    ids: list = []
    texts: list[str] = []
    sizes: list[int] = []
    total = 0
    for doc, split in routed_documents(lambda: iter_clean_documents(data_dir), cfg):
        n = len(doc.text.encode("utf-8", "surrogatepass"))
        ids.append((doc.id, split))
        texts.append(doc.text)
        sizes.append(n)
        total += n
        if total >= cfg.batch_bytes:
            yield ids, texts, sizes
            ids, texts, sizes, total = [], [], [], 0
    if ids:
        yield ids, texts, sizes


class _Splitter:
    """Routes encoded documents to the train/val writers; remembers the train document with the
    smallest hash so a corpus whose hashes put nothing in val can still get one val document."""

    def __init__(self, cfg: TokensConfig, writers: dict[str, TokenShardWriter]) -> None:
        self.cfg, self.writers = cfg, writers
        self.best: tuple[float, int, int, np.ndarray, int] | None = None
        self.docs = {"train": 0, "val": 0}

    def add(self, doc_ids: list[tuple[str, str | None]], sizes: list[int], flat: np.ndarray,
            lengths: np.ndarray) -> None:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for i, (doc_id, given) in enumerate(doc_ids):
            h = split_hash(doc_id, self.cfg.split_seed)
            split = given or ("val" if h < self.cfg.val_fraction else "train")
            toks = flat[starts[i]: starts[i + 1]]
            shard, n = self.writers[split].add(toks, sizes[i])
            self.docs[split] += 1
            if split == "train" and given is None and (self.best is None or h < self.best[0]):
                self.best = (h, shard, n, toks.copy(), sizes[i])


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


def _encoded(cfg: TokensConfig, tok: Tokenizer, data_dir: Path,
             pool: ProcessPoolExecutor | None) -> Iterator[tuple[list, list, np.ndarray, np.ndarray]]:
    """Encoded batches in corpus order; with a pool, at most 2 * workers batches are in flight."""
    if pool is None:
        for ids, texts, sizes in _batches(data_dir, cfg):
            yield ids, sizes, *encode_docs(tok, texts, cfg.add_bos)
        return
    pending: deque = deque()
    for ids, texts, sizes in _batches(data_dir, cfg):
        pending.append((ids, sizes, pool.submit(_encode_in_worker, texts, cfg.add_bos)))
        if len(pending) >= 2 * cfg.workers:
            ids0, sizes0, res = pending.popleft()
            yield ids0, sizes0, *res.result()
    while pending:
        ids0, sizes0, res = pending.popleft()
        yield ids0, sizes0, *res.result()


def _encode_all(cfg: TokensConfig, tok: Tokenizer, data_dir: Path, splitter: _Splitter, progress: bool) -> int:
    """Encode the corpus into the splitter's writers; returns the UTF-8 bytes read."""
    from tqdm import tqdm

    pool, nbytes = None, 0
    if cfg.workers > 1:  # spawn: safe with the tokenizers thread pool; one rayon thread per worker
        pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(str(tok.path),))
    bar = tqdm(desc="tokenize", unit="B", unit_scale=True, unit_divisor=1000, disable=not progress)
    try:
        for ids, sizes, flat, lengths in _encoded(cfg, tok, data_dir, pool):
            splitter.add(ids, sizes, flat, lengths)
            nbytes += sum(sizes)
            bar.update(sum(sizes))
    except BaseException as e:
        for w in splitter.writers.values():
            w.abort()
        if isinstance(e, BrokenProcessPool):
            raise DataError(f"tokenize: an encoding worker process died ({e}); the machine may be out of memory, or "
                            "the calling script cannot be re-imported by `spawn` (guard it with "
                            "`if __name__ == '__main__':`); set tokens.workers=1 to encode in-process") from e
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return nbytes


def _manifest(cfg: TokensConfig, tok: Tokenizer, train: list, val: list, moved: bool, nbytes: int,
              elapsed: float) -> dict[str, Any]:
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
                  "peak_rss_mb": rss(resource.RUSAGE_SELF), "peak_rss_workers_mb": rss(resource.RUSAGE_CHILDREN)},
    }
    # bytes of text per token, specials excluded: the tokenizer's compression on held-out text
    manifest["val_bytes_per_token"] = manifest["splits"]["val"]["bytes_per_token"]
    return manifest


def run_tokenize_stage(cfg: TokensConfig, data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, *,
                       progress: bool = True) -> dict[str, Any]:
    """Stage 3: clean documents -> train/val token shards + manifest.json. Returns the manifest."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tok = load_tokenizer(tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {s: TokenShardWriter(out_dir, s, shard_tokens=cfg.shard_tokens, fingerprint=tok.fingerprint,
                                   vocab_size=tok.vocab_size) for s in ("train", "val")}
    splitter = _Splitter(cfg, writers)
    t0 = time.perf_counter()
    nbytes = _encode_all(cfg, tok, data_dir, splitter, progress)
    train, val = writers["train"].close(), writers["val"].close()
    total_docs = splitter.docs["train"] + splitter.docs["val"]
    if total_docs == 0:
        raise DataError(f"no clean documents in {data_dir}: run the data stage first and check data/report.md")
    moved = False
    # guarantee a validation document, chosen by the same hash order (hash split only)
    if not val and total_docs >= 2 and splitter.best is not None:
        _, shard, doc_no, toks, size = splitter.best
        writers["val"].add(toks, size)
        val = writers["val"].close()
        if not _remove_doc(out_dir, train[shard], doc_no, size, tok.fingerprint, tok.vocab_size):
            train.pop(shard)
        moved = True
    manifest = _manifest(cfg, tok, train, val, moved, nbytes, time.perf_counter() - t0)
    atomic_write_json(out_dir / MANIFEST, manifest)
    if progress:
        sp = manifest["splits"]
        print(f"tokenize: train {sp['train']['docs']} docs / {sp['train']['tokens']} tokens, val {sp['val']['docs']} "
              f"docs / {sp['val']['tokens']} tokens; val bytes per token {manifest['val_bytes_per_token']}; "
              f"{manifest['stats']['mb_per_s']} MB/s", file=sys.stderr)
    return manifest
