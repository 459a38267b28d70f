"""C4 and FineWeb rules for web text.

C4: Raffel et al. 2020, section 2.2, and TFDS `c4_utils.py` (citation removal, max word length,
policy lines). FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.3 ("custom filters");
where the paper and datatrove's code disagree (duplicated-line character ratio: 0.1 vs 0.01) we use
the paper's value, configurable as `data.fineweb.max_dup_line_char_ratio`.
"""

from __future__ import annotations

import re

from lmforge.data.config import C4Config, FineWebConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter
from lmforge.data.filters.text import TERMINAL_PUNCT, find_duplicates, split_words

Result = bool | tuple[bool, str]

_SPACES = re.compile(r" {2,}")
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
C4_END_PUNCT = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")
_CLOSERS = "'\"”’)]"
_ABBREV_RE = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?\.?$|^[A-Z]\.$")  # e.g.  i.e.  U.S.  J.
_ABBREVS = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "jr", "sr", "no", "inc", "ltd", "co", "prof", "fig", "vol",
            "cf", "approx", "dept", "est", "jan", "feb", "mar", "apr", "aug", "sept", "oct", "nov", "dec"}
_TERMINAL = (".", "!", "?", "…", "。", "！", "？", "؟")


def count_sentences(line: str) -> int:
    """Sentences in a line, counted like spaCy's sentencizer (which datatrove's C4 filter uses): a
    word ending in terminal punctuation ends a sentence unless it is an abbreviation ("e.g.", "Mr.",
    "J."); the last sentence needs no punctuation."""
    words = line.split()
    n = 0
    for i, w in enumerate(words):
        core = w.rstrip(_CLOSERS)
        if not core.endswith(_TERMINAL) or i == len(words) - 1:
            continue
        if core.endswith(".") and not core.endswith("..."):
            stem = core.rstrip(".")
            if _ABBREV_RE.match(core) or stem.lower() in _ABBREVS or not stem:
                continue
        n += 1
    return n + 1 if words else 0


class C4Filter(Filter):
    """`lines` mode rewrites the text to its good lines (C4); `document` mode rejects at the first bad line."""

    name = "c4"

    def __init__(self, cfg: C4Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or C4Config()

    def _line_problem(self, line: str) -> str | None:
        """Why a line is dropped, or a `doc:` reason that drops the document — checked in the order of
        TFDS `c4_utils.clean_page`, so lorem ipsum / `{` only count on lines that survive the line rules."""
        c, words = self.cfg, line.split()
        if c.max_word_length and any(len(w) > c.max_word_length for w in words):
            return "long_word"
        if c.remove_citations:
            line = _SPACES.sub(" ", CITATION_RE.sub("", line)).strip()
        if c.terminal_punct and (not line.endswith(C4_END_PUNCT) or line.endswith("...")):
            return "no_terminal_punct"
        if len(words) < c.min_words_per_line:
            return "too_few_words"
        low = line.lower()
        if c.lorem_ipsum and "lorem ipsum" in low:
            return "doc:lorem_ipsum"
        if c.javascript and "javascript" in low:
            return "javascript"
        if c.curly_bracket and "{" in line:
            return "doc:curly_bracket"
        if c.policy and any(p in low for p in POLICY_SUBSTRINGS):
            return "policy"
        return None

    def filter(self, doc: Document) -> Result:
        c = self.cfg
        kept, sentences = [], 0
        for raw in doc.text.splitlines():
            line = raw.strip()
            if not line:
                continue
            problem = self._line_problem(line)
            if problem is not None and problem.startswith("doc:"):
                return False, f"c4_{problem[4:]}"
            if c.remove_citations:
                line = _SPACES.sub(" ", CITATION_RE.sub("", line)).strip()
            if problem is not None:
                if c.mode == "document":
                    return False, f"c4_{problem}"
                continue
            kept.append(line)
            sentences += count_sentences(line)
        if sentences < c.min_sentences or not kept:
            return False, "c4_too_few_sentences"
        if c.mode == "lines":
            removed = doc.text.count("\n") + 1 - len(kept)
            if removed > 0:
                doc.meta["c4_lines_removed"] = removed
            doc.text = "\n".join(kept)
        return True


class FineWebFilter(Filter):
    name = "fineweb"

    def __init__(self, cfg: FineWebConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FineWebConfig()

    def filter(self, doc: Document) -> Result:
        c, text = self.cfg, doc.text
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return False, "fineweb_empty"
        if sum(ln.rstrip().endswith(TERMINAL_PUNCT) for ln in lines) / len(lines) < c.min_punct_line_ratio:
            return False, "fineweb_line_punct_ratio"
        if sum(len(ln) <= c.short_line_chars for ln in lines) / len(lines) > c.max_short_line_ratio:
            return False, "fineweb_short_line_ratio"
        if find_duplicates(lines)[1] / max(1, len(text) - text.count("\n")) > c.max_dup_line_char_ratio:
            return False, "fineweb_char_dup_ratio"
        if text.count("\n") / max(1, len(split_words(text))) > c.max_newline_word_ratio:
            return False, "fineweb_list_ratio"
        return True
