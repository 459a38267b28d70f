"""How long training waits for a checkpoint: synchronous write vs the background writer.

    python benchmarks/train_checkpoint_stall.py [--preset small] [--vocab 8192] [--saves 3]

Builds the preset with AdamW state (one optimiser step), then saves it `--saves` times each way
through `CheckpointWriter`; prints the stall (time the training thread is blocked) and the write
time, and the ratio sync stall / async stall, all measured in this process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from lmforge.config import config_from_dict
from lmforge.model import GPT
from lmforge.train.ckpt_writer import CheckpointWriter
from lmforge.train.optim import build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--saves", type=int, default=3)
    args = p.parse_args()
    cfg = config_from_dict({"model": {"preset": args.preset, "vocab_size": args.vocab}})
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    model(torch.randint(0, args.vocab, (1, 16))).sum().backward()
    opt.step()  # allocate the AdamW moments
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {n / 1e6:.1f}M parameters, checkpoint ~{n * 12 / 2**20:.0f} MiB (weights + 2 moments)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in (False, True):
            w = CheckpointWriter(Path(tmp) / f"async={mode}", keep_last=2, asynchronous=mode)
            stalls, writes = [], []
            for i in range(args.saves):
                w.save(i + 1, model, opt.state_dict(), {"step": i + 1}, is_best=False)
                stalls.append(w.last_stall)
                w.wait()  # (a real run trains here while the thread writes)
                writes.append(w.last_write)
            results[mode] = (statistics.median(stalls), statistics.median(writes))
    print(f"{'mode':<8} {'stall (s)':>10} {'write (s)':>10}")
    for mode, (stall, write) in results.items():
        print(f"{'async' if mode else 'sync':<8} {stall:>10.3f} {write:>10.3f}")
    print(f"stall ratio sync / async: {results[False][0] / max(results[True][0], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
