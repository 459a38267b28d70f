"""Heuristic document filters."""

from __future__ import annotations

from lmforge.data.document import Document
from lmforge.data.filters.base import Filter


class LengthFilter(Filter):
    """Reject documents outside [min_chars, max_chars] characters (`too_short` / `too_long`)."""

    name = "length"

    def __init__(self, *, min_chars: int = 1, max_chars: int = 1_000_000) -> None:
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n = len(doc.text)
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        return True
