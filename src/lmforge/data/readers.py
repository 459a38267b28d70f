"""Readers: input paths -> Documents, streamed record by record.

* `expand_inputs` turns files, directories (recursive), globs and `builtin:` corpora into a list of
  sources, failing loudly on a path that does not exist.
* `read_source` yields the documents of one source. A record that cannot be read (malformed JSON,
  missing text field, undecodable bytes under `encoding_errors: reject`, binary file) is yielded as a
  document with `meta["reject_reason"]` set, so the pipeline counts and keeps it; nothing is dropped
  silently. A truncated `.gz` or `.zst` file keeps the records read before the damage and ends with
  one `corrupt_input` reject; a broken symlink among the inputs is a `broken_symlink` reject.
* Input fields never steer the pipeline: a record's own `reject_reason` / `reject_detail` /
  `reject_step` (top level or in `meta`) is kept as `meta.input_reject_reason` etc.
* Memory is bounded: a record larger than `max_record_bytes` is never held whole; only its first
  bytes are kept (as a `too_long` reject, `meta["truncated"] = True`).
"""

from __future__ import annotations

import errno
import glob
import gzip
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard

from lmforge.data.builtin import BUILTIN_STDLIB, BUILTIN_TEXTS, builtin_text_path
from lmforge.data.document import Document, json_safe
from lmforge.data.readers_hf import HF_PREFIX, hf_sources, read_hf
from lmforge.data.readers_web import read_html, read_warc
from lmforge.data.zstd_frames import ZstdFrames
from lmforge.errors import DataError
from lmforge.io import read_capped

TEXT_EXTS = (".txt", ".text", ".md", ".rst")
JSONL_EXTS = (".jsonl", ".ndjson")
HTML_EXTS = (".html", ".htm", ".xhtml")
WARC_EXTS = (".warc", ".wet", ".arc")
PARQUET_EXTS = (".parquet",)
COMPRESSED_EXTS = (".gz", ".zst")
SUPPORTED_EXTS = TEXT_EXTS + JSONL_EXTS + HTML_EXTS + WARC_EXTS + PARQUET_EXTS
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile(r"[\ud800-\udfff]")
PREVIEW_BYTES = 2000  # how much of an over-long record is kept in its reject


@dataclass
class ReadOptions:
    txt_mode: str = "paragraphs"
    text_field: str = "text"
    id_field: str | None = None
    encoding_errors: str = "replace"
    on_error: str = "skip"
    max_record_bytes: int = 4_000_064
    warn: Any = None  # callable(str) for one-line warnings; default prints to stderr


