"""Web readers: HTML files and WARC/WET archives (streamed record by record with warcio).

HTML documents keep the page's markup as their text with `meta["format"] = "html"`; the
`HtmlExtract` step (see `html.py`) turns it into main text later, so WARC responses and `.html` files
share one extraction path. Charset: the HTTP header's, else the page's `<meta charset>` /
`http-equiv`, else UTF-8 under `data.encoding_errors`. ISO-8859-1 and US-ASCII are decoded as
windows-1252, as browsers do (WHATWG Encoding Standard).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from lmforge.data.document import Document
from lmforge.io import read_capped

if TYPE_CHECKING:  # pragma: no cover
    from lmforge.data.readers import _Source

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([a-zA-Z0-9_.:-]+)", re.IGNORECASE)
_WHATWG_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252",
                   "ascii": "cp1252", "iso8859-1": "cp1252", "l1": "cp1252"}
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain",)


def declared_charset(raw: bytes, content_type: str | None = None) -> str | None:
    """The charset a page declares (HTTP header first, then a BOM, then <meta> in the first 4 KB);
    None when it declares none or names an unknown codec."""
    names = []
    if content_type and (m := _HEADER_CHARSET.search(content_type)):
        names.append(m.group(1))
    if raw.startswith(b"\xef\xbb\xbf"):
        names.append("utf-8")
    if m := _META_CHARSET.search(raw[:4096]):
        names.append(m.group(1).decode("ascii", "replace"))
    for name in names:
        name = _WHATWG_ALIASES.get(name.lower(), name.lower())
        try:
            return codecs.lookup(name).name
        except LookupError:
            continue
    return None


def decode_html(src: _Source, raw: bytes, line: int, total: int, content_type: str | None = None,
                **meta: object) -> Document:
    """A Document whose text is the decoded page; UTF-8 (and undeclared) pages follow the policy."""
    charset = declared_charset(raw, content_type)
    if charset in (None, "utf-8"):
        d = src.doc(raw, line, total=total, format="html", **meta)
    else:
        text = raw.decode(charset, errors="replace")
        d = Document(f"{src.path}:{line}", text, {"source": src.path, "line": line, "format": "html", **meta})
        if total > len(raw):
            d.meta.update(truncated=True, bytes=total)
            src.reject(d, "too_long", None)
    d.meta["charset"] = charset or "utf-8"
    return d


def read_html(src: _Source, f: IO[bytes]) -> Iterator[Document]:
    cap = src.opts.max_record_bytes
    raw, total = read_capped(f, cap)
    if raw.strip():
        d = decode_html(src, raw[:cap], 1, total)
        d.id = src.path
        yield d


def _header(rec: object, name: str) -> str | None:
    return rec.rec_headers.get_header(name)


def read_warc(src: _Source, f: IO[bytes]) -> Iterator[Document]:
    """HTML responses (HTTP 2xx) and WET `conversion` records become documents; other responses are
    rejected as `http_status` / `unsupported_content_type`; request, warcinfo and metadata records are
    not documents and are only counted (`src.skipped`)."""
    from warcio.archiveiterator import ArchiveIterator

    cap = src.opts.max_record_bytes
    for n, rec in enumerate(ArchiveIterator(f, no_record_parse=False, arc2warc=True), 1):
        kind = rec.rec_type
        if kind not in ("response", "conversion", "resource"):
            src.skipped[kind] = src.skipped.get(kind, 0) + 1
            continue
        meta = {"record": n, "url": (_header(rec, "WARC-Target-URI") or "").strip("<>") or None,
                "date": _header(rec, "WARC-Date"), "warc_record_id": _header(rec, "WARC-Record-ID")}
        if lang := _header(rec, "WARC-Identified-Content-Language"):
            meta["cc_lang"] = lang
        if kind == "response" and rec.http_headers is not None:
            ctype = rec.http_headers.get_header("Content-Type") or ""
            status = rec.http_headers.get_statuscode() or ""
        else:
            ctype = _header(rec, "Content-Type") or ("text/plain" if kind == "conversion" else "")
            status = "200"
        mime = ctype.split(";")[0].strip().lower()
        if kind == "resource" and mime not in HTML_TYPES:
            src.skipped[kind] = src.skipped.get(kind, 0) + 1  # crawler logs and the like
            continue
        stream = rec.content_stream()
        raw, total = read_capped(stream, cap)
        raw = raw[:cap]
        if not status.startswith("2"):
            d = Document(f"{src.path}:{n}", "", {"source": src.path, **meta, "http_status": status})
            yield src.reject(d, "http_status", f"HTTP {status}")
        elif mime in HTML_TYPES:
            d = decode_html(src, raw, n, total, ctype, **meta)
            d.meta.pop("line")
            yield d
        elif mime in TEXT_TYPES or kind == "conversion":
            d = src.doc(raw, n, total=total, **meta)
            d.meta.pop("line")
            yield d
        else:
            d = Document(f"{src.path}:{n}", "", {"source": src.path, **meta, "content_type": mime})
            yield src.reject(d, "unsupported_content_type", f"content type {mime or 'missing'}")
