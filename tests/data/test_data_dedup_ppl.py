"""Exact and MinHash-LSH dedup; the n-gram perplexity model and filter."""

import json
import subprocess
import sys

import pytest

from lmforge.config import NearDedupConfig, PerplexityConfig
from lmforge.data.dedup import ExactDedup, MinHasher, NearDedup
from lmforge.data.document import Document
from lmforge.data.filters.perplexity import EOS, NGramLM, PerplexityFilter

WORDS = ("river city market bridge tower harbor street garden castle church school station museum library "
         "forest mountain valley island village square").split()


def _text(seed: int, n: int = 120) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + rng.choice(WORDS) for _ in range(n))  # no digits: shingles map them to 0


def _run(f, docs):
    seen = []
    f.sink = seen.append
    return [d.id for d in f.run(iter(docs))], seen


def test_exact_dedup_whitespace_insensitive():
    docs = [Document("a", "Hello  world\nagain", {}), Document("b", "Hello world again", {}),
            Document("c", "hello world again", {})]
    kept, rejected = _run(ExactDedup(), docs)
    assert kept == ["a", "c"]
    assert [(d.id, d.meta["reject_reason"], d.meta["duplicate_of"]) for d in rejected] == [("b", "duplicate", "a")]


def test_near_dedup_clusters_keep_first():
    base = _text(1).split()
    near = base.copy()
    near[60] = "changed"  # one word in 120: Jaccard ≈ 0.92
    chain = near.copy()
    chain[30] = "again"
    docs = [Document("a", " ".join(base), {}), Document("b", _text(2), {}), Document("c", " ".join(near), {}),
            Document("d", " ".join(chain), {})]
    f = NearDedup()
    kept, rejected = _run(f, docs)
    assert kept == ["a", "b"]
    assert [(d.id, d.meta["reject_reason"], d.meta["duplicate_of"]) for d in rejected] == [
        ("c", "near_duplicate", "a"), ("d", "near_duplicate", "a")]
    assert f.clusters == {"a": 2}


def test_near_dedup_normalises_numbers_and_accents():
    a = "Release 3.11 of the café app ships on May 4 with 12 fixes and a new résumé builder for everyone here."
    b = "Release 3.12 of the cafe app ships on May 9 with 40 fixes and a new resume builder for everyone here."
    kept, rejected = _run(NearDedup(), [Document("a", a, {}), Document("b", b, {})])
    assert kept == ["a"] and rejected[0].meta["duplicate_of"] == "a"


def test_near_dedup_keeps_distinct_documents():
    docs = [Document(str(i), _text(100 + i), {}) for i in range(20)]
    kept, rejected = _run(NearDedup(), docs)
    assert len(kept) == 20 and not rejected


def test_minhash_collision_rate_matches_theory():
    h = MinHasher(NearDedupConfig())
    base = _text(7, 400).split()
    hits = {}
    for frac, trials in ((0.005, 10), (0.15, 10)):
        n = 0
        for t in range(trials):
            w = base.copy()
            for i in range(int(frac * len(w))):
                w[(i * 37 + t * 11) % len(w)] = "zz" + "".join(chr(97 + int(c)) for c in f"{i}x{t}".replace("x", "9"))
            n += bool(set(h.band_keys(" ".join(base))) & set(h.band_keys(" ".join(w))))
        hits[frac] = n / trials
    assert hits[0.005] == 1.0  # Jaccard ≈ 0.97: always found
    assert hits[0.15] == 0.0  # Jaccard ≈ 0.3: P(match) ≈ 1e-4


def test_signatures_identical_across_processes():
    text = _text(3)
    here = MinHasher(NearDedupConfig()).band_keys(text)
    code = ("import json,sys; from lmforge.config import NearDedupConfig; from lmforge.data.dedup import MinHasher; "
            "print(json.dumps(MinHasher(NearDedupConfig()).band_keys(sys.stdin.read())))")
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here and len(here) == 14


REFERENCE = [
    "The function returns a list of the items in the container.",
    "The method returns the number of items in the list.",
    "The function returns a new list with the items sorted.",
    "The argument is a list of items and the function returns a copy.",
] * 5


def test_ngram_probabilities_sum_to_one():
    lm = NGramLM.train(REFERENCE, order=3)
    for ctx in [("the", "function"), ("<s>", "<s>"), ("unseen", "context")]:
        total = sum(lm._prob((*ctx, w)) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9)
    assert EOS in lm.vocab


def test_ngram_perplexity_orders_texts():
    lm = NGramLM.train(REFERENCE, order=3)
    in_domain = lm.perplexity("The function returns a list of the items.")
    shifted = lm.perplexity("A list returns the method with items of a container.")
    english_oov = lm.perplexity("The weather tomorrow should be sunny and warm.")
    gibberish = lm.perplexity("Qxzv kjwq pflt zzkq vvbnx.")
    assert in_domain < shifted < english_oov < gibberish
    assert in_domain < 5


def test_perplexity_filter(tmp_path):
    ref = tmp_path / "ref.txt"
    ref.write_text("\n\n".join(REFERENCE))
    f = PerplexityFilter(PerplexityConfig(enabled=True, reference=[str(ref)], max_perplexity=50))
    good = Document("g", "The method returns a list of the items in the container.", {})
    bad = Document("b", "Qxzv kjwq pflt zzkq vvbnx wqpl.", {})
    assert f.filter(good) is True and good.meta["perplexity"] < 50
    assert f.filter(bad) == (False, "perplexity_too_high") and bad.meta["perplexity"] > 50


class _BatchScorer:
    """A reference model with a batch method: perplexity = 10 × word count (known values)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def perplexities(self, texts):
        self.batches.append(len(texts))
        return [10.0 * len(t.split()) for t in texts]

    def perplexity(self, text):
        raise AssertionError("the filter must use the batch method")


def test_perplexity_filter_batches_an_injected_model():
    scorer = _BatchScorer()
    f = PerplexityFilter(PerplexityConfig(enabled=True, model="ref", max_perplexity=45, batch_size=3),
                         lm_factory=lambda: scorer)
    docs = [Document(str(i), " ".join(["word"] * (i % 7 + 1)), {}) for i in range(8)]  # 1..7, 1 words
    kept, rejected = _run(f, docs)
    assert scorer.batches == [3, 3, 2]
    assert kept == ["0", "1", "2", "3", "7"]  # ≤ 4 words: perplexity ≤ 40
    assert [(d.id, d.meta["reject_reason"], d.meta["perplexity"]) for d in rejected] == [
        ("4", "perplexity_too_high", 50.0), ("5", "perplexity_too_high", 60.0), ("6", "perplexity_too_high", 70.0)]
    assert all("_ppl" not in d.meta for d in rejected) and f.stats.docs_in == 8 and f.stats.docs_out == 5


def test_perplexity_model_without_factory_is_an_error():
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.perplexity\.model is set \(runs/ref\)"):
        PerplexityFilter(PerplexityConfig(enabled=True, model="runs/ref"))
    with pytest.raises(ConfigError, match=r"data\.perplexity\.batch_size"):
        PerplexityConfig(batch_size=0)
