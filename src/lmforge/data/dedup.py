"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash-LSH).

Both work in two phases so they run across processes (datatrove's signatures → buckets →
clusters): `signature(doc)` is computed where the document is processed (any worker) and stored in
`meta["_sig_*"]`; the keep/reject decision is taken in one ordered pass over all documents (the
merge), so the first document of each cluster — in input order — is kept whatever the number of
workers, and the others are rejected with `meta.duplicate_of = <kept id>`.

In the data stage the signatures go to disk instead (`dedup_disk`): each rank writes sorted runs of
(key, order) per band, the merge computes the decisions from them and hands them to these filters
(`decisions=`), so memory grows with the duplicates, not with the corpus. Without decisions the
filters keep their tables in memory (16 bytes per distinct document for exact, `bands` 8-byte keys
per document for near) — the reference the on-disk path is tested against.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

from lmforge.data.clean import dedup_key
from lmforge.data.config import NearDedupConfig
from lmforge.data.dedup_disk import Decisions, encode_order
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter

_MERSENNE = np.uint64((1 << 61) - 1)
_MULT = np.random.default_rng(12345).integers(1, 1 << 63, size=64, dtype=np.uint64) | np.uint64(1)
_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    return hashlib.blake2b(dedup_key(text).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def exact_key(text: str) -> int:
    """64 bits of `text_hash`, the exact-dedup key on disk (as datatrove's 64-bit hashes)."""
    return int.from_bytes(bytes.fromhex(text_hash(text)[:16]), "little")


def _decided(decisions: Decisions, doc: Document) -> str | None:
    """Id of the kept document `doc` duplicates, or None (`decisions` from the signature files)."""
    root = decisions.root_of(encode_order(doc.meta["_o"]), doc.id)
    return None if root is None else decisions.id_of(root)


class ExactDedup(Filter):
    name = "exact_dedup"

    def __init__(self, decisions: Decisions | None = None) -> None:
        super().__init__()
        self.seen: dict[bytes, str] = {}  # 16-byte digest -> kept id
        self.decisions = decisions

    @staticmethod
    def signature(doc: Document) -> None:
        doc.meta["_sig_exact"] = text_hash(doc.text)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.decisions is not None:
            first = _decided(self.decisions, doc)
            if first is None:
                return True
            doc.meta["duplicate_of"] = first
            return False, "duplicate"
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


_SALT = np.random.default_rng(54321).integers(0, 1 << 63, size=256, dtype=np.uint64)
_BAND_MULT = np.random.default_rng(54322).integers(1, 1 << 63, size=64, dtype=np.uint64) | np.uint64(1)
_WORD_CACHE: dict[str, int] = {}  # word -> 64-bit blake2b hash; words repeat across documents
_WORD_CACHE_MAX = 50_000  # ~7 MB; the frequent words stay cached


def _word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_CACHE
    missing = {w for w in words if w not in cache}
    if missing:
        if len(cache) + len(missing) > _WORD_CACHE_MAX:  # bounded: start over
            cache.clear()
            missing = set(words)
        for w in missing:
            cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                      "little")
    return np.fromiter((cache[w] for w in words), dtype=np.uint64, count=len(words))


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


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
        """Distinct 64-bit hashes of the word n-grams. Each word is hashed with blake2b (once per
        process: a bounded cache); an n-gram's hash is Σ word_hash[i] · M[i] mod 2^64 with fixed odd
        multipliers, vectorised."""
        words = _WORD.findall(normalize_for_shingles(text))
        if not words:
            return np.zeros(0, dtype=np.uint64)
        n = min(self.n, len(words))  # a text shorter than one shingle is one shingle
        ids = _word_hashes(words)
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
        """One 64-bit key per band: its rows combined with odd multipliers plus a per-band salt (so
        band i's keys never meet band j's), then splitmix64's finaliser."""
        sig = self.signature(text)
        if sig.size == 0:
            return []
        rows = sig.reshape(self.bands, self.rows)
        h = (rows * _BAND_MULT[:self.rows]).sum(axis=1, dtype=np.uint64) + _SALT[:self.bands]  # wraps mod 2^64
        return _splitmix(h).tolist()


class NearDedup(Filter):
    """Rejects documents sharing a MinHash band with an earlier document (`near_duplicate`).
    A duplicate's bands point at its cluster's kept document, so chains A~B~C form one cluster."""

    name = "near_dedup"

    def __init__(self, cfg: NearDedupConfig | None = None, decisions: Decisions | None = None) -> None:
        super().__init__()
        self.hasher = MinHasher(cfg or NearDedupConfig())
        self.buckets: dict[int, str] = {}
        self.clusters: dict[str, int] = {}  # kept id -> number of documents removed as its duplicates
        self.decisions = decisions

    def signature(self, doc: Document) -> None:
        doc.meta["_sig_near"] = self.hasher.band_keys(doc.text)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.decisions is not None:
            root = _decided(self.decisions, doc)
            if root is None:
                return True
            doc.meta["duplicate_of"] = root
            self.clusters[root] = self.clusters.get(root, 0) + 1
            return False, "near_duplicate"
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
