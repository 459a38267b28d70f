"""executor: slurm through submitit: the local backend runs the same job array + merge and gives the
local executor's output; a rank that keeps failing stops with rank, input and error; the sbatch text
(and `lmforge data --dry-run`); a missing sbatch fails at once; a real single-node Slurm (slow)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from lmf_datakit import Boom, assert_same_output, write_corpus

from lmforge.cli import main
from lmforge.data.config import DataConfig, SlurmConfig
from lmforge.data.executor import run_data_stage
from lmforge.data.executors.base import RankError
from lmforge.errors import DataError

pytest.importorskip("submitit")
HERE = str(Path(__file__).resolve().parent)
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def importable(monkeypatch):
    """Job processes import lmforge and this folder's helpers (`Boom`) like the test does."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))


def _cfg(corpus, **slurm):
    return DataConfig(inputs=[str(corpus)], plots=False, min_chars=5, workers=3, executor="slurm",
                      slurm=SlurmConfig(**{"backend": "local", "poll_s": 0.2, **slurm}))


def test_local_backend_matches_local_executor(tmp_path, importable):
    corpus = write_corpus(tmp_path / "in")
    run_data_stage(DataConfig(inputs=[str(corpus)], plots=False, min_chars=5, workers=3), tmp_path / "local",
                   progress=False)
    run_data_stage(_cfg(corpus), tmp_path / "slurm", progress=False)
    assert_same_output(tmp_path / "local", tmp_path / "slurm")
    assert list((tmp_path / "slurm" / "_slurm").glob("*_log.out"))  # the jobs' logs are kept


def test_failing_rank_is_retried_then_stops_with_rank_input_and_error(tmp_path, importable):
    corpus = write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(RankError) as e:
        run_data_stage(_cfg(corpus, max_retries=1), out, progress=True, extra_steps=[Boom("f1.txt")])
    msg = str(e.value)
    assert "data rank 1 of 3 failed after 2 attempt(s)" in msg and f"while reading {corpus / 'f1.txt'}" in msg
    assert "ValueError: boom in" in msg
    assert not (out / "report.json").exists() and not list(out.glob("clean-*"))
    assert not (out / "_work" / "rank-00001" / "_SUCCESS.json").exists()
    assert (out / "_work" / "rank-00000" / "_SUCCESS.json").exists()  # finished ranks are kept for a rerun


def test_sbatch_text_and_dry_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: s\ndata:\n  inputs: [x.txt]\n  workers: 4\n  executor: slurm\n  slurm:\n"
                   "    partition: cpu\n    time: 30\n    cpus_per_task: 2\n    mem: 8G\n    array_parallelism: 2\n"
                   "    extra: {account: proj}\n")
    assert main(["data", str(cfg), "--dry-run", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "executor: slurm" in out  # the resolved config first
    array, merge = out.split("# data: job array of 4 rank task(s)")[1].split("# data: merge job")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=30", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8G",
                 "#SBATCH --array=0-3%2", "#SBATCH --account=proj", "#SBATCH --job-name=lmforge-data"):
        assert line in array, line
    assert "#SBATCH --dependency=afterok:ARRAY_JOB_ID" in merge and "--array" not in merge
    assert "export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}" in array  # the rank's threads: its cores
    assert f"{tmp_path / 'run' / 'data' / '_slurm'}" in array and "submitit.core._submit" in array
    assert main(["tokenize", str(cfg), "--dry-run", "tokens.executor=slurm", "tokens.ranks=2"]) == 0
    assert "# tokenize: job array of 2 rank task(s)" in capsys.readouterr().out


def test_missing_sbatch_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="needs `sbatch` on PATH"):
        run_data_stage(_cfg(write_corpus(tmp_path / "in"), backend="slurm"), tmp_path / "out", progress=False)
    assert time.perf_counter() - t0 < 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm_cluster(tmp_path, monkeypatch):
    """A single-node Slurm (Debian's slurmctld, slurmd, munge) on loopback ports, as root; stopped by PID."""
    need = ("munged", "slurmctld", "slurmd", "sbatch")
    if os.geteuid() != 0 or not all(shutil.which(x) or Path(f"/usr/sbin/{x}").exists() for x in need):
        pytest.skip("needs root and `apt-get install slurmctld slurmd slurm-client munge`")
    d = Path(tempfile.mkdtemp(prefix="lmforge-slurm-"))  # munged wants every parent of its socket searchable
    m = d / "munge"
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir()
    shutil.copy("/etc/munge/munge.key", m / "munge.key")
    subprocess.run(["chown", "-R", "munge:munge", str(m)], check=True)
    os.chmod(m, 0o755)
    os.chmod(m / "munge.key", 0o400)
    os.chmod(d, 0o755)
    procs = []
    subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--socket={m}/munge.sock", f"--key-file={m}/munge.key",
                    f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/seed"], check=True)
    host = socket.gethostname()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=lmforgetest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "AuthType=auth/munge", f"AuthInfo=socket={m}/munge.sock", "CredType=cred/munge",
        "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/ctld.pid", f"SlurmdPidFile={d}/d.pid", f"SlurmctldLogFile={d}/ctld.log",
        f"SlurmdLogFile={d}/d.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    try:
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        for _ in range(60):
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc"):
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the test Slurm did not come up: {(d / 'ctld.log').read_text()[-500:]}")
        yield d
        for _ in range(60):  # let the last job step finish before its daemons go
            if not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        pid = (m / "munged.pid").read_text().strip() if (m / "munged.pid").exists() else None
        if pid:
            os.kill(int(pid), 15)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
def test_real_single_node_slurm(tmp_path, importable, slurm_cluster):
    corpus = write_corpus(tmp_path / "in")
    run_data_stage(DataConfig(inputs=[str(corpus)], plots=False, min_chars=5, workers=3), tmp_path / "local",
                   progress=False)
    run_data_stage(_cfg(corpus, backend="slurm", poll_s=1.0, time=5), tmp_path / "slurm", progress=True)
    assert_same_output(tmp_path / "local", tmp_path / "slurm")
