"""Small file-system helpers shared by every stage: atomic writes, checksums, stage markers.

A stage writes into its directory, then `write_marker(dir, fingerprint)` last. A directory without a
marker (or with a different fingerprint) is incomplete and is rebuilt from scratch, so a crash never
leaves output that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MARKER = "_SUCCESS.json"


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    p = Path(directory) / MARKER
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(directory: str | Path, fingerprint: str) -> bool:
    """True when `directory` holds a marker written with the same fingerprint."""
    m = read_marker(directory)
    return m is not None and m.get("fingerprint") == fingerprint


def write_marker(directory: str | Path, fingerprint: str, **extra: Any) -> None:
    atomic_write_json(Path(directory) / MARKER, {"fingerprint": fingerprint, **extra})


def reset_dir(directory: str | Path) -> Path:
    """Remove an incomplete output directory and create it empty."""
    d = Path(directory)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def read_capped(stream: Any, cap: int, chunk: int = 1 << 20) -> tuple[bytes, int]:
    """Read at most `cap + 1` bytes of a binary stream and count (without keeping) the rest.

    Returns (head, total size): `total > cap` tells that the record was over the limit, while
    memory stays bounded by `cap` whatever the record's size."""
    head = stream.read(cap + 1)
    total = len(head)
    if total > cap:
        while block := stream.read(chunk):
            total += len(block)
    return head, total
