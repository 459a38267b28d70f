"""Batches built ahead of the training step by a background thread, in step order (both loaders use it)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class Prefetcher:
    """Calls `make(step)` for step = start, start + 1, ... in a daemon thread, at most `depth` ahead
    of the consumer. `next()` returns the next step's item in order; an exception raised by `make` is
    re-raised there and ends the thread, as does a `None` item (the end of a finite loader): the
    prefetcher is then `finished`, and its owner starts a new one to go on (e.g. to retry the step)."""

    def __init__(self, make: Callable[[int], Any], start: int, depth: int, name: str) -> None:
        self.step, self._stop, self.finished = start, threading.Event(), False
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._work, args=(make, start), name=name, daemon=True)
        self._thread.start()

    def _work(self, make: Callable[[int], Any], step: int) -> None:
        while not self._stop.is_set():
            try:
                item: Any = make(step)
            except BaseException as e:  # hand the error to the consumer
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put((step, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is None or isinstance(item, BaseException):
                return
            step += 1

    def next(self) -> Any:
        step, item = self._queue.get()
        assert step == self.step, f"prefetch out of order: {step} != {self.step}"
        self.step += 1
        if isinstance(item, BaseException):
            self.stop()
            raise item
        if item is None:
            self.stop()
        return item

    def stop(self) -> None:
        self.finished = True
        self._stop.set()
        self._thread.join()
