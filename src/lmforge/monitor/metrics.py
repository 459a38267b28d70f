"""The metrics stream: RUN_DIR/metrics.jsonl, one JSON object per event, append-only.

Every event has `step`, `time` (unix seconds) and `kind` (train | val | system | anomaly | sample |
eval | event). Each line is written with one `write` and flushed, so a crash loses at most the
line being written; readers skip a trailing partial line.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def finite_number(v: Any) -> float | None:
    """`v` as a float when it is a finite number (not a bool, None, string or NaN/Inf), else None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf; keep them visible as strings
    return v


class MetricsWriter:
    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._fh = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, kind: str, step: int, **values: Any) -> dict[str, Any]:
        event = {"step": int(step), "time": time.time(), "kind": kind, **{k: _clean(v) for k, v in values.items()}}
        if self._fh is not None:
            self._fh.write(json.dumps(event, default=str) + "\n")
            self._fh.flush()
        return event

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return
    with open(p, encoding="utf-8") as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial last line after a crash
            if kind is None or event.get("kind") == kind:
                yield event
