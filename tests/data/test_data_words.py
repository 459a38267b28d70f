"""spaCy-compatible word splitting (what datatrove's Gopher filters count) and the vectorised n-gram measures.

The expected token lists below are spaCy 3.8's `spacy.blank("en")` output (via datatrove's English word
tokenizer), recorded once; the tests do not need spaCy."""

import random
from collections import Counter

import pytest

from lmforge.data.document import Document
from lmforge.data.filters.heuristic import GopherQualityFilter
from lmforge.data.filters.ngrams import NGrams
from lmforge.data.filters.words import spacy_words

SPACY = [
    ("Don't stop... (e.g. U.S.-made)", ["Do", "n't", "stop", "...", "(", "e.g.", "U.S.-made", ")"]),
    ("I'm sure you'll see it's Python's best: dont, cannot, wont.",
     ["I", "'m", "sure", "you", "'ll", "see", "it", "'s", "Python", "'s", "best", ":", "do", "nt", ",", "can", "not",
      ",", "wo", "nt", "."]),
    ("Call foo(): see collections.abc.Sequence and ast.Constant.",
     ["Call", "foo", "(", "):", "see", "collections.abc", ".", "Sequence", "and", "ast", ".", "Constant", "."]),
    ("Up 50% at 10am, and/or 3-4 km; x=y or well-known.",
     ["Up", "50", "%", "at", "10", "am", ",", "and/or", "3", "-", "4", "km", ";", "x", "=", "y", "or", "well", "-",
      "known", "."]),
    ("See http://example.com/a-b. Also “quoted” words, 'single' ones -- and A. Smith of the USA.",
     ["See", "http://example.com/a-b", ".", "Also", "“", "quoted", "”", "words", ",", "'", "single", "'", "ones",
      "--", "and", "A.", "Smith", "of", "the", "USA", "."]),
    ("----------- +----+ ==== ''hi'' :) ):", ["-----------", "+", "----+", "=", "=", "=", "=", "''", "hi", "''", ":)",
                                              "):"]),
    ("Mr. Smith's e-mail (sent 5km away) costs $5.",
     ["Mr.", "Smith", "'s", "e", "-", "mail", "(", "sent", "5", "km", "away", ")", "costs", "$", "5", "."]),
    ("ذلك. 你好。", ["ذلك", ".", "你好", "。"]),
]


@pytest.mark.parametrize("text,expected", SPACY)
def test_words_match_spacy(text, expected):
    assert spacy_words(text) == expected
    assert spacy_words(text) == expected  # second call: from the chunk cache


def _tuple_top(words, n, total):
    grams = Counter(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return count * (sum(map(len, gram)) + n - 1) / total


def _tuple_dup(words, n, total):
    seen, rep, i = set(), 0, 0
    while i <= len(words) - n:
        g = tuple(words[i:i + n])
        if g in seen:
            rep += sum(map(len, g))
            i += n
        else:
            seen.add(g)
            i += 1
    return rep / total


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_ngrams_equal_the_definition(seed):
    rng = random.Random(seed)
    vocab = ["a", "bb", "ccc", "dddd", "e", "ff"][: rng.randint(2, 6)]
    words = [rng.choice(vocab) for _ in range(rng.randint(0, 300))]
    g = NGrams(words)
    for n in range(2, 11):
        assert g.top_fraction(n, 1000) == pytest.approx(_tuple_top(words, n, 1000), abs=1e-12)
        assert g.dup_fraction(n, 1000) == pytest.approx(_tuple_dup(words, n, 1000), abs=1e-12)


def test_top_ngram_tie_goes_to_the_first_seen():
    words = "x yyyy x yyyy a b a b".split()  # ("x","yyyy") and ("a","b") twice each: the first one counts
    assert NGrams(words).top_fraction(2, 100) == pytest.approx(2 * 6 / 100)


def test_gopher_counts_a_ruler_as_one_token():
    """A text ruled with dashes: spaCy (and so datatrove) sees each ruler as one non-alphabetic token;
    a splitter that cut it into 40 "-" tokens would fail the 80% alphabetic-words rule."""
    body = ("The committee met on Monday and agreed that the new library will open with longer hours, "
            "and that the old reading room should stay as it is for the students of the town.")
    text = "\n".join([body, "-" * 40, body, "-" * 40, body])
    assert GopherQualityFilter().filter(Document("r", text, {})) is True


def test_huge_chunks_stay_whole():
    """A 2 MB run without whitespace is one token (peeling it one mark at a time would be quadratic:
    hours); shorter runs are still peeled as spaCy does."""
    text = "(" * 900 + "x) " + "(" * 2_000_000 + " end."
    toks = spacy_words(text)
    assert toks[:900] == ["("] * 900 and toks[900:902] == ["x", ")"]
    assert toks[902] == "(" * 2_000_000 and toks[903:] == ["end", "."]
