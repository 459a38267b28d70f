"""data.html_extractor: resiliparse extracts the main text of an HTML page through the data stage."""

import pytest

from lmforge.data.config import DataConfig
from lmforge.data.document import iter_clean_documents
from lmforge.data.executor import run_data_stage
from lmforge.errors import ConfigError

pytest.importorskip("resiliparse")

PAGE = """<html><head><title>t</title><script>var x = 1;</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<article><h1>On tides</h1><p>The tides rise and fall twice a day because the moon pulls on the oceans.</p>
<p>Spring tides happen when the sun and moon line up, and neap tides when they are at right angles.</p></article>
<footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>"""


def test_resiliparse_extractor(tmp_path):
    (tmp_path / "p.html").write_text(PAGE)
    run_data_stage(DataConfig(inputs=[str(tmp_path / "p.html")], html_extractor="resiliparse", plots=False),
                   tmp_path / "out", progress=False)
    [doc] = list(iter_clean_documents(tmp_path / "out"))
    assert "moon pulls on the oceans" in doc.text and "Spring tides" in doc.text
    assert "var x" not in doc.text and doc.meta["extractor"] == "resiliparse"
    with pytest.raises(ConfigError, match="data.html_extractor"):
        DataConfig(html_extractor="nope")
