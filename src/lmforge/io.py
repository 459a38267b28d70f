"""Small file-system helpers shared by every stage: atomic writes, checksums, stage markers.

A stage writes into its directory, then `write_marker(dir, fingerprint)` last. A directory without a
marker (or with a different fingerprint) is incomplete and is rebuilt from scratch, so a crash never
leaves output that looks valid.
"""

from __future__ import annotations

import errno
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


def reset_dir(directory: str | Path, keep: tuple[str, ...] = ()) -> Path:
    """Empty an incomplete output directory (creating it if needed), except the entries named in
    `keep` (e.g. `_work`, where finished rank tasks keep their own completion markers)."""
    d = Path(directory)
    if d.exists():
        if not keep:
            shutil.rmtree(d)
        else:
            for child in d.iterdir():
                if child.name in keep:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    d.mkdir(parents=True, exist_ok=True)
    return d


def out_of_space(e: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded"."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent), or None."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def tree_bytes(path: str | Path) -> int:
    """Bytes of the regular files under `path` (a file counts itself); 0 when missing."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    total = 0
    for f in p.rglob("*") if p.is_dir() else []:
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:
            pass
    return total


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


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
