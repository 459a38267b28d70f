"""Token shards: the streaming writer and the validated memory-mapped reader.

    train = open_split(run/"tokens", "train", fingerprint=tokenizer.fingerprint)
    train.num_tokens, train.num_docs, train.doc(0), train.read(100, 200)

`manifest.json` lists every shard of each split with its sha256, token, document and UTF-8 byte
counts; `open_split` checks each shard's header, sizes and offsets against it before use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import DataError
from lmforge.io import fsync_dir
from lmforge.tokens.format import HEADER, ShardHeader, dtype_for_vocab, validate_shard

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class TokenShardWriter:
    """Streams documents into `<prefix>-NNNNN.bin/.idx`, starting a new shard once `shard_tokens`
    is reached. Documents never span shards. Files are written as `.tmp` and renamed when complete."""

    def __init__(self, out_dir: Path, prefix: str, *, shard_tokens: int, fingerprint: str, vocab_size: int) -> None:
        self.dir, self.prefix, self.shard_tokens = Path(out_dir), prefix, shard_tokens
        self.fingerprint, self.vocab_size = fingerprint, vocab_size
        self.dtype = dtype_for_vocab(vocab_size)
        self.records: list[dict[str, Any]] = []
        self._f = None

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.records):05d}"
        self._name, self._tmp = name, self.dir / f"{name}.bin.tmp"
        self._f = open(self._tmp, "wb")
        self._sha = hashlib.sha256()
        self._offsets, self._ntok, self._nbytes = [0], 0, 0

    def add(self, tokens: np.ndarray, nbytes: int) -> tuple[int, int]:
        """Append one document's tokens (with its UTF-8 size); returns (shard number, doc number)."""
        shard, doc = self.add_many(np.asarray(tokens), np.array([len(tokens)]), np.array([nbytes]))
        return int(shard[0]), int(doc[0])

    def add_many(self, tokens: np.ndarray, lengths: np.ndarray, nbytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append consecutive documents at once (`tokens` = their tokens back to back, `lengths` and
        `nbytes` per document): the same shards as `add` one by one, one write per shard. Returns the
        (shard number, doc number) of every document."""
        n = len(lengths)
        shards, docs = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        ends = np.cumsum(lengths, dtype=np.int64)
        i = 0
        while i < n:
            if self._f is None:
                self._open()
            base = int(ends[i - 1]) if i else 0
            # the first document after which the shard holds shard_tokens (it is the shard's last one)
            full = np.searchsorted(ends[i:] - base + self._ntok, self.shard_tokens, side="left")
            j = min(i + int(full) + 1, n)
            raw = np.ascontiguousarray(tokens[base: int(ends[j - 1])], dtype=self.dtype).tobytes()
            self._f.write(raw)
            self._sha.update(raw)
            first = len(self._offsets) - 1
            self._offsets.extend((ends[i:j] - base + self._ntok).tolist())
            self._ntok += int(ends[j - 1]) - base
            self._nbytes += int(np.sum(nbytes[i:j]))
            shards[i:j], docs[i:j] = len(self.records), np.arange(first, first + j - i)
            if self._ntok >= self.shard_tokens:
                self._finish()
            i = j
        return shards, docs

    def _finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        header = ShardHeader(self.dtype.itemsize, self._ntok, len(self._offsets) - 1, self.fingerprint, self.vocab_size)
        idx = header.pack() + np.asarray(self._offsets, dtype="<i8").tobytes()
        idx_tmp = self.dir / f"{self._name}.idx.tmp"
        with open(idx_tmp, "wb") as f:
            f.write(idx)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._tmp, self.dir / f"{self._name}.bin")
        os.replace(idx_tmp, self.dir / f"{self._name}.idx")
        self.records.append({"name": self._name, "tokens": self._ntok, "docs": header.num_docs, "bytes": self._nbytes,
                             "sha256_bin": self._sha.hexdigest(), "sha256_idx": hashlib.sha256(idx).hexdigest()})

    def close(self) -> list[dict[str, Any]]:
        if self._f is not None:
            self._finish()
        fsync_dir(self.dir)
        return self.records

    def abort(self) -> None:
        """Drop the shard in progress (no partial file is left behind)."""
        if self._f is not None:
            self._f.close()
            self._tmp.unlink(missing_ok=True)
            self._f = None


class PreadTokens:
    """A shard's tokens read with `os.pread` instead of a memory map. Slower per call, but an I/O
    error (network file system, failing disk) surfaces as a retryable OSError, where a memory map
    would kill the process with SIGBUS."""

    def __init__(self, path: Path, dtype: np.dtype, n: int) -> None:
        self.path, self.dtype, self.n = path, np.dtype(dtype), n
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(self.n)
        want = max(stop - start, 0) * self.dtype.itemsize
        buf = os.pread(self._fd, want, start * self.dtype.itemsize)
        if len(buf) != want:
            raise OSError(f"short read from {self.path}: {len(buf)} of {want} bytes")
        return np.frombuffer(buf, dtype=self.dtype)

    def __del__(self) -> None:
        try:
            os.close(self._fd)
        except (OSError, AttributeError):
            pass


class TokenDataset:
    """The validated, memory-mapped shards of one split, seen as one token stream.

    `doc_starts[i]` is the global token offset of document i (`doc_starts[-1] == num_tokens`).
    """

    def __init__(self, split: str, shards: list[tuple[str, Any, np.ndarray]], *, nbytes: int,
                 fingerprint: str, vocab_size: int) -> None:
        self.split, self.bytes, self.fingerprint, self.vocab_size = split, nbytes, fingerprint, vocab_size
        self.shard_names = [name for name, _, _ in shards]
        self._tokens = [tok for _, tok, _ in shards]
        sizes = np.array([len(t) for t in self._tokens], dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        parts = [offs[:-1].astype(np.int64) + base for (_, _, offs), base in zip(shards, self.shard_starts)]
        self.doc_starts = np.concatenate(parts + [self.shard_starts[-1:]]).astype(np.int64)
        self.num_tokens = int(self.shard_starts[-1])
        self.num_docs = len(self.doc_starts) - 1

    def doc(self, i: int) -> np.ndarray:
        """Tokens of document i (including its <bos>/<eos>)."""
        if not 0 <= i < self.num_docs:
            raise IndexError(f"document {i} out of range (split {self.split!r} has {self.num_docs})")
        return self.read(int(self.doc_starts[i]), int(self.doc_starts[i + 1]))

    def read(self, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) of the split as int64 (may span shards)."""
        if not 0 <= start <= end <= self.num_tokens:
            raise IndexError(f"token range [{start}, {end}) outside split {self.split!r} of {self.num_tokens} tokens")
        first = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        out, pos, s = np.empty(end - start, dtype=np.int64), start, first
        while pos < end:
            base = int(self.shard_starts[s])
            take = min(end, int(self.shard_starts[s + 1])) - pos
            out[pos - start: pos - start + take] = self._tokens[s][pos - base: pos - base + take]
            pos += take
            s += 1
        return out

    def shard_of(self, token: int) -> str:
        return self.shard_names[int(np.searchsorted(self.shard_starts, token, side="right")) - 1]

    def __repr__(self) -> str:
        return (f"TokenDataset({self.split!r}, tokens={self.num_tokens}, docs={self.num_docs}, "
                f"shards={len(self.shard_names)})")


def read_manifest(tokens_dir: str | Path) -> dict[str, Any]:
    path = Path(tokens_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing: the tokens stage did not finish; run `lmforge tokenize` "
                        "(or `lmforge run`) first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}); delete {path.parent} and rerun `lmforge tokenize`") from e


def _sha256(path: Path) -> str:
    from lmforge.io import sha256_file

    return sha256_file(path)


def open_split(tokens_dir: str | Path, split: str, *, fingerprint: str | None = None,
               verify_checksums: bool = False, mmap: bool = True) -> TokenDataset:
    """Validate and memory-map every shard of `split` ("train" or "val").

    `fingerprint`: the current tokenizer's; shards made by another tokenizer are refused.
    `verify_checksums`: also compare each file's sha256 with the manifest (reads everything once).
    `mmap`: memory-map the .bin files (default); False reads them with pread (`PreadTokens`).
    """
    d = Path(tokens_dir)
    man = read_manifest(d)
    if split not in man.get("splits", {}):
        raise DataError(f"{d / MANIFEST} has no split {split!r} (has {sorted(man.get('splits', {}))})")
    info = man["splits"][split]
    mfp = man.get("tokenizer_fingerprint")
    if fingerprint is not None and mfp != fingerprint:
        names = ", ".join(f"{r['name']}.bin" for r in info["shards"][:3]) + (", ..." if len(info["shards"]) > 3 else "")
        raise DataError(f"token shards in {d} ({names}) were made by tokenizer {mfp}, but the current tokenizer is "
                        f"{fingerprint}; delete {d} and rerun `lmforge tokenize` (or `lmforge run`)")
    if not info["shards"]:
        raise DataError(f"split {split!r} in {d} is empty (0 documents); add documents to the corpus"
                        + (" or raise tokens.val_fraction" if split == "val" else ""))
    shards = []
    for rec in info["shards"]:
        bin_path, idx_path = d / f"{rec['name']}.bin", d / f"{rec['name']}.idx"
        h, offsets = validate_shard(bin_path, idx_path, fingerprint=fingerprint or mfp)
        if (h.num_tokens, h.num_docs) != (rec["tokens"], rec["docs"]):
            raise DataError(f"token shard {bin_path}: holds {h.num_tokens} tokens / {h.num_docs} docs, manifest says "
                            f"{rec['tokens']} / {rec['docs']}; delete {d} and rerun `lmforge tokenize`")
        if verify_checksums:
            for p, key in ((bin_path, "sha256_bin"), (idx_path, "sha256_idx")):
                if _sha256(p) != rec[key]:
                    raise DataError(f"token shard {p}: sha256 differs from {MANIFEST} (corrupted); "
                                    f"delete {d} and rerun `lmforge tokenize`")
        tokens = (np.memmap(bin_path, dtype=h.dtype, mode="r", shape=(h.num_tokens,)) if mmap
                  else PreadTokens(bin_path, h.dtype, h.num_tokens))
        shards.append((rec["name"], tokens, np.asarray(offsets)))
    return TokenDataset(split, shards, nbytes=int(info.get("bytes", 0)), fingerprint=mfp,
                        vocab_size=int(man.get("vocab_size", 0)))


def split_summary(records: list[dict[str, Any]], docs_overhead: int) -> dict[str, Any]:
    """Totals of one split for the manifest; `docs_overhead` = special tokens added per document."""
    tokens = sum(r["tokens"] for r in records)
    docs = sum(r["docs"] for r in records)
    nbytes = sum(r["bytes"] for r in records)
    text_tokens = tokens - docs * docs_overhead
    return {"tokens": tokens, "docs": docs, "bytes": nbytes, "text_tokens": text_tokens,
            "bytes_per_token": round(nbytes / text_tokens, 4) if text_tokens > 0 else None, "shards": records}


def write_tokens_dir(out_dir: str | Path, splits: dict[str, list[Any]], *, vocab_size: int,
                     fingerprint: str = "0" * 16, shard_tokens: int = 1 << 62) -> dict[str, Any]:
    """Write already-tokenized documents (`{"train": [ids, ...], "val": [...]}`) as a tokens
    directory with a manifest. For tests and for importing tokens made elsewhere."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for split in SPLITS:
        w = TokenShardWriter(out, split, shard_tokens=shard_tokens, fingerprint=fingerprint, vocab_size=vocab_size)
        for doc in splits.get(split, []):
            w.add(np.asarray(doc), 0)
        summaries[split] = split_summary(w.close(), 0)
    manifest = {"format": "lmforge-tokens", "version": 1, "tokenizer_fingerprint": fingerprint,
                "vocab_size": vocab_size, "splits": summaries}
    from lmforge.io import atomic_write_json

    atomic_write_json(out / MANIFEST, manifest)
    return manifest


__all__ = ["HEADER", "MANIFEST", "TokenDataset", "TokenShardWriter", "open_split", "read_manifest",
           "split_summary", "write_tokens_dir"]
