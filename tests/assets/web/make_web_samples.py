"""Writes a small crawl (WARC) and its text extract (WET) around the HTML pages in this folder.

Used by the `web_samples` fixture in tests/conftest.py; run by hand to look at the files:
`python tests/assets/web/make_web_samples.py OUT_DIR`. Everything is deterministic (fixed record
ids and dates). Each record is its own gzip member, as crawlers write them.

sample.warc.gz, record by record (the number is the reader's `meta["record"]`):
   1 warcinfo
   2 request    en_blog.html
   3 response   en_blog.html, WARC-Target-URI written `<...>` (the WARC 1.0 grammar's form)
   4 request    de_verein.html
   5 response   de_verein.html (windows-1252, `charset=ISO-8859-1` in the HTTP header), `Transfer-Encoding:
                chunked` with chunk borders inside words and tags ("L|eichtathletik", "Tr|ainer")
   6 request    a missing page
   7 response   404 Not Found
   8 request    an image
   9 response   200 image/png
  10 metadata   the crawl's manifest
  11 resource   text/plain crawler log
  12 resource   text/plain crawler arguments
  13 resource   text/html en_rainfall.html (a page archived as a resource)
sample.warc.wet / sample.warc.wet.gz: warcinfo + one `conversion` record (Spanish, tagged `spa`).
"""

from __future__ import annotations

import sys
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARCINFO_ID = "<urn:uuid:4f1c8a52-0d3e-4b7a-9c61-2e5b7d9a0001>"
BLOG_URL = "https://fieldnotes.example.org/2023/10/rooftop-bees/"
VEREIN_URL = "http://www.tsv-gruenwiesen.example.de/aktuelles/sommerfest-2023.html"
RAINFALL_URL = "https://hollins-moor-weather.example.net/rainfall/"
WET_URL = "https://es.wiki.example.org/wiki/Torrecilla_del_Monte"
CHUNK_SIZES = (517, 1000, 333)  # then 1000-byte chunks: uneven sizes, as servers send them

WET_TEXT = """Torrecilla del Monte - Enciclopedia libre
Torrecilla del Monte
Torrecilla del Monte es un municipio de la provincia de Soria, en la comunidad autónoma de Castilla y León, \
España. Se encuentra a unos mil cien metros de altitud, en un valle rodeado de pinares y campos de cereal.
Historia
El pueblo aparece por primera vez en un documento del siglo XII, cuando sus tierras pertenecían a un monasterio \
cercano. Durante la Edad Media vivió del ganado lanar y del comercio de la lana con las ciudades del norte.
En el siglo XX muchos vecinos emigraron a Madrid, a Barcelona y al extranjero, y la población bajó de casi \
ochocientas personas a menos de doscientas.
Patrimonio
La iglesia parroquial, dedicada a San Miguel, conserva una portada románica con capiteles decorados con animales \
y plantas. En las afueras del pueblo se levanta una ermita y un puente de piedra sobre el río.
Fiestas
Las fiestas mayores se celebran a finales de septiembre, con procesión, baile en la plaza y una comida popular \
en la que participan los vecinos y los que vuelven al pueblo durante el verano.
"""


def _id(n: int) -> str:
    return f"<urn:uuid:4f1c8a52-0d3e-4b7a-9c61-2e5b7d9a{n:04d}>"


def _chunked(body: bytes) -> bytes:
    """`body` in HTTP/1.1 chunked transfer coding: hex size, CRLF, data, CRLF, ..., `0` CRLF CRLF."""
    out, pos, sizes = [], 0, list(CHUNK_SIZES)
    while pos < len(body):
        n = sizes.pop(0) if sizes else 1000
        piece = body[pos:pos + n]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        pos += n
    return b"".join(out) + b"0\r\n\r\n"