@dataclass
class _Warner:
    limit: int = 50
    count: int = 0
    suppressed: int = field(default=0)

    def __call__(self, msg: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            print(f"lmforge data: warning: {msg}", file=sys.stderr)
        elif self.count == self.limit + 1:
            print("lmforge data: warning: further warnings suppressed (see rejected/ and report.json)", file=sys.stderr)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, directories (recursive, supported extensions only) and globs -> ordered unique sources."""
    if not inputs:
        raise DataError("no inputs: set data.inputs to files, directories, globs, builtin:stdlib or "
                        "builtin:shakespeare")
    out: list[str] = []
    for item in inputs:
        if item == BUILTIN_STDLIB:
            out.append(item)
        elif item in BUILTIN_TEXTS:
            out.append(builtin_text_path(item))
        elif item.startswith("builtin:"):
            raise DataError(f"data.inputs: unknown built-in corpus {item!r} "
                            f"(built in: {', '.join([BUILTIN_STDLIB, *BUILTIN_TEXTS])})")
        elif item.startswith(HF_PREFIX):  # a Hugging Face dataset: one source per shard
            out.extend(hf_sources(item))
        elif any(c in item for c in "*?["):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file() or _broken_link(p))
            if not matches:
                raise DataError(f"data.inputs: the glob {item!r} matches no files")
            out.extend(matches)
        elif Path(item).is_dir():
            files = sorted(str(p) for p in Path(item).rglob("*") if not p.name.startswith(".") and (
                (p.is_file() and file_format(p.name) != "unknown") or _broken_link(str(p))))
            if not files:
                raise DataError(f"data.inputs: the directory {item} holds no readable files "
                                f"(looked for {', '.join(SUPPORTED_EXTS)})")
            out.extend(files)
        elif Path(item).is_file():
            out.append(item)
        else:
            raise DataError(f"data.inputs: {item} does not exist (check the path; globs need quotes in a shell)")
    return list(dict.fromkeys(out))


def _broken_link(path: str) -> str | None:
    """Why `path` is a symlink that cannot be read (dangling or looping), or None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        target = os.readlink(path)
        if e.errno == errno.ELOOP:
            return f"symlink loop (-> {target})"
        return f"dangling symlink (-> {target}: {e.strerror})"
    return None


def _ext(name: str) -> str:
    return Path(name).suffix.lower()


def file_format(name: str) -> str:
    """`text`, `jsonl`, `html`, `warc`, `parquet` or `unknown`, from the name (`.gz`/`.zst` looked through)."""
    name = name.lower()
    for comp in COMPRESSED_EXTS:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    ext = _ext(name)
    for fmt, exts in (("text", TEXT_EXTS), ("jsonl", JSONL_EXTS), ("html", HTML_EXTS), ("warc", WARC_EXTS),
                      ("parquet", PARQUET_EXTS)):
        if ext in exts:
            return fmt
    return "unknown"


def open_stream(path: str) -> IO[bytes]:
    """A buffered binary stream of the file's content, decompressing `.gz` and `.zst` on the fly."""
    low = path.lower()
    if low.endswith(".gz"):
        return gzip.open(path, "rb")  # multi-member aware; raises EOFError when truncated
    if low.endswith(".zst"):
        return io.BufferedReader(ZstdFrames(path), 1 << 16)
    return open(path, "rb")


def decode(raw: bytes, policy: str) -> tuple[str, int]:
    """UTF-8 decode. Returns (text, number of invalid byte sequences replaced by U+FFFD).
    With policy `reject` the caller rejects when the count is > 0; the text is still the replaced one."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")


def _records(f: IO[bytes], cap: int) -> Iterator[tuple[int, bytes, int]]:
    """Lines of a binary stream as (line number, bytes without the newline, full byte length).
    A line longer than `cap` is returned as its first PREVIEW_BYTES only; the rest is skipped in chunks."""
    n = 0
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        n += 1
        if n == 1 and line.startswith(_BOM):
            line = line[3:]
        if len(line) > cap and not line.endswith(b"\n"):
            total = len(line)
            head = line[:PREVIEW_BYTES]
            while True:
                chunk = f.readline(1 << 20)
                total += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    total -= len(chunk) - len(chunk.rstrip(b"\r\n"))
                    break
            yield n, head, total
            continue
        body = line.rstrip(b"\n").rstrip(b"\r")
        yield n, body, len(body)


class _Source:
    """Turns raw records of one file into Documents (or counted rejects)."""

    def __init__(self, path: str, opts: ReadOptions) -> None:
        self.path, self.opts = path, opts
        self.warn = opts.warn or _Warner()
        self.skipped: dict[str, int] = {}  # WARC records that are not documents, by type

    def doc(self, raw: bytes, line: int, doc_id: str | None = None, total: int | None = None,
            **meta: Any) -> Document:
        text, bad = decode(raw, self.opts.encoding_errors)
        meta = {"source": self.path, "line": line, **meta}
        d = Document(doc_id or f"{self.path}:{line}", text, meta)
        if total is not None and total > len(raw):
            meta.update(truncated=True, bytes=total)
            return self.reject(d, "too_long", None)
        if bad:
            meta["utf8_replaced"] = bad
            if self.opts.encoding_errors == "reject":
                return self.reject(d, "invalid_utf8", f"{bad} invalid UTF-8 byte sequence(s)")
        return d

    def reject(self, d: Document, reason: str, detail: str | None) -> Document:
        d.meta["reject_reason"] = reason
        if detail is not None:
            d.meta["reject_detail"] = detail
        return d

    def error(self, d: Document, reason: str, detail: str) -> Document:
        """A malformed record: `on_error: fail` raises, `skip` warns on stderr and counts a reject."""
        where = f"{self.path}:{d.meta['line']}"
        if self.opts.on_error == "fail":
            raise DataError(f"{where}: {detail} (set data.on_error=skip to reject such records and go on)")
        self.warn(f"{where}: {detail}; rejected as {reason}")
        return self.reject(d, reason, detail)


def _read_text(src: _Source, f: IO[bytes]) -> Iterator[Document]:
    mode, cap = src.opts.txt_mode, src.opts.max_record_bytes
    if mode == "file":
        raw, total = read_capped(f, cap)
        if total > cap:
            raw = raw[:PREVIEW_BYTES]
        if raw.startswith(_BOM):
            raw, total = raw[3:], total - 3
        if raw:  # a whitespace-only file becomes a (too_short) reject; an empty file holds no document
            yield src.doc(raw, 1, doc_id=src.path, total=total)
        return
    if mode == "continuous":
        yield from _read_continuous(src, f, cap)
        return
    if mode == "lines":
        for n, raw, total in _records(f, cap):
            if raw.strip():
                yield src.doc(raw, n, total=total)
        return
    block: list[bytes] = []
    start, size, index = 0, 0, 0
    for n, raw, total in itertools.chain(_records(f, cap), [(0, b"", 0)]):  # sentinel blank line flushes
        if raw.strip():
            if not block:
                start, size = n, 0
            if size <= cap:  # past the cap, keep counting bytes but stop buffering
                block.append(raw)
            size += total + 1
            continue
        if block:
            joined = b"\n".join(block)
            yield src.doc(joined[: cap if size <= cap else PREVIEW_BYTES], start, total=size - 1, block=index)
            block, index = [], index + 1


def _read_continuous(src: _Source, f: IO[bytes], cap: int) -> Iterator[Document]:
    """The whole text, blank lines included, as consecutive pieces of about `cap // 8` bytes (a book
    fits the data stage's per-document limits). A piece ends between two non-blank lines, so the
    source is exactly the pieces joined with "\n" even after whitespace cleaning; pieces after the
    first carry `meta["continues"] = True` and the tokens stage joins them again (`tokens.split`)."""
    target = min(1 << 20, max(4096, cap // 8))
    lines: list[bytes] = []
    start, size, piece, prev_blank = 1, 0, 0, True

    def flush() -> Document:
        return src.doc(b"\n".join(lines), start, doc_id=f"{src.path}#{piece}", piece=piece, continues=piece > 0)

    for n, raw, total in _records(f, cap):
        blank = not raw.strip()
        if lines and (total > len(raw) or (size >= target and not blank and not prev_blank)
                      or size + total > cap // 2):
            yield flush()
            lines, start, size, piece = [], n, 0, piece + 1
        if total > len(raw):  # one line longer than the record limit: a counted too_long reject
            yield src.doc(raw, n, total=total)
            prev_blank = True
            continue
        lines.append(raw)
        size += total + 1
        prev_blank = blank
    if any(x.strip() for x in lines):
        yield flush()


def _read_jsonl(src: _Source, f: IO[bytes]) -> Iterator[Document]:
    opts = src.opts
    for n, raw, total in _records(f, opts.max_record_bytes):
        if not raw.strip():
            continue  # blank lines separate nothing in JSONL; they are not records
        d = src.doc(raw, n, total=total)
        if "reject_reason" in d.meta:
            yield d
            continue
        try:
            obj = json.loads(d.text)
        except json.JSONDecodeError as e:
            yield src.error(d, "malformed_json", f"malformed JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(obj, dict):
            yield src.error(d, "malformed_json", f"expected a JSON object, got {type(obj).__name__}")
            continue
        text = obj.pop(opts.text_field, None)
        if not isinstance(text, str):
            what = "missing" if text is None else f"not a string ({type(text).__name__})"
            yield src.error(d, "missing_field", f"text field {opts.text_field!r} is {what} (see data.text_field)")
            continue
        doc_id = obj.pop(opts.id_field, None) if opts.id_field else None
        extra = obj.pop("meta") if isinstance(obj.get("meta"), dict) else {}
        meta = {**_inert(obj), **_inert(extra), "source": src.path, "line": n}
        if d.meta.get("utf8_replaced"):
            meta["utf8_replaced"] = d.meta["utf8_replaced"]
        if b"\\ud" in raw or b"\\uD" in raw:  # JSON escapes can smuggle lone surrogates (unencodable)
            text, meta = _fix_surrogates(text, meta)
        yield Document(str(doc_id) if doc_id is not None else f"{src.path}:{n}", text, meta)


_STEERING = ("reject_reason", "reject_detail", "reject_step")


def _inert(fields: dict[str, Any]) -> dict[str, Any]:
    """Input fields that the pipeline itself sets (a reject reason) renamed `input_<name>`, so a
    record from an earlier run's rejected/ is judged afresh, never rejected because of its own field."""
    if not any(k in fields for k in _STEERING):
        return fields
    return {(f"input_{k}" if k in _STEERING else k): v for k, v in fields.items()}


def _fix_surrogates(text: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    n = len(_SURROGATE.findall(text))
    if n:
        text = _SURROGATE.sub("\ufffd", text)
        meta["utf8_replaced"] = meta.get("utf8_replaced", 0) + n
    meta = json.loads(_SURROGATE.sub("\ufffd", json.dumps(meta, ensure_ascii=False)).encode("utf-8", "replace"))
    return text, meta


def _looks_binary(head: bytes) -> bool:
    """NUL-heavy or mostly undecodable bytes: an image, archive or executable, not text."""
    if not head:
        return False
    if head.count(b"\x00") > len(head) // 100 + 2:
        return True
    text = head.decode("utf-8", errors="replace")
    return text.count("\ufffd") > len(text) // 4


def read_source(source: str, opts: ReadOptions, skipped: dict[str, int] | None = None) -> Iterator[Document]:
    """Documents of one source (a file path or `builtin:stdlib`). A file that is cut short (truncated
    .gz/.zst, unreadable parquet) yields the documents read so far, then one `corrupt_input` reject."""
    if source == BUILTIN_STDLIB:
        from lmforge.data.builtin import iter_stdlib_documents

        yield from iter_stdlib_documents()
        return
    src = _Source(source, opts)
    if why := _broken_link(source):
        yield src.error(Document(source, "", {"source": source, "line": 0}), "broken_symlink", why)
        return
    if source.startswith(HF_PREFIX):
        yield from read_hf(source, opts.text_field, opts.id_field, src.error)
        return
    fmt = file_format(source)
    n = 0
    try:
        if fmt == "parquet":
            yield from _read_parquet(src)
            return
        with open_stream(source) as f:
            head = f.peek(8192)[:8192] if fmt in ("text", "jsonl", "unknown") else b""
            if _looks_binary(head):
                src.warn(f"{source}: looks binary (NUL bytes or mostly invalid UTF-8); rejected as binary")
                d = Document(source, head[:PREVIEW_BYTES].decode("utf-8", "replace"), {"source": source, "line": 1})
                yield src.reject(d, "binary", "file looks binary")
                return
            for n, d in enumerate(_READERS[fmt](src, f), 1):  # noqa: B007 - n is used after the loop
                yield d
    except FileNotFoundError as e:
        raise DataError(f"{source}: disappeared while reading ({e.strerror})") from e
    except (EOFError, OSError, zstandard.ZstdError, ValueError, _ArchiveLoadFailed) as e:
        detail = f"unreadable after {n} record(s): {type(e).__name__}: {e}"
        d = Document(f"{source}:corrupt", "", {"source": source, "line": n + 1})
        yield src.error(d, "corrupt_input", detail)
    finally:
        if skipped is not None:
            for k, v in src.skipped.items():
                skipped[k] = skipped.get(k, 0) + v


def _read_parquet(src: _Source) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"{src.path}: reading .parquet needs pyarrow (pip install pyarrow)") from e

    opts = src.opts
    pf = pq.ParquetFile(src.path)
    names = pf.schema_arrow.names
    if opts.text_field not in names:
        d = Document(f"{src.path}:schema", "", {"source": src.path, "line": 0, "columns": names})
        yield src.error(d, "missing_field", f"no column {opts.text_field!r} (columns: {', '.join(names[:10])}; "
                                            "see data.text_field)")
        return
    row = 0
    for batch in pf.iter_batches(batch_size=1024):  # one batch in memory at a time
        for rec in batch.to_pylist():
            row += 1
            text = rec.pop(opts.text_field)
            doc_id = rec.pop(opts.id_field, None) if opts.id_field else None
            meta = _inert({k: json_safe(v) for k, v in rec.items()})
            meta.update(source=src.path, line=row)
            d = Document(str(doc_id) if doc_id is not None else f"{src.path}:{row}", text or "", meta)
            if not isinstance(text, str):
                yield src.error(d, "missing_field", f"text field {opts.text_field!r} is null or not a string")
                continue
            if len(text) * 1 > opts.max_record_bytes:
                d.text, d.meta["truncated"] = text[:PREVIEW_BYTES], True
                yield src.reject(d, "too_long", None)
                continue
            yield d



try:
    from warcio.exceptions import ArchiveLoadFailed as _ArchiveLoadFailed
except ImportError:  # pragma: no cover - warcio missing: WARC files fail at read time instead
    class _ArchiveLoadFailed(Exception):
        pass


_READERS = {"text": _read_text, "unknown": _read_text, "jsonl": _read_jsonl, "html": read_html, "warc": read_warc}
