"""Readers for compressed JSONL, parquet, HTML and WARC/WET, and HTML extraction."""

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from lmforge.data.readers import ReadOptions, expand_inputs, file_format, read_source
from lmforge.data.readers_web import declared_charset
from lmforge.errors import DataError

WEB = Path(__file__).resolve().parents[1] / "assets" / "web"  # pages written for these tests


def _read(path, warnings=None, skipped=None, **kw):
    opts = ReadOptions(warn=(warnings.append if warnings is not None else lambda m: None), **kw)
    return list(read_source(str(path), opts, skipped))


ROWS = [{"text": "alpha", "n": 1}, {"text": "beta", "n": 2}]


def _jsonl(rows):
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def test_file_format_looks_through_compression():
    assert [file_format(n) for n in ("a.JSONL.gz", "b.jsonl.zst", "c.warc.gz", "d.wet", "e.htm", "f.parquet",
                                     "g.txt.gz", "h.bin")] == [
        "jsonl", "jsonl", "warc", "warc", "html", "parquet", "text", "unknown"]


@pytest.mark.parametrize("suffix, compress", [(".jsonl.gz", gzip.compress),
                                              (".jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b))])
def test_compressed_jsonl(tmp_path, suffix, compress):
    p = tmp_path / f"d{suffix}"
    p.write_bytes(compress(_jsonl(ROWS)))
    docs = _read(p)
    assert [(d.text, d.meta["n"], d.meta["line"]) for d in docs] == [("alpha", 1, 1), ("beta", 2, 2)]
    assert expand_inputs([str(tmp_path)]) == [str(p)]


def test_truncated_gz_keeps_records_read_and_rejects_the_rest(tmp_path):
    rows = [{"text": f"document number {i} " * 20} for i in range(2000)]
    blob = gzip.compress(_jsonl(rows))
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(blob[: len(blob) // 2])
    warnings = []
    docs = _read(p, warnings)
    good = [d for d in docs if "reject_reason" not in d.meta]
    assert 0 < len(good) < 2000 and [d.text for d in good] == [r["text"] for r in rows[: len(good)]]
    assert docs[-1].meta["reject_reason"] == "corrupt_input" and docs[-1].meta["line"] == len(good) + 1
    assert "EOFError" in docs[-1].meta["reject_detail"] and warnings and str(p) in warnings[-1]
    with pytest.raises(DataError, match="cut.jsonl.gz"):
        _read(p, on_error="fail")


def test_parquet_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    table = pa.table({"body": ["first doc", None, "third doc"], "key": ["a", "b", "c"], "score": [0.5, 1.0, 2.0]})
    pq.write_table(table, p, row_group_size=2)
    docs = _read(p, text_field="body", id_field="key")
    assert [(d.id, d.text, d.meta.get("score"), d.meta["line"]) for d in docs] == [
        ("a", "first doc", 0.5, 1), ("b", "", 1.0, 2), ("c", "third doc", 2.0, 3)]
    assert docs[1].meta["reject_reason"] == "missing_field"
    (bad,) = _read(p, text_field="text")
    assert bad.meta["reject_reason"] == "missing_field" and "no column 'text'" in bad.meta["reject_detail"]


def test_declared_charset():
    assert declared_charset(b'<meta charset="ISO-8859-1">') == "cp1252"  # WHATWG: latin-1 means windows-1252
    assert declared_charset(b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">') == "koi8-r"
    assert declared_charset(b"<html>", "text/html; charset=UTF-8") == "utf-8"
    assert declared_charset(b'<meta charset="no-such-codec">') is None


def test_html_file_honours_declared_charset(tmp_path):
    p = tmp_path / "p.html"
    p.write_bytes('<html><head><meta charset="iso-8859-1"></head><body><p>Grüße</p></body></html>'.encode("latin-1"))
    (d,) = _read(p)
    assert "Grüße" in d.text and d.meta["format"] == "html" and d.meta["charset"] == "cp1252"
    assert "utf8_replaced" not in d.meta and d.id == str(p)


def test_latin1_page_decodes_cleanly():
    (d,) = _read(WEB / "de_verein.html")  # declares iso-8859-1 and uses windows-1252's €, „ “ and –, as pages do
    assert d.meta["charset"] == "cp1252" and "\ufffd" not in d.text
    assert "Grünwiesen" in d.text and "3.450 €" in d.text and "„Wir haben" in d.text and "600 Gäste – so" in d.text


BLOG_URL = "https://fieldnotes.example.org/2023/10/rooftop-bees/"
VEREIN_URL = "http://www.tsv-gruenwiesen.example.de/aktuelles/sommerfest-2023.html"


def test_warc_responses_with_url_and_date(web_samples):
    skipped = {}
    docs = _read(web_samples["warc"], skipped=skipped)
    assert skipped == {"warcinfo": 1, "request": 4, "metadata": 1, "resource": 2}  # the crawler's own files
    pages = [d for d in docs if "reject_reason" not in d.meta]
    assert [(d.meta["record"], d.meta["url"]) for d in pages] == [
        (3, BLOG_URL), (5, VEREIN_URL), (13, "https://hollins-moor-weather.example.net/rainfall/")]
    assert all(d.meta["format"] == "html" for d in pages)
    d = pages[0]
    assert d.meta["url"] == BLOG_URL  # written <...> in the file, as Wget 1.19 did
    assert d.meta["date"] == "2024-03-05T09:14:03Z" and d.meta["record"] == 3 and d.id == f"{web_samples['warc']}:3"
    assert d.meta["warc_record_id"] == "<urn:uuid:4f1c8a52-0d3e-4b7a-9c61-2e5b7d9a0003>"
    assert d.text == (WEB / "en_blog.html").read_text("utf-8") and d.meta["charset"] == "utf-8"
    chunked = pages[1]  # chunked transfer-encoding undone, decoded with the HTTP header's charset
    assert chunked.text == (WEB / "de_verein.html").read_bytes().decode("cp1252")
    assert chunked.meta["charset"] == "cp1252" and chunked.meta["date"] == "2024-03-05T09:14:05Z"
    rejected = {d.meta["record"]: (d.meta["reject_reason"], d.meta["url"]) for d in docs if "reject_reason" in d.meta}
    assert rejected == {7: ("http_status", BLOG_URL + "comments/feed/"),
                        9: ("unsupported_content_type", "https://fieldnotes.example.org/img/hive.png")}


@pytest.mark.parametrize("name", ["wet", "wet_gz"])
def test_wet_conversion_records(web_samples, name):
    (d,) = _read(web_samples[name])
    assert d.text.startswith("Torrecilla del Monte - Enciclopedia libre\n") and "format" not in d.meta
    assert d.text.rstrip().endswith("durante el verano.") and "autónoma" in d.text
    assert d.meta["url"] == "https://es.wiki.example.org/wiki/Torrecilla_del_Monte" and d.meta["cc_lang"] == "spa"
    assert d.meta["record"] == 2 and d.meta["date"] == "2024-05-18T09:14:02Z"


def test_html_extraction_main_text_and_fallback(monkeypatch):
    from lmforge.data import extract
    from lmforge.data.document import Document
    from lmforge.data.extract import HtmlExtract, extract_selectolax

    def all_text_nodes(html):  # the naive baseline: every text node but scripts and styles
        return extract_selectolax(html, drop=("script", "style", "noscript"))

    (page,) = _read(WEB / "en_blog.html")
    naive = all_text_nodes(page.text)  # the baseline keeps the page's chrome
    step = HtmlExtract()
    out = step.process(page)
    assert out.text.startswith("What a year of rooftop beekeeping taught me\nLast spring I carried two wooden hives")
    assert out.text.endswith("going on above their heads.") and "<div" not in out.text and "<p>" not in out.text
    assert out.meta["extractor"] == "trafilatura"
    for chrome in ("This website uses cookies", "Manage settings", "About me", "Too many tomatoes", "Recent posts",
                   "Subscribe", "All rights reserved", "Privacy policy", "Share this post", "Great write-up"):
        assert chrome in naive and chrome not in out.text, chrome
    assert all_text_nodes("<p>a</p><script>x=1</script>") == "a"
    monkeypatch.setattr(extract, "extract_trafilatura", lambda *a, **k: "")  # trafilatura finds nothing
    tiny = Document("t", "<html><body><nav>Home</nav><p>Just one line.</p><script>x=1</script></body></html>",
                    {"format": "html"})
    got = HtmlExtract().process(tiny)
    assert got.text == "Just one line." and got.meta["extractor"] == "selectolax"
    empty = Document("e", "<html><body><script>x=1</script></body></html>", {"format": "html"})
    seen = []
    step.sink = seen.append
    assert step.process(empty) is None and seen[0].meta["reject_reason"] == "no_text"
