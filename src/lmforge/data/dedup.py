"""Deduplication steps.

`ExactDedup` keeps the first document of each group whose normalised text (see
`clean.dedup_key`) is identical and rejects the others as `duplicate` with `meta["duplicate_of"]`.
Memory: one 16-byte hash + the kept id per distinct document.
"""

from __future__ import annotations

import hashlib

from lmforge.data.clean import dedup_key
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(dedup_key(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ExactDedup(Filter):
    name = "exact_dedup"

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[bytes, str] = {}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        h = text_hash(doc.text)
        first = self.seen.get(h)
        if first is None:
            self.seen[h] = doc.id
            return True
        doc.meta["duplicate_of"] = first
        return False, "duplicate"
