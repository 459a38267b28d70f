"""Run the data stage as N rank tasks: local processes, Ray tasks or a Slurm job array (`data.executor`,
see `lmforge.data.executors`), then the merge.

Phase 1 (`run_data_task`, one per rank) reads the sources of its rank (source i goes to rank
i % world_size), runs the rank steps and writes, under `OUT/_work/rank-RRRRR/`, its documents (with
their global order), its dedup signatures as sorted runs per band (`dedup_disk`), its rejects and its
counts, then a completion marker. A rank whose marker matches the config and inputs is skipped on
rerun, so a crashed run redoes only the unfinished ranks. Phase 2 (`merge_data_tasks`) merges the
ranks' documents back into input order, takes the dedup decisions (read from the signature runs, in
memory proportional to the duplicates) and writes the clean shards and the report. With dedup on, a
single worker runs the same two phases in this process.

`data.executor: ray | slurm` does this for you; by hand (N machines sharing a file system):

    # task R of W (e.g. R=$SLURM_ARRAY_TASK_ID)
    python -c "from lmforge.config import load_config; from lmforge.data.executor import run_data_task; \\
               run_data_task(load_config('cfg.yaml').data, 'runs/x/data', R, W)"
    # once every task has finished
    python -c "... from lmforge.data.executor import merge_data_tasks; merge_data_tasks(cfg.data, 'runs/x/data', W)"

With `data.perplexity.model` set, also pass
`perplexity_lm=lmforge.eval.docscore.doc_scorer_factory(cfg.data.perplexity.model)` to run_data_task.
"""

from __future__ import annotations

import functools
import heapq
import json
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmforge.configtools import fingerprint
from lmforge.data.config import DataConfig
from lmforge.data.document import Document, ShardWriter, read_shard
from lmforge.data.executors import RankJob, run_job
from lmforge.data.executors.base import mark_reading
from lmforge.data.filters.base import Step
from lmforge.data.pipeline import RankTask, finish
from lmforge.data.readers import expand_inputs
from lmforge.data.steps import check_step, load_extra_steps
from lmforge.errors import DataError
from lmforge.io import atomic_write_json, is_complete, write_marker

WORK = "_work"
_BIG_SHARD = 1_000_000  # intermediate shards: few, large files, fast zstd level (read once)


