"""Executors: run a job's N rank tasks and then its merge, on this machine or a cluster's engine.

    job = RankJob("data", run_data_rank, (cfg, out), world_size=3, merge_fn=merge_data_tasks, ...)
    result = run_job(job, "ray", ray=cfg.ray, slurm=cfg.slurm)

The rank tasks are ordinary module-level functions with completion markers, so every executor
gives the same files: `local` (processes here), `ray` (Ray tasks; the merge on the driver) and
`slurm` (a submitit job array and a merge job that depends on it). A rank that fails after its
retries stops the job with the rank, the input it was reading and the error; the merge never runs.
"""

from __future__ import annotations

from typing import Any

from lmforge.data.executors.base import RankError, RankJob, TransientRankError

__all__ = ["RankError", "RankJob", "TransientRankError", "run_job"]


def run_job(job: RankJob, executor: str, *, ray: Any = None, slurm: Any = None, workers: int | None = None) -> Any:
    """Run `job` on `executor` (`local`, `ray` or `slurm`) and return its merge's result."""
    if executor == "local":
        from lmforge.data.executors.local import run_local

        return run_local(job, workers or job.world_size)
    if executor == "ray":
        from lmforge.data.executors.ray import run_ray

        return run_ray(job, ray)
    if executor == "slurm":
        from lmforge.data.executors.slurm import run_slurm

        return run_slurm(job, slurm)
    raise ValueError(f"unknown executor {executor!r}")
