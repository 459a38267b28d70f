"""Shared text helpers for filters: word splitting, punctuation sets, duplicate counting."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Words and single punctuation marks as separate tokens (an ellipsis stays one), close to spaCy's
# English tokenizer, which datatrove uses, at a fraction of the cost:
# "don't stop... (x)" -> ["don't", "stop", "...", "(", "x", ")"].
WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*|\.\.\.|[^\w\s]")
# Lowercased letters/digits only: the form used for n-gram repetition and MinHash shingles.
PLAIN_WORD_RE = re.compile(r"\w+")
PUNCT_RE = re.compile(r"^[^\w\s]+$")
TERMINAL_PUNCT = (".", "!", "?", "…", "。", "！", "？", "؟", "।", "॥", "։", "۔", "‼", "‽", "⁇", "⁈", "⁉")


def split_words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def is_punct(token: str) -> bool:
    return PUNCT_RE.match(token) is not None


def find_duplicates(items: Iterable[str]) -> tuple[int, int]:
    """(number of items equal to an earlier item, total characters of those repeats)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars
