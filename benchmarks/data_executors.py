"""The data stage on Ray vs the local executor, same corpus, same run; peak memory 1x -> 4x on Ray.

Ray must run in a loopback-only network namespace here (it binds every interface otherwise):

    unshare -n bash -c 'ip link set lo up; python benchmarks/data_executors.py'     # as root
    python benchmarks/data_executors.py --mb 4 --workers 2

Prints the stage's seconds (Ray's start-up excluded, shown apart) and documents/s for `local` and
`ray` with the same number of rank tasks, their ratio, whether the clean shards, rejects and report
are byte-identical, and the peak resident memory of the rank tasks and of the driver (where the merge
runs) for a 1x and a 4x corpus on Ray. Each measurement runs in a fresh process (its own Ray).
The corpus is generated (paragraphs of made-up words, 2% exact duplicates); nothing is read from disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_corpus(d: Path, mb: float, files: int) -> None:
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    d.mkdir(parents=True)
    per_file = mb * 1e6 / files
    for i in range(files):
        paras, size = [], 0
        while size < per_file:
            p = " ".join(rng.choice(vocab) for _ in range(rng.randint(20, 120))) + "."
            paras.append(paras[-1] if paras and rng.random() < 0.02 else p)
            size += len(p) + 2
        (d / f"part-{i:03d}.txt").write_text("\n\n".join(paras) + "\n")


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.glob("clean-*.jsonl.zst")) + sorted((out / "rejected").glob("*.jsonl.zst")):
        h.update(p.name.encode() + p.read_bytes())
    rep = json.loads((out / "report.json").read_text())
    for k in ("seconds", "docs_per_second", "rank_peak_rss_mb"):
        rep.pop(k)
    for s in rep["steps"]:
        s.pop("seconds")
    h.update(json.dumps(rep, sort_keys=True).encode())
    return h.hexdigest()[:16]


def child(executor: str, corpus: str, workers: int) -> dict:
    from lmforge.data.config import DataConfig, RayConfig
    from lmforge.data.executor import run_data_stage

    t0 = time.perf_counter()
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cfg = DataConfig(inputs=[corpus], plots=False, workers=workers, executor=executor, ray=RayConfig())
        t1 = time.perf_counter()
        report = run_data_stage(cfg, out, progress=False)
        seconds = time.perf_counter() - t1
        return {"startup_s": round(startup, 1), "seconds": round(seconds, 2), "docs": report["documents_in"],
                "rank_peak_mb": report["rank_peak_rss_mb"], "digest": digest(out),
                "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loopback_only() -> bool:
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return all(line.split(":")[0].strip() == "lo" for line in lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=4.0, help="size of the 1x corpus")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]))))
        return
    if not _loopback_only():
        print("run me in a loopback-only network namespace: unshare -n bash -c 'ip link set lo up; python "
              "benchmarks/data_executors.py' (Ray listens on every interface otherwise); nothing measured")
        return
    with tempfile.TemporaryDirectory() as tmp:
        c1, c4 = Path(tmp) / "x1", Path(tmp) / "x4"
        make_corpus(c1, a.mb, a.files)
        make_corpus(c4, 4 * a.mb, 4 * a.files)
        w = str(a.workers)
        local, ray1, ray4 = _run("local", str(c1), w), _run("ray", str(c1), w), _run("ray", str(c4), w)
    print(f"corpus 1x = {a.mb:.0f} MB in {a.files} files ({local['docs']} documents), {a.workers} rank tasks\n")
    print(f"{'executor':10s} {'corpus':>6s} {'stage s':>8s} {'docs/s':>8s} {'vs local':>9s} {'start-up s':>11s} "
          f"{'rank peak MB':>13s} {'driver peak MB':>15s}")
    for name, size, r in (("local", "1x", local), ("ray", "1x", ray1), ("ray", "4x", ray4)):
        rate, base = r["docs"] / r["seconds"], local["docs"] / local["seconds"]
        print(f"{name:10s} {size:>6s} {r['seconds']:8.2f} {rate:8.0f} {rate / base:8.2f}x "
              f"{r['startup_s']:11.1f} {r['rank_peak_mb']:13.1f} {r['driver_peak_mb']:15.1f}")
    print(f"\nray vs local throughput: {local['seconds'] / ray1['seconds']:.2f}x; identical output: "
          f"{local['digest'] == ray1['digest']}")
    print(f"ray peak memory 4x vs 1x corpus: ranks {ray4['rank_peak_mb'] / ray1['rank_peak_mb']:.2f}x, "
          f"driver {ray4['driver_peak_mb'] / ray1['driver_peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