class _Crawl:
    """Writes records with fixed ids and dates: the n-th record gets id n and second n of the crawl."""

    def __init__(self, f, *, gzip: bool, day: str) -> None:
        from warcio.warcwriter import WARCWriter

        self.writer, self.day, self.n = WARCWriter(f, gzip=gzip), day, 0

    def write(self, kind: str, uri: str | None, body: bytes = b"", *, http=None, content_type: str | None = None,
              **extra: str) -> None:
        self.n += 1
        headers = {"WARC-Record-ID": _id(self.n), "WARC-Date": f"{self.day}T09:14:{self.n:02d}Z", **extra}
        if kind != "warcinfo":
            headers["WARC-Warcinfo-ID"] = WARCINFO_ID
        if content_type:
            headers["Content-Type"] = content_type
        rec = self.writer.create_warc_record(uri or "", kind, payload=BytesIO(body), length=len(body),
                                             warc_headers_dict=headers, http_headers=http)
        self.writer.write_record(rec)

    def warcinfo(self, filename: str) -> None:
        info = (f"software: lmforge test generator\r\nformat: WARC File Format 1.0\r\n"
                f"isPartOf: lmforge-test-crawl\r\nfilename: {filename}\r\n").encode()
        self.write("warcinfo", None, info, content_type="application/warc-fields", **{"WARC-Filename": filename})
        assert _id(self.n) == WARCINFO_ID

    def fetch(self, url: str, status: str, ctype: str, body: bytes, *, uri: str | None = None,
              extra_http: list[tuple[str, str]] = ()) -> None:
        """A request record and its response record."""
        from urllib.parse import urlsplit

        from warcio.statusandheaders import StatusAndHeaders

        parts = urlsplit(url)
        request = StatusAndHeaders(f"GET {parts.path or '/'} HTTP/1.1", [
            ("Host", parts.netloc), ("User-Agent", "lmforge-test-crawler/1.0"), ("Accept", "*/*")],
            is_http_request=True)
        self.write("request", uri or url, http=request)
        headers = [("Date", "Tue, 05 Mar 2024 09:14:00 GMT"), ("Server", "nginx"), ("Content-Type", ctype),
                   *extra_http]
        if not any(k == "Transfer-Encoding" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        response = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
        self.write("response", uri or url, body, http=response, **{"WARC-Concurrent-To": _id(self.n)})


def write_warc(path: Path) -> Path:
    page = (HERE / "en_blog.html").read_bytes()
    verein = (HERE / "de_verein.html").read_bytes()
    with open(path, "wb") as f:
        crawl = _Crawl(f, gzip=True, day="2024-03-05")
        crawl.warcinfo(path.name)
        crawl.fetch(BLOG_URL, "200 OK", "text/html; charset=utf-8", page, uri=f"<{BLOG_URL}>")
        crawl.fetch(VEREIN_URL, "200 OK", "text/html; charset=ISO-8859-1", _chunked(verein),
                    extra_http=[("Transfer-Encoding", "chunked")])
        crawl.fetch(BLOG_URL + "comments/feed/", "404 Not Found", "text/html",
                    b"<html><body><h1>404 Not Found</h1><p>nginx</p></body></html>")
        crawl.fetch("https://fieldnotes.example.org/img/hive.png", "200 OK", "image/png",
                    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17))
        manifest = b"sample.warc.gz\r\ncrawl.log\r\narguments.txt\r\n"
        crawl.write("metadata", "metadata://example.org/crawler/MANIFEST.txt", manifest, content_type="text/plain")
        log = b"2024-03-05 09:14:02 200 " + BLOG_URL.encode() + b"\n2024-03-05 09:14:06 404 comments/feed/\n"
        crawl.write("resource", "metadata://example.org/crawler/crawl.log", log, content_type="text/plain")
        crawl.write("resource", "metadata://example.org/crawler/arguments.txt", b"--warc-file=sample --level=1\n",
                    content_type="text/plain")
        crawl.write("resource", RAINFALL_URL, (HERE / "en_rainfall.html").read_bytes(),
                    content_type="text/html; charset=utf-8")
    return path


def write_wet(path: Path, *, gzip: bool) -> Path:
    with open(path, "wb") as f:
        crawl = _Crawl(f, gzip=gzip, day="2024-05-18")
        crawl.warcinfo(path.name)
        crawl.write("conversion", WET_URL, WET_TEXT.encode(), content_type="text/plain",
                    **{"WARC-Refers-To": _id(99), "WARC-Identified-Content-Language": "spa"})
    return path


def write_samples(out: Path) -> dict[str, Path]:
    """Writes the three files into `out`; returns them by name (`warc`, `wet`, `wet_gz`)."""
    out.mkdir(parents=True, exist_ok=True)
    return {"warc": write_warc(out / "sample.warc.gz"), "wet": write_wet(out / "sample.warc.wet", gzip=False),
            "wet_gz": write_wet(out / "sample.warc.wet.gz", gzip=True)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/assets/web/make_web_samples.py OUT_DIR")
    for name, p in write_samples(Path(sys.argv[1])).items():
        print(f"{name}: {p} ({p.stat().st_size} bytes)")
