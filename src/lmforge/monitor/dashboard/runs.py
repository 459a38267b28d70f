"""Run discovery, incremental metrics reading and run status for the dashboard (no web code here).

Run status (shown in the run list), first rule that applies:
1. the last lifecycle event (`kind: event`, `event: start|end`) is `end` -> its `status`: finished,
   crashed or interrupted (RunLogger writes it on normal exit, on an exception and on Ctrl-C);
2. RUN/train.lock is flock-held (seen in /proc/locks, without touching the lock) -> `running`;
3. the last lifecycle event is `start` from this host and its pid is alive (and is the same process:
   not created after the event) -> `running`;
4. RUN/checkpoints/_SUCCESS.json (written by `lmforge run` after training) is at least as new as
   metrics.jsonl, or the last train step reached `train.max_steps` of RUN/config.yaml -> `finished`;
5. a `start` event from this host, or a released train.lock, without an end -> `crashed` (kill -9,
   OOM killer, power loss: no chance to write `end`);
6. otherwise (no lifecycle information, or another host): `running` if metrics.jsonl changed in the
   last STALE_AFTER seconds, else `crashed`.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.monitor.metrics import finite_number

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
STALE_AFTER = 300.0  # seconds without a new metrics line before a run of unknown liveness counts as crashed
CHUNK_BYTES = 4 << 20  # most bytes of metrics.jsonl sent per request; the page asks again for the rest


def pid_alive(pid: int, started: float | None = None) -> bool:
    """True when process `pid` exists and (with psutil) was created no later than `started` (+2 s)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None and p.create_time() > started + 2.0:
            return False  # the pid was reused by a newer process
    except Exception:
        pass
    return True


def lock_held(path: Path) -> bool:
    """True when a process holds a flock on `path`, read from /proc/locks (Linux) so the dashboard never
    takes the lock itself (that could make a starting trainer think the run is busy)."""
    try:
        st = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(f" {dev} " in line and "FLOCK" in line for line in locks.splitlines())


def _finished(run: Path, s: RunSummary, mtime: float) -> bool:
    marker = run / "checkpoints" / "_SUCCESS.json"
    try:
        if marker.stat().st_mtime >= mtime - 1.0:
            return True
    except OSError:
        pass
    try:
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        max_steps = int((cfg.get("train") or {}).get("max_steps") or 0)
    except Exception:
        return False
    return max_steps > 0 and s.step >= max_steps




def _finite_json(v: Any) -> Any:
    """NaN/Inf (which Python's json reads from `NaN`, `Infinity` or `1e400`) as the metrics writer
    writes them: strings `nan`, `inf`, `-inf`; a JSON response cannot hold them as numbers."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_json(x) for x in v]
    return v


def read_chunk(path: Path, offset: int, limit: int = CHUNK_BYTES) -> tuple[list[dict[str, Any]], int, bool, bool]:
    """Complete lines of `path` from byte `offset`: (events, new offset, more to read, reset).

    A partial last line (being written) is left for the next call. `reset` is True when the file
    shrank below `offset` (replaced): reading restarted at 0.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0, False, offset > 0
    reset = offset > size
    if reset:
        offset = 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(limit)
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) == limit:  # one line longer than the limit: skip it rather than stall
        end = len(data)
    events = []
    for line in data[:end].splitlines():
        try:
            ev = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(ev, dict):
            events.append(_finite_json(ev))
    new = offset + end
    return events, new, new < size and end > 0, reset


@dataclass
class RunSummary:
    """Key figures of one run, updated incrementally as metrics.jsonl grows."""

    offset: int = 0
    first_time: float | None = None
    last_time: float | None = None
    step: int = 0
    loss: float | None = None
    loss_smooth: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    tokens: float | None = None
    tokens_per_s: float | None = None
    lr: float | None = None
    anomalies: int = 0
    samples: int = 0
    lifecycle: dict[str, Any] = field(default_factory=dict)

    def add(self, ev: dict[str, Any]) -> None:
        t = finite_number(ev.get("time"))
        if t is not None:
            self.first_time = t if self.first_time is None else min(self.first_time, t)
            self.last_time = t if self.last_time is None else max(self.last_time, t)
        kind = ev.get("kind")
        if kind in ("train", "val") and isinstance(ev.get("step"), int):
            self.step = max(self.step, ev["step"])
        if kind == "train":
            for key in ("loss", "loss_smooth", "tokens", "tokens_per_s", "lr"):
                if key in ev:
                    setattr(self, key, finite_number(ev[key]))
        elif kind == "val":
            v = finite_number(ev.get("loss", ev.get("val_loss")))
            self.val_loss = v
            if v is not None and (self.best_val_loss is None or v < self.best_val_loss):
                self.best_val_loss = v
        elif kind == "anomaly":
            self.anomalies += 1
        elif kind == "sample":
            self.samples += 1
        elif kind == "event" and ev.get("event") in ("start", "end"):
            self.lifecycle = ev


