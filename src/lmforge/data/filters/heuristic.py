"""Heuristic document filters: length and word count, Gopher quality, Gopher repetition.

Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher", appendix A (quality rules) and table A1 (repetition thresholds).

Words are the tokens of spaCy's English tokenizer (`filters.words.spacy_words`, reimplemented without
spaCy), as in datatrove: punctuation is split off (`end.` → `end`, `.`), contractions are split
(`don't` → `do`, `n't`), a run such as `-----` stays one token. Quality rules count words without
the pure-punctuation tokens; repetition n-grams run over all tokens, case kept (as datatrove). One
deliberate difference: stop words match case-insensitively (datatrove: `The` is not `the`).
"""

from __future__ import annotations

import re
from array import array

from lmforge.data.config import GopherQualityConfig, GopherRepetitionConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter
from lmforge.data.filters.ngrams import NGrams
from lmforge.data.filters.text import find_duplicates, is_punct
from lmforge.data.filters.words import spacy_words

Result = bool | tuple[bool, str]


class LengthFilter(Filter):
    """Reject documents outside [min_chars, max_chars] characters (`too_short` / `too_long`) and,
    when set (> 0), outside [min_words, max_words] words (`too_few_words` / `too_many_words`)."""

    name = "length"

    def __init__(self, *, min_chars: int = 1, max_chars: int = 1_000_000, min_words: int = 0,
                 max_words: int = 0) -> None:
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.max_words = min_words, max_words
        self.observed = array("Q")  # length of every document seen: the "before filtering" distribution

    def filter(self, doc: Document) -> Result:
        n = len(doc.text)
        self.observed.append(n)
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        if self.min_words or self.max_words:
            words = len(doc.text.split())
            if words < self.min_words:
                return False, "too_few_words"
            if self.max_words and words > self.max_words:
                return False, "too_many_words"
        return True


_BULLETS = ("•", "-", "*", "‣", "◦", "●", "▪")


class GopherQualityFilter(Filter):
    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GopherQualityConfig()
        self.stop_words = {w.lower() for w in self.cfg.stop_words}

    def filter(self, doc: Document) -> Result:
        c, text = self.cfg, doc.text
        tokens = spacy_words(text)
        words = [w for w in tokens if not is_punct(w)]
        n = len(words)
        if n < c.min_words:
            return False, "gopher_short_doc"
        if n > c.max_words:
            return False, "gopher_long_doc"
        if n == 0:
            return True  # min_words = 0 and nothing to measure
        mean = sum(map(len, words)) / n
        if mean < c.min_mean_word_length:
            return False, "gopher_short_words"
        if mean > c.max_mean_word_length:
            return False, "gopher_long_words"
        if text.count("#") / n > c.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if (text.count("...") + text.count("…")) / n > c.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"
        lines = [ln.strip() for ln in text.splitlines()] or [""]
        if sum(ln.startswith(_BULLETS) for ln in lines) / len(lines) > c.max_bullet_lines:
            return False, "gopher_bullet_lines"
        if sum(ln.endswith(("...", "…")) for ln in lines) / len(lines) > c.max_ellipsis_lines:
            return False, "gopher_ellipsis_lines"
        if sum(any(ch.isalpha() for ch in w) for w in tokens) / len(tokens) < c.min_alpha_words:
            return False, "gopher_few_alpha_words"
        if len(self.stop_words.intersection(w.lower() for w in words)) < c.min_stop_words:
            return False, "gopher_few_stop_words"
        return True


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


class GopherRepetitionFilter(Filter):
    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GopherRepetitionConfig()

    def filter(self, doc: Document) -> Result:
        c, text = self.cfg, doc.text
        if not text.strip():
            return False, "gopher_empty"
        n_chars = len(text)
        paras = _PARAGRAPHS.split(text.strip())
        dups, dup_chars = find_duplicates(paras)
        if dups / len(paras) > c.dup_para_frac:
            return False, "gopher_dup_para_frac"
        if dup_chars / n_chars > c.dup_para_char_frac:
            return False, "gopher_dup_para_char_frac"
        lines = _LINES.split(text.strip())
        dups, dup_chars = find_duplicates(lines)
        if dups / len(lines) > c.dup_line_frac:
            return False, "gopher_dup_line_frac"
        if dup_chars / n_chars > c.dup_line_char_frac:
            return False, "gopher_dup_line_char_frac"
        grams = NGrams(spacy_words(text))
        for n, limit in zip((2, 3, 4), c.top_ngram_char_frac):
            if grams.top_fraction(n, n_chars) > limit:
                return False, f"gopher_top_{n}_gram"
        for n, limit in zip(range(5, 11), c.dup_ngram_char_frac):
            if grams.dup_fraction(n, n_chars) > limit:
                return False, f"gopher_dup_{n}_gram"
        return True
