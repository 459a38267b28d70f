"""A lock file that stops a second training process on the same run directory.

`flock` is released by the kernel when the holder dies (even by kill -9), so a crash never leaves
a stale lock behind; the file keeps the holder's pid for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lmforge.errors import LmforgeError


class RunLock:
    def __init__(self, run_dir: Path, name: str = "train.lock") -> None:
        self.path = Path(run_dir) / name
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LmforgeError(f"run directory {self.path.parent} is in use by another training process "
                               f"(pid {holder}, lock {self.path}); wait for it to finish or use another "
                               f"run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
