"""Issue 12, faults: a lost rank under `torchrun --max-restarts=1` (gloo) is restarted and training
resumes from `latest` by itself, ending with the weights of an uninterrupted run; a rank that hangs
in a collective ends the run within `train.collective_timeout` with a message, not forever.
Faults are injected through LMFORGE_TEST_FAULT (test-only, see lmforge.train.distributed)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist
from safetensors.torch import load_file

from lmforge import checkpoint as ck
from lmforge.config import dump_config
from lmforge.io import write_marker
from lmforge.monitor.metrics import read_metrics
from lmforge.train.distributed import ATTEMPT_KEY, agree_attempt

SRC = str(Path(ck.__file__).parents[1])


def _prepare(src: Path, dst: Path, cfg) -> Path:
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)
    write_marker(dst / "tokens", "test")
    path = dst.parent / f"{dst.name}.yaml"
    path.write_text(dump_config(cfg))
    return path


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _run_group(args: list[str], *, restarts: int, env: dict[str, str], timeout: int, nproc: int = 2):
    """torchrun ARGS; on a timeout its workers (each in a session of its own) are ended with it, or
    they would wait on each other, holding CPU, long after the test."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={restarts}", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        workers = _children(p.pid)
        p.terminate()  # torchrun stops its workers on SIGTERM (SIGKILL after 30 s)
        try:
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
            for pid in workers:  # still ours: the same command line (its last argument names this test's files)
                try:
                    if args[-1].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        pytest.fail(f"torchrun did not finish within {timeout} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _torchrun(cfg_path: Path, run: Path, *, restarts: int, fault: str | None = None, timeout: int = 400):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    env.pop("LMFORGE_TEST_FAULT", None)
    if fault:
        env["LMFORGE_TEST_FAULT"] = fault
    return _run_group(["-m", "lmforge.cli", "train", str(cfg_path), "--run-dir", str(run)], restarts=restarts,
                      env=env, timeout=timeout)


WORKER = """
import os, sys, time
import torch, torch.distributed as dist
from lmforge.train.distributed import init_distributed
attempt, rank = int(os.environ["TORCHELASTIC_RESTART_COUNT"]), int(os.environ["RANK"])
if attempt and rank == 2 - attempt:  # restart 1: rank 1 arrives late, restart 2: rank 0 does
    time.sleep(2)
init_distributed("cpu", timeout=300)
t = torch.ones(1)
dist.all_reduce(t)
print(f"attempt {attempt} rank {rank} sum {t.item():g}", flush=True)
if attempt < 2 and rank == 1:
    os._exit(9)  # lost rank: torchrun restarts the group
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_restarted_group_forms_whichever_rank_arrives_first(tmp_path):
    """torchrun gives a restarted group the store of the group it replaced, old gloo addresses
    included: the first rank to arrive used to connect to its dead peer ("connectFullMesh failed ...
    Connection refused") or wait on it forever. Each order of arrival gets a restart here."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    p = _run_group([str(script)], restarts=2, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "connectFullMesh" not in p.stderr
    for attempt in range(3):
        for rank in range(2):
            assert f"attempt {attempt} rank {rank} sum 2" in p.stdout, p.stdout


def test_attempt_name_ignores_what_an_earlier_group_left_in_the_store():
    """The name a group agrees on is fresh even when a rank reads the previous group's name first."""
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=30))
    store = [dist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=30))
             for _ in range(2)]  # one connection per rank, as in two processes
    server.set(ATTEMPT_KEY, "old")  # what the replaced group left: its name, acks and answers
    server.set(f"{ATTEMPT_KEY}/old/ack/1", "x")
    server.set(f"{ATTEMPT_KEY}/old/go/x", "1")
    names: dict[int, str] = {}
    follower = threading.Thread(target=lambda: names.__setitem__(1, agree_attempt(store[1], 1, 2, 30)))
    follower.start()
    time.sleep(0.5)  # rank 1 reads the old name and waits for an answer no live rank 0 gives
    assert 1 not in names
    names[0] = agree_attempt(store[0], 0, 2, 30)
    follower.join(30)
    assert names[0] == names[1] != "old"


@pytest.mark.slow
def test_lost_rank_is_restarted_and_resumes_from_latest(run_dir, tiny_cfg, tmp_path):
    cfg = tiny_cfg(batch_size=2, max_steps=6, ckpt_every=2, eval_every=0, schedule="constant", warmup_steps=0)
    straight = tmp_path / "straight"
    p = _torchrun(_prepare(run_dir, straight, cfg), straight, restarts=0)
    assert p.returncode == 0, p.stderr[-3000:]
    faulty = tmp_path / "faulty"
    p = _torchrun(_prepare(run_dir, faulty, cfg), faulty, restarts=1, fault="kill:1:5", timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    resumes = [e for e in read_metrics(faulty / "metrics.jsonl", "event") if e.get("what") == "resume"]
    assert [e["checkpoint"].rsplit("/", 1)[1] for e in resumes] == ["step-000004"]
    a = load_file(str(ck.resolve(straight, "latest") / "model.safetensors"))
    b = load_file(str(ck.resolve(faulty, "latest") / "model.safetensors"))
    assert ck.read_state(ck.resolve(faulty, "latest"))["step"] == 6
    for k in a:
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k


@pytest.mark.slow
def test_hung_rank_ends_within_the_collective_timeout(run_dir, tiny_cfg, tmp_path):
    cfg = tiny_cfg(batch_size=2, max_steps=6, ckpt_every=2, eval_every=0, collective_timeout=5)
    run = tmp_path / "hang"
    t0 = time.monotonic()
    p = _torchrun(_prepare(run_dir, run, cfg), run, restarts=0, fault="hang:1:3", timeout=300)
    took = time.monotonic() - t0
    assert p.returncode != 0
    assert "another rank hung" in p.stderr and "collective_timeout=5" in p.stderr, p.stderr[-3000:]
    assert took < 120, took
    assert ck.read_pointer(run / "checkpoints", "latest").name == "step-000002"
