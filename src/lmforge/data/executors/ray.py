"""`executor: ray`: each rank task is a Ray task; the merge runs on the driver (this process).

Joins the cluster at `ray.address`, or starts a Ray on this machine for the run (and stops it after).
Each task reserves `num_cpus` and `memory_gb`; Ray retries a task whose worker process died, and one
that raised an OSError, up to `max_retries` times (a retried rank starts its folder afresh; a rank
whose completion marker matches is skipped, so a rerun redoes only unfinished ranks). The nodes need
lmforge installed and the run directory on a shared file system.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from lmforge.data.executors.base import RankJob, TransientRankError, run_rank
from lmforge.errors import ConfigError, DataError

CONNECT_TIMEOUT_S = 5.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor: ray needs the ray package: pip install 'lmforge[ray]'") from e
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (seconds, not Ray's minute of retries) when HOST:PORT does not answer."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"ray.address {address!r} must be HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise DataError(f"cannot reach the Ray cluster at ray.address={address} ({e}); start it with "
                        "`ray start --head` there, fix the address, or set ray.address=null to start a Ray "
                        "on this machine for the run") from e


def _connect(ray: Any, cfg: Any) -> bool:
    """Initialise Ray; returns True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if cfg.address is None:
        ray.init(num_cpus=cfg.local_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
        return True
    check_reachable(cfg.address)
    try:
        ray.init(address=cfg.address, log_to_driver=True, configure_logging=False)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, auth errors ...
        raise DataError(f"could not join the Ray cluster at ray.address={cfg.address}: {type(e).__name__}: {e}. "
                        "A cluster with token auth needs RAY_AUTH_MODE=disabled on its head or address=auto "
                        "from a node of the cluster") from e
    return True


def _task_options(cfg: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": cfg.num_cpus, "max_retries": cfg.max_retries,
                            "retry_exceptions": [TransientRankError],
                            # HF tokenizers' thread pool takes the task's CPUs, not every core of the node
                            "runtime_env": {"env_vars": {"RAYON_NUM_THREADS": os.environ.get(
                                "RAYON_NUM_THREADS", str(max(1, round(cfg.num_cpus))))}}}
    if cfg.memory_gb:
        opts["memory"] = int(cfg.memory_gb * 1024**3)
    return opts


def run_ray(job: RankJob, cfg: Any) -> Any:
    ray = _import_ray()
    started = _connect(ray, cfg)
    try:
        remote = ray.remote(run_rank).options(**_task_options(cfg))
        world = job.world_size
        refs = {remote.remote(job.fn, job.args, job.kwargs, r, world, job.name, job.work_dir(r)): r
                for r in range(world)}
        job.say(f"{world} rank task(s) submitted to Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        pending, t0, n_done = list(refs), time.perf_counter(), 0
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            r = refs[done[0]]
            try:
                ran = ray.get(done[0])
            except Exception as e:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise _failure(ray, job, r, e, cfg.max_retries + 1) from None
            n_done += 1
            job.say(f"rank {r}/{world} {'done' if ran else 'already complete'} ({n_done}/{world}, "
                    f"{time.perf_counter() - t0:.1f} s)")
        return job.merge_fn(*job.merge_args)
    finally:
        if started:
            ray.shutdown()


def _failure(ray: Any, job: RankJob, rank: int, e: Exception, attempts: int) -> DataError:
    cause = getattr(e, "cause", None)
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        return job.failure(rank, cause, attempts if isinstance(cause, TransientRankError) else 1)
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return job.failure(rank, f"its worker process died ({type(e).__name__})", attempts)
    return job.failure(rank, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", attempts)
