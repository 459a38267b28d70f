"""What every executor runs: a `RankJob` (N rank tasks, then a merge) and how a rank failure reads."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError
from lmforge.io import out_of_space

READING = "reading.txt"  # a rank task writes the input it is reading here (read back after a crash)
ERROR = "error.txt"  # ... and its error when it fails (read back by executors that only see a traceback)


class RankError(DataError):
    """A rank task failed: names the rank, the input it was reading and the error."""

    def __init__(self, job: str, rank: int, world_size: int, source: str | None, error: str,
                 attempts: int | None = None) -> None:
        self.job, self.rank, self.world_size, self.source, self.error = job, rank, world_size, source, error
        tries = f" after {attempts} attempt(s)" if attempts else ""
        where = f" while reading {source}" if source else ""
        super().__init__(f"{job} rank {rank} of {world_size} failed{tries}{where}: {error}. Finished ranks are "
                         "kept: fix the cause and run the stage again to redo only the unfinished ones")

    def __reduce__(self):  # pickles across processes, Ray and submitit with its fields
        return (self.__class__, (self.job, self.rank, self.world_size, self.source, self.error))

    def with_attempts(self, attempts: int) -> RankError:
        return RankError(self.job, self.rank, self.world_size, self.source, self.error, attempts)


class TransientRankError(RankError):
    """A failure worth retrying (an OSError: a flaky file system, a lost node's disk)."""


@dataclass
class RankJob:
    """`fn(*args, rank, world_size)` for each rank (returns False when the rank was already complete),
    then `merge_fn(*merge_args)` once every rank has finished. `work_dir(rank)` is where a rank keeps
    its files (its `reading.txt` names the input in progress). Everything must pickle."""

    name: str
    fn: Callable[..., bool]
    args: tuple
    world_size: int
    merge_fn: Callable[..., Any]
    merge_args: tuple
    work_root: Path
    progress: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)

    def work_dir(self, rank: int) -> Path:
        return Path(self.work_root) / f"rank-{rank:05d}"

    def reading(self, rank: int) -> str | None:
        return _read(self.work_dir(rank) / READING)

    def last_error(self, rank: int) -> str | None:
        return _read(self.work_dir(rank) / ERROR)

    def failure(self, rank: int, exc: BaseException | str, attempts: int | None = None) -> DataError | ConfigError:
        """The RankError of a rank whose last attempt raised `exc` (or died with message `exc`); a
        ConfigError stays itself (it is no rank's fault)."""
        if isinstance(exc, ConfigError):
            return exc
        if isinstance(exc, RankError):
            return exc.with_attempts(attempts) if attempts else exc
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return RankError(self.name, rank, self.world_size, self.reading(rank), text, attempts)

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"{self.name}: {msg}", file=sys.stderr, flush=True)


def run_rank(fn: Callable[..., bool], args: tuple, kwargs: dict[str, Any], rank: int, world_size: int,
             job: str, work_dir: Path) -> bool:
    """Calls one rank task, turning its exception into a RankError that names the input in progress
    (OSError -> TransientRankError, which executors retry)."""
    try:
        return fn(*args, rank=rank, world_size=world_size, **kwargs)
    except (RankError, ConfigError):  # a config error is the same in every rank: no rank to name
        raise
    except OSError as e:
        if out_of_space(e):  # no retry helps: the stage's caller names the path and the bytes needed
            raise
        _fail(job, rank, world_size, work_dir, e, TransientRankError)
    except Exception as e:  # noqa: BLE001 - every failure becomes a named, picklable rank error
        _fail(job, rank, world_size, work_dir, e, RankError)
    return False  # not reached: _fail raises


def _fail(job: str, rank: int, world_size: int, work_dir: Path, e: BaseException, cls: type) -> None:
    """Raise `cls` (a RankError) naming the rank and the input in progress, with `e`'s message kept in
    the rank's error file (read back when the worker dies without a Python exception)."""
    err = cls(job, rank, world_size, _read(Path(work_dir) / READING), f"{type(e).__name__}: {e}")
    try:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / ERROR).write_text(err.error + "\n")
    except OSError:
        pass
    raise err from e


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a cgroup, taskset or Slurm binding), else all."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def mark_reading(work_dir: Path, source: str) -> None:
    """Record the input a rank task is reading now (small write per input file)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / READING).write_text(source + "\n")
