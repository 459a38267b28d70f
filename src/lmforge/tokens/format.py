"""Token shard format (docs/design.md §4) and its validation.

`NAME.bin`: the tokens, raw little-endian uint16 (vocab <= 65,536) or uint32.
`NAME.idx`: a 64-byte header, then `num_docs + 1` little-endian int64 document offsets into the
.bin (in tokens; the first is 0, the last is `num_tokens`). Header fields, little-endian:

    magic     8s   b"LMFTOKS\\0"
    version   u32  1
    itemsize  u32  2 (uint16) or 4 (uint32)
    tokens    u64  number of tokens in the .bin
    docs      u64  number of documents
    tokenizer 16s  fingerprint (16 hex chars) of the tokenizer.json that made the shard
    vocab     u64  vocabulary size of that tokenizer
    (8 reserved bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import DataError

MAGIC = b"LMFTOKS\0"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ16sQ8x")
assert HEADER.size == 64
DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_RETOKENIZE = "delete the tokens/ directory and rerun `lmforge tokenize` (or `lmforge run`)"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    return DTYPES[2] if vocab_size <= 1 << 16 else DTYPES[4]


@dataclass(frozen=True)
class ShardHeader:
    itemsize: int
    num_tokens: int
    num_docs: int
    fingerprint: str
    vocab_size: int
    version: int = VERSION

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.version, self.itemsize, self.num_tokens, self.num_docs,
                           self.fingerprint.encode("ascii").ljust(16, b"\0")[:16], self.vocab_size)

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.itemsize]


def _bad(shard: Path, what: str, fix: str = _RETOKENIZE) -> DataError:
    return DataError(f"token shard {shard}: {what}; {fix}")


def read_header(idx_path: Path) -> ShardHeader:
    """Parse and check the header of `idx_path` (magic, version, dtype, vocab vs dtype)."""
    try:
        with open(idx_path, "rb") as f:
            raw = f.read(HEADER.size)
    except OSError as e:
        raise _bad(idx_path, f"cannot be read ({e})") from e
    if len(raw) < HEADER.size:
        raise _bad(idx_path, f"index is truncated ({len(raw)} bytes, header needs {HEADER.size})")
    magic, version, itemsize, ntok, ndocs, fp, vocab = HEADER.unpack(raw)
    if magic != MAGIC:
        raise _bad(idx_path, f"wrong magic {magic!r} (expected {MAGIC!r}): not an lmforge token index")
    if version != VERSION:
        raise _bad(idx_path, f"format version {version}, this lmforge reads version {VERSION}")
    if itemsize not in DTYPES:
        raise _bad(idx_path, f"token size {itemsize} bytes is invalid (expected 2 or 4)")
    if itemsize == 2 and vocab > 1 << 16:
        raise _bad(idx_path, f"vocabulary of {vocab} ids cannot be stored as uint16 (max 65,536)")
    return ShardHeader(itemsize, ntok, ndocs, fp.rstrip(b"\0").decode("ascii", "replace"), vocab, version)


def validate_shard(bin_path: Path, idx_path: Path, *, fingerprint: str | None = None) -> tuple[ShardHeader, np.ndarray]:
    """Check one shard completely before use; returns its header and (memory-mapped) offsets.

    Raises DataError naming the shard and the fix for: missing files, bad header, empty shard,
    .bin/.idx sizes that disagree with the header, offsets that are not monotonic or point past the
    end, and a tokenizer fingerprint different from `fingerprint`.
    """
    for p in (bin_path, idx_path):
        if not p.is_file():
            raise _bad(p, "file is missing")
    h = read_header(idx_path)
    if fingerprint is not None and h.fingerprint != fingerprint:
        raise _bad(bin_path, f"was made by tokenizer {h.fingerprint}, but the current tokenizer is {fingerprint}",
                   "the tokenizer changed since tokenizing: " + _RETOKENIZE)
    if h.num_tokens == 0 or h.num_docs == 0:
        raise _bad(bin_path, "shard is empty (0 tokens)")
    idx_size = idx_path.stat().st_size
    want_idx = HEADER.size + 8 * (h.num_docs + 1)
    if idx_size != want_idx:
        raise _bad(idx_path, f"index holds {idx_size} bytes, header says {want_idx} ({h.num_docs} documents)")
    bin_size = bin_path.stat().st_size
    if bin_size != h.num_tokens * h.itemsize:
        raise _bad(bin_path, f"holds {bin_size} bytes, index says {h.num_tokens} tokens x {h.itemsize} bytes "
                   f"= {h.num_tokens * h.itemsize} (truncated or overwritten)")
    offsets = np.memmap(idx_path, dtype="<i8", mode="r", offset=HEADER.size, shape=(h.num_docs + 1,))
    if offsets[0] != 0 or offsets[-1] != h.num_tokens:
        raise _bad(idx_path, f"document offsets run from {offsets[0]} to {offsets[-1]}, expected 0 to "
                   f"{h.num_tokens} (offsets past the end of the .bin)")
    if h.num_docs > 1 and not bool(np.all(np.diff(offsets) > 0)):
        bad = int(np.argmax(np.diff(offsets) <= 0))
        raise _bad(idx_path, f"document offsets are not increasing at document {bad} "
                   f"({offsets[bad]} then {offsets[bad + 1]})")
    return h, offsets


def write_shard(bin_path: Path, idx_path: Path, tokens: np.ndarray, offsets: np.ndarray, header: ShardHeader) -> None:
    """Write a complete shard in one go (both files via .tmp + rename). Used for small shards/tests;
    the streaming writer lives in `shards.ShardWriter`."""
    from lmforge.io import atomic_write_bytes

    atomic_write_bytes(bin_path, np.ascontiguousarray(tokens, dtype=header.dtype).tobytes())
    atomic_write_bytes(idx_path, header.pack() + np.ascontiguousarray(offsets, dtype="<i8").tobytes())
