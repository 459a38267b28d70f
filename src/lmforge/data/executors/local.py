"""`executor: local`: the rank tasks as processes on this machine (in this process when there is one)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from lmforge.data.executors.base import RankJob, run_rank, usable_cores


def _share_cores(at_once: int) -> None:
    """In each rank process: the rank's encoding threads get this process's share of the cores (the
    ranks run side by side; a user's RAYON_NUM_THREADS wins)."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, usable_cores() // at_once)))


def run_local(job: RankJob, workers: int) -> Any:
    """Up to `workers` ranks at a time; the first failure cancels the ranks not yet started."""
    world = job.world_size
    if world == 1 or workers == 1:
        for r in range(world):
            ran = run_rank(job.fn, job.args, job.kwargs, r, world, job.name, job.work_dir(r))
            if world > 1:
                job.say(f"rank {r}/{world} {'done' if ran else 'already complete'}")
        return job.merge_fn(*job.merge_args)
    ctx = multiprocessing.get_context("spawn")  # no inherited locks/threads; same behaviour on every OS
    at_once = min(workers, world)
    with ProcessPoolExecutor(max_workers=at_once, mp_context=ctx, initializer=_share_cores,
                             initargs=(at_once,)) as pool:
        futures = {pool.submit(run_rank, job.fn, job.args, job.kwargs, r, world, job.name, job.work_dir(r)): r
                   for r in range(world)}
        done_count = 0
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                r = futures[fut]
                try:
                    ran = fut.result()
                except BrokenProcessPool as e:
                    for f in pending:
                        f.cancel()
                    raise job.failure(r, f"its worker process died ({e}); the machine may be out of memory") from e
                except Exception as e:
                    for f in pending:
                        f.cancel()
                    raise job.failure(r, e) from e
                done_count += 1
                job.say(f"rank {r}/{world} {'done' if ran else 'already complete'} ({done_count}/{world})")
    return job.merge_fn(*job.merge_args)
