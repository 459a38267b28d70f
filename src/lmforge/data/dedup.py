"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash-LSH).

Both work in two phases so they run across processes (datatrove's signatures → buckets →
clusters): `signature(doc)` is computed where the document is processed (any worker) and stored in
`meta["_sig_*"]`; the keep/reject decision is taken in one ordered pass over all documents (the
merge), so the first document of each cluster — in input order — is kept whatever the number of
workers, and the others are rejected with `meta.duplicate_of = <kept id>`.

Memory of the decision pass: 16 bytes per distinct document (exact) and `bands` 8-byte keys per
document (near), plus the kept ids.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

from lmforge.config import NearDedupConfig
from lmforge.data.clean import dedup_key
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter

_MERSENNE = np.uint64((1 << 61) - 1)
_MULT = np.random.default_rng(12345).integers(1, 1 << 63, size=64, dtype=np.uint64) | np.uint64(1)
_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    return hashlib.blake2b(dedup_key(text).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class ExactDedup(Filter):
    name = "exact_dedup"

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[bytes, str] = {}  # 16-byte digest -> kept id

    @staticmethod
    def signature(doc: Document) -> None:
        doc.meta["_sig_exact"] = text_hash(doc.text)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        h = bytes.fromhex(doc.meta.pop("_sig_exact", None) or text_hash(doc.text))
        first = self.seen.get(h)
        if first is None:
            self.seen[h] = doc.id
            return True
        doc.meta["duplicate_of"] = first
        return False, "duplicate"


_DIGITS = re.compile(r"\d+")


def normalize_for_shingles(text: str) -> str:
    """FineWeb's MinHash normalisation: lowercase, digit runs -> 0, accents removed (punctuation goes
    with the word split), so pages that differ only in numbers or diacritics collide."""
    text = _DIGITS.sub("0", text.lower())
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text


class MinHasher:
    """bands × rows MinHash over word n-gram shingles of normalised text; one 64-bit key per band.
    Shingles are hashed to 64 bits with blake2b, then permuted by (a·x + b) mod 2^64 mod (2^61 − 1)
    (datasketch's family). Deterministic across processes (no Python `hash`)."""

    def __init__(self, cfg: NearDedupConfig) -> None:
        self.n, self.bands, self.rows = cfg.ngram, cfg.bands, cfg.rows
        rng = np.random.default_rng(cfg.seed)
        k = cfg.bands * cfg.rows
        self.a = rng.integers(1, 1 << 61, size=(k, 1), dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 1 << 61, size=(k, 1), dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        """Distinct 64-bit hashes of the word n-grams. Each distinct word is hashed once (blake2b); an
        n-gram's hash is Σ word_hash[i] · M[i] mod 2^64 with fixed odd multipliers, vectorised."""
        words = _WORD.findall(normalize_for_shingles(text))
        if not words:
            return np.zeros(0, dtype=np.uint64)
        n = min(self.n, len(words))  # a text shorter than one shingle is one shingle
        vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
        blob = b"".join(hashlib.blake2b(w.encode(), digest_size=8).digest() for w in vocab)
        word_hash = np.frombuffer(blob, dtype="<u8").astype(np.uint64)
        ids = word_hash[np.fromiter((vocab[w] for w in words), dtype=np.int64, count=len(words))]
        k = len(words) - n + 1
        h = np.zeros(k, dtype=np.uint64)
        for j in range(n):
            h += ids[j:j + k] * _MULT[j]  # wraps mod 2^64
        return np.unique(h)

    def signature(self, text: str) -> np.ndarray:
        x = self.shingles(text)
        if x.size == 0:
            return np.zeros(0, dtype=np.uint64)
        sig = np.empty(self.a.shape[0], dtype=np.uint64)
        for start in range(0, x.size, 4096):  # bound the (k, chunk) temporary for long documents
            chunk = ((self.a * x[None, start:start + 4096] + self.b) % _MERSENNE).min(axis=1)
            sig = chunk if start == 0 else np.minimum(sig, chunk)
        return sig

    def band_keys(self, text: str) -> list[int]:
        sig = self.signature(text)
        if sig.size == 0:
            return []
        rows = sig.reshape(self.bands, self.rows)
        return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8, person=bytes([i])).digest(), "little")
                for i, r in enumerate(rows)]


class NearDedup(Filter):
    """Rejects documents sharing a MinHash band with an earlier document (`near_duplicate`).
    A duplicate's bands point at its cluster's kept document, so chains A~B~C form one cluster."""

    name = "near_dedup"

    def __init__(self, cfg: NearDedupConfig | None = None) -> None:
        super().__init__()
        self.hasher = MinHasher(cfg or NearDedupConfig())
        self.buckets: dict[int, str] = {}
        self.clusters: dict[str, int] = {}  # kept id -> number of documents removed as its duplicates

    def signature(self, doc: Document) -> None:
        doc.meta["_sig_near"] = self.hasher.band_keys(doc.text)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        keys = doc.meta.pop("_sig_near", None)
        if keys is None:
            keys = self.hasher.band_keys(doc.text)
        # band i's key space is separate from band j's: the band index is mixed into the key.
        root = next((self.buckets[k] for k in keys if k in self.buckets), None)
        for k in keys:
            self.buckets.setdefault(k, root or doc.id)
        if root is None:
            return True
        doc.meta["duplicate_of"] = root
        self.clusters[root] = self.clusters.get(root, 0) + 1
        return False, "near_duplicate"
