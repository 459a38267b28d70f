"""data.perplexity.kenlm: a KenLM ARPA model the test writes, scored with the built-in definition
(word tokens + </s>, 10^(-log10 P / (words + 1))), through the data stage."""

from __future__ import annotations

import pytest

from lmforge.data.config import DataConfig, PerplexityConfig
from lmforge.data.document import iter_clean_documents
from lmforge.data.executor import run_data_stage
from lmforge.data.filters.perplexity import KenLMScorer
from lmforge.errors import ConfigError

pytest.importorskip("kenlm")

ARPA = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
0\t<s>\t-0.3
-0.5\t</s>\t0
-0.4\tthe\t-0.2
-0.6\tcat\t-0.1

\\2-grams:
-0.2\t<s> the
-0.3\tthe cat
-0.1\tcat </s>

\\end\\
"""


def test_kenlm_perplexity_by_hand(tmp_path):
    (tmp_path / "lm.arpa").write_text(ARPA)
    lm = KenLMScorer(str(tmp_path / "lm.arpa"))
    # log10 P = -0.2 - 0.3 - 0.1 over 2 words + </s>
    assert lm.perplexity("The cat") == pytest.approx(10 ** (0.6 / 3))
    # backoffs: (-0.3 - 0.6) + (-0.1 - 0.4) + (-0.2 - 0.5)
    assert lm.perplexity("cat THE") == pytest.approx(10 ** (2.1 / 3))


def test_kenlm_filter_in_the_stage(tmp_path):
    (tmp_path / "lm.arpa").write_text(ARPA)
    (tmp_path / "in.txt").write_text("the cat\n\nzebra quokka narwhal\n")
    cfg = DataConfig(inputs=[str(tmp_path / "in.txt")], plots=False,
                     perplexity=PerplexityConfig(enabled=True, kenlm=str(tmp_path / "lm.arpa"), max_perplexity=3))
    report = run_data_stage(cfg, tmp_path / "out", progress=False)
    [kept] = list(iter_clean_documents(tmp_path / "out"))
    assert kept.text == "the cat" and kept.meta["perplexity"] == pytest.approx(1.6, abs=0.05)
    assert report["rejected"]["perplexity_too_high"]["count"] == 1


def test_kenlm_bad_file(tmp_path):
    (tmp_path / "bad.arpa").write_text("not a model")
    with pytest.raises(ConfigError, match="data.perplexity.kenlm: cannot load"):
        KenLMScorer(str(tmp_path / "bad.arpa"))
    with pytest.raises(ConfigError, match="set either kenlm or model"):
        PerplexityConfig(enabled=True, kenlm="a.arpa", model="run")
