"""Perplexity filter with a word n-gram language model (interpolated Kneser-Ney, as in KenLM/CCNet).

    lm = NGramLM.train(texts, order=3)
    lm.perplexity("a sentence")

Tokens are lowercased words and punctuation runs; words seen once in the reference become <unk>,
so the model also knows how likely an unknown word is in each context. An out-of-vocabulary word
then costs P(<unk> | context) × P(its spelling) under a character-bigram model of the vocabulary, so
gibberish ("qwxz zkqj") scores far worse than unseen but English-looking words (an open-vocabulary
model; without it every unknown word would look alike and gibberish would score well). The filter
rejects documents whose perplexity exceeds `max_perplexity` (`perplexity_too_high`) and stores
`meta.perplexity` (null when infinite).

With `data.perplexity.kenlm` the reference is a KenLM model file (`KenLMScorer`); with
`data.perplexity.model` the reference is an lmforge checkpoint instead
(`lmforge.eval.docscore.CheckpointScorer`, injected as a factory): the same word-level perplexity,
exp(total NLL / words), so one threshold means the same for both.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from lmforge.data.config import PerplexityConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Filter
from lmforge.data.filters.text import split_words
from lmforge.errors import ConfigError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
DISCOUNT = 0.75


def tokenize(text: str) -> list[str]:
    return [w.lower() for w in split_words(text)]


class NGramLM:
    """Interpolated Kneser-Ney n-gram model over word tokens (single discount D = 0.75)."""

    def __init__(self, order: int, vocab: set[str], counts: list[Counter]) -> None:
        self.order, self.vocab = order, vocab
        self.spelling = SpellingModel(w for w in vocab if w not in (EOS, UNK))
        # counts[k]: (k+1)-gram -> count; raw counts at the top order, continuation counts below.
        self.counts = counts
        self.ctx_total: list[Counter] = []  # context -> sum of counts of its continuations
        self.ctx_types: list[Counter] = []  # context -> number of distinct continuations
        for table in counts:
            tot, typ = Counter(), Counter()
            for gram, c in table.items():
                tot[gram[:-1]] += c
                typ[gram[:-1]] += 1
            self.ctx_total.append(tot)
            self.ctx_types.append(typ)

    @classmethod
    def train(cls, texts: Iterable[str], order: int = 3, min_count: int = 2) -> NGramLM:
        docs = [tokenize(t) for t in texts]
        freq = Counter(w for d in docs for w in d)
        vocab = {w for w, c in freq.items() if c >= min_count} | {EOS, UNK}
        top: Counter = Counter()
        for d in docs:
            seq = [BOS] * (order - 1) + [w if w in vocab else UNK for w in d] + [EOS]
            top.update(zip(*(seq[i:] for i in range(order))))
        counts = [top]
        for _ in range(order - 1):  # continuation counts: in how many contexts does the suffix follow
            cont: Counter = Counter(g[1:] for g in counts[0])
            counts.insert(0, cont)
        return cls(order, vocab, counts)

    def _prob(self, gram: tuple[str, ...]) -> float:
        k = len(gram) - 1
        if k == 0:  # unigram continuation probability, interpolated with uniform over the vocabulary
            total = self.ctx_total[0][()]
            c = self.counts[0].get(gram, 0)
            return max(c - DISCOUNT, 0) / total + DISCOUNT * self.ctx_types[0][()] / total / len(self.vocab)
        ctx = gram[:-1]
        total = self.ctx_total[k].get(ctx, 0)
        lower = self._prob(gram[1:])
        if total == 0:
            return lower
        c = self.counts[k].get(gram, 0)
        return max(c - DISCOUNT, 0) / total + DISCOUNT * self.ctx_types[k][ctx] / total * lower

    def perplexity(self, text: str) -> float:
        seq = [BOS] * (self.order - 1) + [w if w in self.vocab else UNK for w in tokenize(text)] + [EOS]
        words = tokenize(text) + [EOS]
        n = self.order
        logp = 0.0
        for i in range(n - 1, len(seq)):
            logp += math.log(self._prob(tuple(seq[i - n + 1:i + 1])))
            if seq[i] == UNK:
                logp += self.spelling.logprob(words[i - n + 1])
        return math.exp(-logp / (len(seq) - n + 1))


class SpellingModel:
    """Character bigrams over word types, add-one smoothed: log P(spelling of a word)."""

    def __init__(self, words: Iterable[str]) -> None:
        pairs: Counter = Counter()
        for w in words:
            s = f"^{w}$"
            pairs.update(zip(s, s[1:]))
        self.first: Counter = Counter()
        for (a, _b), c in pairs.items():
            self.first[a] += c
        self.pairs = pairs
        self.alphabet = len({b for _a, b in pairs}) + 1  # +1: characters never seen

    def logprob(self, word: str) -> float:
        s = f"^{word}$"
        return sum(math.log((self.pairs.get((a, b), 0) + 1) / (self.first.get(a, 0) + self.alphabet))
                   for a, b in zip(s, s[1:]))


def _reference_texts(cfg: PerplexityConfig) -> Iterable[str]:
    from lmforge.data.clean import clean_text
    from lmforge.data.readers import ReadOptions, expand_inputs, read_source

    budget = cfg.max_reference_chars
    for src in expand_inputs(cfg.reference):
        for doc in read_source(src, ReadOptions(warn=lambda _m: None)):
            if "reject_reason" in doc.meta:
                continue
            text = clean_text(doc.text)
            yield text[:budget]
            budget -= len(text)
            if budget <= 0:
                return


class KenLMScorer:
    """A KenLM model file (`.arpa` or `.bin`) as the reference, with the built-in model's definition:
    the same lowercased word tokens as one sentence with <s> ... </s>, perplexity =
    10^(-log10 P / (words + 1)) = exp(-ln P / (words + 1))."""

    def __init__(self, path: str) -> None:
        try:
            import kenlm
        except ImportError as e:
            raise ConfigError("data.perplexity.kenlm needs the kenlm package: pip install 'lmforge[kenlm]' "
                              "(it builds from source: needs a C++ compiler, cmake not required)") from e
        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"data.perplexity.kenlm: cannot load {path} as a KenLM model ({e})") from e

    def perplexity(self, text: str) -> float:
        words = tokenize(text)
        return 10.0 ** (-self.model.score(" ".join(words), bos=True, eos=True) / (len(words) + 1))


class DocumentScorer(Protocol):
    """What the filter needs of a reference model; `perplexities` (optional) scores a batch."""

    def perplexity(self, text: str) -> float: ...


LMFactory = Callable[[], DocumentScorer]


class PerplexityFilter(Filter):
    """Rejects documents above `max_perplexity` under the reference model: `lm` when given, else
    `lm_factory()` (how an lmforge checkpoint arrives: the data stage may not import the model code,
    so `lmforge.run` injects a picklable factory and each worker process builds its own copy), else a
    word n-gram model trained on `cfg.reference`. Models with `perplexities(texts)` get documents in
    batches of `cfg.batch_size`."""

    name = "perplexity"

    def __init__(self, cfg: PerplexityConfig | None = None, lm: DocumentScorer | None = None,
                 lm_factory: LMFactory | None = None) -> None:
        super().__init__()
        self.cfg = cfg or PerplexityConfig()
        if lm is None and lm_factory is not None:
            lm = lm_factory()
        if lm is None and self.cfg.model:
            raise ConfigError(f"data.perplexity.model is set ({self.cfg.model}) but no model factory was passed: "
                              "run the stage through lmforge.run.run_data / `lmforge data`, or pass "
                              "perplexity_lm=lmforge.eval.docscore.doc_scorer_factory(path)")
        if lm is None and self.cfg.kenlm:
            lm = KenLMScorer(self.cfg.kenlm)
        self.lm = lm or NGramLM.train(_reference_texts(self.cfg), order=self.cfg.order)
        self._batch = getattr(self.lm, "perplexities", None)

    def run(self, docs: Iterator[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        if self._batch is None:
            yield from super().run(docs, rank, world_size)
            return
        while chunk := list(itertools.islice(docs, self.cfg.batch_size)):
            t0 = time.perf_counter()
            for doc, ppl in zip(chunk, self._batch([d.text for d in chunk])):
                doc.meta["_ppl"] = ppl  # private key: never written out
            self.stats.seconds += time.perf_counter() - t0
            yield from super().run(iter(chunk), rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        ppl = doc.meta.pop("_ppl", None)
        if ppl is None:
            ppl = self.lm.perplexity(doc.text)
        doc.meta["perplexity"] = round(ppl, 1) if math.isfinite(ppl) else None
        return ppl <= self.cfg.max_perplexity or (False, "perplexity_too_high")