def _rank_dir(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / WORK / f"rank-{rank:05d}"


def _task_fingerprint(cfg: DataConfig, sources: list[str], rank: int, world_size: int) -> str:
    # the rank's own inputs' sizes and mtimes too: a changed file is never skipped as "complete"
    mine = [_stat(s) for i, s in enumerate(sources) if i % world_size == rank]
    return fingerprint(cfg, sources, rank, world_size, mine)


def _stat(source: str) -> list[Any] | None:
    try:
        st = Path(source).stat()
    except OSError:  # builtin:, hf: sources
        return None
    return [st.st_size, st.st_mtime_ns]


def run_data_task(cfg: DataConfig, out_dir: str | Path, rank: int, world_size: int, *, progress: bool = False,
                  perplexity_lm: Callable[[], Any] | None = None, extra_steps: list[Step] | None = None) -> bool:
    """Phase 1 for `rank` of `world_size`. Returns False when the rank was already complete.
    `perplexity_lm`, `extra_steps`: as for `run_data_stage` (the factory is called here, in this process)."""

    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside 0..{world_size - 1}")
    sources = expand_inputs(cfg.inputs)
    d = _rank_dir(Path(out_dir), rank)
    fp = _task_fingerprint(cfg, sources, rank, world_size)
    if is_complete(d, fp):
        return False
    if d.exists():
        shutil.rmtree(d)  # a crashed attempt: start the rank again
    with ShardWriter(d, "docs", _BIG_SHARD, level=1) as docs, ShardWriter(d, "rejected", cfg.shard_docs) as rejected:
        task = RankTask(cfg, sources, rank, world_size, rejected.write, perplexity_lm, work_dir=d,
                        extra_steps=extra_steps)
        task.reader.on_source = functools.partial(mark_reading, d)
        bar = tqdm(task.documents(), unit="doc", desc=f"data rank {rank}", position=rank, disable=not progress,
                   file=sys.stderr, mininterval=1.0, leave=False)
        for doc in bar:
            docs.write(doc)
    # Linux: KiB. The worker's peak so far (a reused worker process counts its earlier tasks too)
    atomic_write_json(d / "state.json", {**task.state(), "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024})
    write_marker(d, fp, rank=rank, world_size=world_size)
    return True


def _rank_docs(d: Path) -> Iterator[Document]:
    for p in sorted(d.glob("docs-*.jsonl.zst")):
        yield from read_shard(p)


def merge_data_tasks(cfg: DataConfig, out_dir: str | Path, world_size: int, *, progress: bool = True,
                     t0: float | None = None, started: float | None = None) -> dict[str, Any]:
    """Phase 2: needs every rank's marker; writes clean shards, rejects and the report. The report's
    time counts from `t0` (perf_counter, this process) or `started` (time.time(), any process)."""

    if t0 is None:
        t0 = time.perf_counter() - (time.time() - started if started is not None else 0.0)
    out_dir = Path(out_dir)
    sources = expand_inputs(cfg.inputs)
    dirs = [_rank_dir(out_dir, r) for r in range(world_size)]
    missing = [r for r, d in enumerate(dirs) if not is_complete(d, _task_fingerprint(cfg, sources, r, world_size))]
    if missing:
        raise DataError(f"data ranks {missing} of {world_size} have not finished (or ran with another config); "
                        "run them with run_data_task before merging")
    rej_dir = out_dir / "rejected"
    rej_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in dirs:  # rank rejects keep their content; they are renamed into one sequence
        for p in sorted(d.glob("rejected-*.jsonl.zst")):
            shutil.move(str(p), rej_dir / f"rejected-{n:05d}.jsonl.zst")
            n += 1
    states = [json.loads((d / "state.json").read_text()) for d in dirs]
    # every rank's documents are in input order, so a k-way merge on the order key restores the global order
    stream = heapq.merge(*(_rank_docs(d) for d in dirs), key=lambda doc: doc.meta["_o"])
    with ShardWriter(rej_dir, "rejected-dedup", cfg.shard_docs) as rejected:
        report = finish(cfg, out_dir, stream, lambda: states, rejected, progress=progress, t0=t0, work_dirs=dirs)
    shutil.rmtree(out_dir / WORK, ignore_errors=True)
    return report


def data_job(cfg: DataConfig, out_dir: Path, *, progress: bool, perplexity_lm: Callable[[], Any] | None = None,
             extra_steps: list[Step] | None = None) -> RankJob:
    """The data stage as a RankJob: `data.workers` rank tasks, then the merge."""
    world, local = cfg.workers, cfg.executor == "local"
    merge = functools.partial(merge_data_tasks, cfg, str(out_dir), world, progress=progress and local,
                              started=time.time())
    return RankJob("data", run_data_task, (cfg, str(out_dir)), world, merge, (), Path(out_dir) / WORK,
                   progress=progress, kwargs={"progress": progress and local,
                                              "perplexity_lm": perplexity_lm, "extra_steps": extra_steps})


def run_data_stage(cfg: DataConfig, out_dir: Path, *, progress: bool = True,
                   perplexity_lm: Callable[[], Any] | None = None,
                   extra_steps: list[Step] | None = None) -> dict[str, Any]:
    """Run stage 1 into `out_dir` (expected empty) and return the report (also in report.json).
    The rank phase runs as `cfg.workers` tasks on `cfg.executor` (local processes, Ray, Slurm).

    `perplexity_lm`: zero-argument factory of the perplexity filter's reference model (an object with
    `perplexity(text)`), required when `data.perplexity.model` is set, e.g.
    `lmforge.eval.docscore.doc_scorer_factory(cfg.perplexity.model)`. It must pickle (a
    `functools.partial` of a module-level function): each worker process calls it once.
    `extra_steps`: your own `Step`/`Filter` instances, run after the built-in filters (each rank task
    gets a copy, so they must pickle); see `lmforge.data.steps`."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sources = expand_inputs(cfg.inputs)
    load_extra_steps(cfg.extra_steps)  # a bad spec is a ConfigError here, before any task starts
    for i, step in enumerate(extra_steps or []):
        check_step(step, f"extra_steps[{i}]")
    if cfg.workers > 1 or cfg.dedup or cfg.near_dedup.enabled or cfg.executor != "local":
        # dedup decisions need every signature first: the rank phase runs to the end (in this process
        # when local with one worker), its signatures on disk, then the merge
        job = data_job(cfg, out_dir, progress=progress, perplexity_lm=perplexity_lm, extra_steps=extra_steps)
        if cfg.executor == "local":
            job.merge_fn = functools.partial(merge_data_tasks, cfg, str(out_dir), cfg.workers, progress=progress,
                                             t0=t0)
        return run_job(job, cfg.executor, ray=cfg.ray, slurm=cfg.slurm, workers=cfg.workers)
    with ShardWriter(out_dir / "rejected", "rejected", cfg.shard_docs) as rejected:
        task = RankTask(cfg, sources, 0, 1, rejected.write, perplexity_lm, extra_steps=extra_steps)
        return finish(cfg, out_dir, task.documents(), lambda: [task.state()], rejected, progress=progress, t0=t0)
