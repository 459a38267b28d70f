"""`executor: slurm`: the rank tasks as a Slurm job array and the merge as a job that depends on it
(`--dependency=afterok:ARRAY`), through submitit. This process submits them and waits, printing the
ranks as they finish. A failed rank is resubmitted up to `slurm.max_retries` times (finished ranks are
kept; the merge job is resubmitted behind the new array); after that the stage stops with the rank,
its input and its error. `slurm.backend: local` runs the same jobs as local processes (submitit's
local executor) — how the tests run this code path without a cluster.

Job logs and submitit's files go to `OUT/_slurm/` (kept: they are the jobs' stdout/stderr).
"""

from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path
from typing import Any

from lmforge.data.executors.base import RankError, RankJob, run_rank
from lmforge.errors import ConfigError, DataError


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError as e:
        raise ConfigError("executor: slurm needs the submitit package: pip install 'lmforge[slurm]'") from e
    return submitit


def folder(job: RankJob) -> Path:
    return Path(job.work_root).parent / "_slurm"


def sbatch_parameters(name: str, cfg: Any, *, merge: bool = False) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for the array (or the merge job) of job `name`."""
    params: dict[str, Any] = {"job_name": f"lmforge-{name}{'-merge' if merge else ''}", "time": cfg.time,
                              "cpus_per_task": cfg.cpus_per_task, "array_parallelism": cfg.array_parallelism,
                              "additional_parameters": dict(cfg.extra),
                              # the tokenizer's threads: the task's cores (a user's own value wins)
                              "setup": [f"export RAYON_NUM_THREADS=${{RAYON_NUM_THREADS:-{cfg.cpus_per_task}}}"]}
    if cfg.partition:
        params["partition"] = cfg.partition
    if cfg.mem:
        params["mem"] = cfg.mem
    return params


def sbatch_scripts(name: str, world_size: int, log_dir: Path, cfg: Any) -> str:
    """The sbatch scripts `lmforge data|tokenize --dry-run` print: the array, then the merge job."""
    submitit = _import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    command = submitit.SlurmExecutor(folder=log_dir)._submitit_command_str
    array = _make_sbatch_string(command=command, folder=log_dir, map_count=world_size,
                                **sbatch_parameters(name, cfg))
    merge_params = sbatch_parameters(name, cfg, merge=True)
    merge_params["additional_parameters"]["dependency"] = "afterok:ARRAY_JOB_ID"
    merge = _make_sbatch_string(command=command, folder=log_dir, **merge_params)
    return (f"# {name}: job array of {world_size} rank task(s)\n{array}\n"
            f"# {name}: merge job, after every rank task succeeded\n{merge}")


def _executor(submitit: Any, job: RankJob, cfg: Any, *, merge: bool = False, after: str | None = None) -> Any:
    if cfg.backend == "local":
        ex = submitit.LocalExecutor(folder=folder(job))
        ex.update_parameters(timeout_min=cfg.time)
        return ex
    ex = submitit.SlurmExecutor(folder=folder(job))
    params = sbatch_parameters(job.name, cfg, merge=merge)
    if after:
        params["additional_parameters"]["dependency"] = f"afterok:{after}"
    ex.update_parameters(**params)
    return ex


def _array_id(jobs: list[Any]) -> str:
    return str(jobs[0].job_id).split("_")[0]


def _submit(submitit: Any, job: RankJob, cfg: Any, ranks: list[int]) -> tuple[list[Any], Any | None]:
    """Submit `ranks` as an array and, on Slurm, the merge job behind it."""
    fn = functools.partial(run_rank, job.fn, job.args, job.kwargs, world_size=job.world_size, job=job.name)
    arr = _executor(submitit, job, cfg).map_array(_RankCall(fn, job), ranks)
    merge = None
    if cfg.backend == "slurm":
        merge = _executor(submitit, job, cfg, merge=True, after=_array_id(arr)).submit(job.merge_fn, *job.merge_args)
        job.say(f"submitted array {_array_id(arr)} ({len(ranks)} rank task(s)) and merge job {merge.job_id}")
    return arr, merge


class _RankCall:
    """Picklable `rank -> run_rank(...)` (submitit pickles the callable with each task)."""

    def __init__(self, fn: Any, job: RankJob) -> None:
        self.fn, self.job = fn, job

    def __call__(self, rank: int) -> bool:
        return self.fn(rank=rank, work_dir=self.job.work_dir(rank))


def run_slurm(job: RankJob, cfg: Any) -> Any:
    submitit = _import_submitit()
    if cfg.backend == "slurm" and shutil.which("sbatch") is None:
        raise DataError("executor: slurm needs `sbatch` on PATH (run on a Slurm login node), or set "
                        "slurm.backend=local to run the jobs on this machine, or executor=local|ray")
    ranks, attempt = list(range(job.world_size)), 1
    while True:
        arr, merge = _submit(submitit, job, cfg, ranks)
        failed = _wait_array(job, cfg, ranks, arr)
        if not failed:
            break
        if merge is not None:
            merge.cancel(check=False)  # its dependency can never be met
        if attempt > cfg.max_retries:
            rank, exc = failed[0]
            raise _failure(job, rank, exc, attempt)
        job.say(f"ranks {[r for r, _ in failed]} failed; resubmitting them (attempt {attempt + 1})")
        ranks, attempt = [r for r, _ in failed], attempt + 1
    if merge is None:  # local backend: no dependencies, the merge runs after the array here
        merge = _executor(submitit, job, cfg, merge=True).submit(job.merge_fn, *job.merge_args)
    try:
        return merge.result()
    except Exception as e:
        raise DataError(f"{job.name}: the merge job {merge.job_id} failed: {_last_line(e)} "
                        f"(log: {folder(job)})") from e


def _wait_array(job: RankJob, cfg: Any, ranks: list[int], arr: list[Any]) -> list[tuple[int, Any]]:
    """Poll until every task of the array finished; returns the failed (rank, exception) pairs."""
    left, failed, t0 = dict(zip(ranks, arr)), [], time.perf_counter()
    while left:
        for r, j in list(left.items()):
            if not j.done():
                continue
            del left[r]
            exc = j.exception()
            if exc is not None:
                failed.append((r, exc))
            else:
                job.say(f"rank {r}/{job.world_size} done ({job.world_size - len(left)}/{job.world_size} "
                        f"finished, {time.perf_counter() - t0:.0f} s)")
        if left:
            time.sleep(cfg.poll_s)
    return sorted(failed, key=lambda x: x[0])


def _failure(job: RankJob, rank: int, exc: Exception, attempts: int) -> RankError:
    # submitit gives back only the traceback text; the rank task left its own error in its folder
    return job.failure(rank, job.last_error(rank) or _last_line(exc), attempts)


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
