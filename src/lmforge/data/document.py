"""Document: the unit that flows through the data stage, and the clean-shard file format.

Clean shards are `clean-NNNNN.jsonl.zst`: one JSON object per line, `{"id", "text", "meta"}`.
Rejected documents use the same format under `rejected/`, with `meta["reject_reason"]` set.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zstandard


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "meta": self.meta}, ensure_ascii=False)


class ShardWriter:
    """Writes documents to `<prefix>-NNNNN.jsonl.zst`, `max_docs` per file.

    Each shard is written under a `.tmp` name and renamed when closed, so an interrupted write never
    leaves a shard that looks complete.
    """

    def __init__(self, directory: str | Path, prefix: str, max_docs: int = 50_000, level: int = 3) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_docs, self.level = prefix, max_docs, level
        self.paths: list[Path] = []
        self.count = 0
        self._n_in_shard = 0
        self._fh = None
        self._tmp: Path | None = None

    def _open(self) -> None:
        final = self.dir / f"{self.prefix}-{len(self.paths):05d}.jsonl.zst"
        self._tmp = final.with_name(final.name + ".tmp")
        raw = open(self._tmp, "wb")
        self._fh = io.TextIOWrapper(zstandard.ZstdCompressor(level=self.level).stream_writer(raw), encoding="utf-8")
        self.paths.append(final)
        self._n_in_shard = 0

    def write(self, doc: Document) -> None:
        if self._fh is None or self._n_in_shard >= self.max_docs:
            self._close_current()
            self._open()
        self._fh.write(doc.to_json() + "\n")
        self._n_in_shard += 1
        self.count += 1

    def _close_current(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._tmp.rename(self.paths[-1])
            self._fh = None

    def close(self) -> list[Path]:
        self._close_current()
        return self.paths

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._fh is not None:  # leave no partial shard behind
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            self.paths.pop()
            self._fh = None


def _loads(line: str) -> dict[str, Any]:
    try:
        return orjson.loads(line)  # ~2x json's speed: parsing is most of reading a shard
    except orjson.JSONDecodeError:
        return json.loads(line)  # what orjson refuses and json takes (NaN/Infinity in meta); else json's error


def read_shard(path: str | Path) -> Iterator[Document]:
    with open(path, "rb") as raw:
        reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        for line in reader:
            d = _loads(line)
            yield Document(d["id"], d["text"], d.get("meta", {}))


def clean_shards(data_dir: str | Path) -> list[Path]:
    return sorted(Path(data_dir).glob("clean-*.jsonl.zst"))


def iter_clean_documents(data_dir: str | Path) -> Iterator[Document]:
    """All clean documents of a data-stage output directory, in shard order."""
    for p in clean_shards(data_dir):
        yield from read_shard(p)


def json_safe(v: Any) -> Any:
    """A column value (parquet, HF datasets) as JSON for `meta`: dates, bytes and arrays become
    strings or lists."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    return str(v)
