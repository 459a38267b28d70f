"""The run lock: one process at a time writes a run directory (training and every stage that writes:
data, tokenizer, tokenize, `lmforge run`).

`flock` is released by the kernel when the holder dies (even by kill -9), so a crash never leaves
a stale lock behind; the file keeps the holder's pid for the error message. Within one process the
lock is re-entrant (`lmforge run` holds it while its stages and training take it again).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lmforge.errors import LmforgeError

_HELD: dict[str, list[int]] = {}
"""Locks this process holds: resolved path -> [fd, depth]."""


class RunLock:
    def __init__(self, run_dir: Path, name: str = "train.lock") -> None:
        self.path = Path(run_dir) / name
        self._key: str | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LmforgeError(f"run directory {self.path.parent} is in use by another lmforge process "
                               f"(pid {holder}, lock {self.path}): a training run or a stage is writing it; wait "
                               f"for it to finish or use another run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        held = _HELD.get(self._key)
        self._key = None
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            fd = _HELD.pop(str(self.path.resolve()), held)[0]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
