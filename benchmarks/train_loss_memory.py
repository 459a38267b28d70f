"""Peak memory and time of the LM head + loss: full fp32 logits (`lm_loss`) against the fused,
chunked head (`chunked_lm_loss`), at a GPT-2 vocabulary (50,304) and width (768).

    python benchmarks/train_loss_memory.py                       # 4 x 1024 tokens, CPU (or CUDA if present)
    python benchmarks/train_loss_memory.py --rows 8192 --chunk 2048

Each variant runs forward + backward of head and loss in a fresh subprocess (so peaks do not mix);
the peak is `torch.cuda.max_memory_allocated` on CUDA and the growth of the process's peak RSS
(`ru_maxrss`) over the inputs on CPU. Ratio = full / chunked, measured in the same command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from lmforge.train.loss import chunked_lm_loss, lm_loss
mode, rows, C, V, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
g = torch.Generator().manual_seed(0)
h = (torch.randn(1, rows, C, generator=g)).to(dev).requires_grad_()
w = (torch.randn(V, C, generator=g) * 0.02).to(dev).requires_grad_()
tgt = torch.randint(0, V, (1, rows), generator=g).to(dev)
def run():
    if mode == "full":
        s = lm_loss(h @ w.T, tgt)
    else:
        s = chunked_lm_loss(h, w, tgt, chunk_rows=chunk)
    (s.total / s.count).backward()
    return (s.total / s.count).item()
def kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if dev.type == "cuda":
    run(); h.grad = w.grad = None; torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter(); loss = run(); torch.cuda.synchronize(); dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
else:
    base = kib() * 1024
    t0 = time.perf_counter(); loss = run(); dt = time.perf_counter() - t0
    peak = kib() * 1024 - base
print(json.dumps({"mode": mode, "peak": peak, "seconds": dt, "loss": loss, "device": dev.type}))
"""


def measure(mode: str, a: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(a.rows), str(a.width), str(a.vocab), str(a.chunk)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=4096, help="tokens (batch x context)")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--chunk", type=int, default=1024, help="rows per chunk (train.loss_chunk_rows)")
    a = p.parse_args()
    full, chunked = measure("full", a), measure("chunked", a)
    logits_mib = a.rows * a.vocab * 4 / 2**20
    print(f"LM head + loss, {a.rows} tokens x vocab {a.vocab} x width {a.width} on {full['device']} "
          f"(one fp32 logits tensor = {logits_mib:,.0f} MiB)")
    print(f"{'variant':<26} {'peak MiB':>10} {'seconds':>9} {'loss':>9}")
    for name, r in (("full logits (lm_loss)", full), (f"chunked, {a.chunk} rows", chunked)):
        print(f"{name:<26} {r['peak'] / 2**20:>10,.0f} {r['seconds']:>9.3f} {r['loss']:>9.5f}")
    print(f"peak memory full / chunked: {full['peak'] / max(chunked['peak'], 1):.1f}x; "
          f"time chunked / full: {chunked['seconds'] / full['seconds']:.2f}x; "
          f"|loss difference| {abs(full['loss'] - chunked['loss']):.1e}")


if __name__ == "__main__":
    main()
