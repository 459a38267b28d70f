"""A `.zst` reader that notices truncation (zstandard's stream_reader does not)."""

from __future__ import annotations

import io
from typing import Any

import zstandard


class ZstdFrames(io.RawIOBase):
    """Decompresses a `.zst` file of one or more frames, and raises EOFError when the file ends
    inside a frame (zstandard's stream_reader returns what it has and stops silently: a truncated
    file would look complete, its last record cut mid-word). The data before the damage is
    returned first; a line reader above loses only the incomplete last line."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._f = open(path, "rb")
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: Any = None
        self._buf, self._pos, self._done = b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            chunk = self._f.read(1 << 17)
            if not chunk:
                self._done = True
                if self._obj is not None and not self._obj.eof:
                    raise EOFError("the file ends inside a zstd frame (truncated .zst)")
                return 0
            self._buf, self._pos = self._feed(chunk), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._obj is None or self._obj.eof:  # the next frame
                self._obj = self._dctx.decompressobj()
            out.append(self._obj.decompress(data))
            data = self._obj.unused_data if self._obj.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._f.close()
        super().close()