class RunStore:
    """The runs under one directory (or a single run directory) and their cached summaries."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.root = Path(runs_dir).resolve()
        self._summaries: dict[str, RunSummary] = {}
        self.host = socket.gethostname()

    def names(self) -> list[str]:
        if (self.root / "metrics.jsonl").is_file():  # pointed at one run directory
            return [self.root.name]
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self.path(p.name) is not None)

    def path(self, name: str) -> Path | None:
        """The run directory for `name`, or None when `name` is not a run here (no traversal possible:
        the name must match NAME_RE and resolve to a direct child of the root)."""
        if not NAME_RE.match(name):
            return None
        if (self.root / "metrics.jsonl").is_file():
            p = self.root if name == self.root.name else None
        else:
            p = (self.root / name).resolve()
            if p.parent != self.root:
                return None
        if p is None or self.file(p, "metrics.jsonl") is None:
            return None
        return p

    def file(self, run: Path, rel: str) -> Path | None:
        """RUN/rel when it is a regular file whose real path (symlinks resolved) lies inside the
        runs directory; None otherwise: a link inside a run never exposes a file elsewhere."""
        try:
            p = (run / rel).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, dangling or looping link
            return None
        return p if p.is_file() and p.is_relative_to(self.root) else None

    def summary(self, name: str) -> dict[str, Any] | None:
        run = self.path(name)
        if run is None:
            return None
        s = self._summaries.get(name) or RunSummary()
        metrics = run / "metrics.jsonl"
        while True:
            events, new, more, reset = read_chunk(metrics, s.offset)
            if reset:
                s = RunSummary()
            for ev in events:
                s.add(ev)
            s.offset = new
            if not more:
                break
        self._summaries[name] = s
        try:
            mtime = metrics.stat().st_mtime
        except OSError:
            mtime = 0.0
        out = {k: v for k, v in s.__dict__.items() if k not in ("lifecycle", "offset")}
        out.update(name=name, status=self.status(run, s, mtime), error=s.lifecycle.get("error"),
                   elapsed=(s.last_time - s.first_time) if s.first_time is not None else None,
                   has_eval=self.file(run, "eval/report.json") is not None,
                   has_data=self.file(run, "data/report.json") is not None, mtime=mtime)
        return out

    def status(self, run: Path, s: RunSummary, mtime: float) -> str:
        lc = s.lifecycle
        if lc.get("event") == "end":
            return str(lc.get("status") or "finished")
        lock = run / "train.lock"
        if lock_held(lock):
            return "running"
        local_start = lc.get("event") == "start" and isinstance(lc.get("pid"), int) and lc.get("host") == self.host
        if local_start and pid_alive(lc["pid"], finite_number(lc.get("time"))):
            return "running"
        if _finished(run, s, mtime):
            return "finished"
        if local_start or lock.exists():
            return "crashed"
        return "running" if time.time() - mtime < STALE_AFTER else "crashed"

    def report(self, name: str, which: str) -> Any:
        """RUN/eval/report.json or RUN/data/report.json parsed; None when absent or unreadable."""
        run = self.path(name)
        if run is None or which not in ("eval", "data"):
            return None
        p = self.file(run, f"{which}/report.json")
        if p is None:
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def samples(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The first `limit` records of RUN/eval/samples.jsonl."""
        run = self.path(name)
        out: list[dict[str, Any]] = []
        path = self.file(run, "eval/samples.jsonl") if run is not None else None
        if path is None:
            return out
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
                if len(out) >= limit:
                    break
        return out
