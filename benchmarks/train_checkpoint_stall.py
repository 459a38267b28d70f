"""How long training waits for a checkpoint, and how many bytes each one writes.

    python benchmarks/train_checkpoint_stall.py [--preset small] [--vocab 8192] [--rounds 5] [--steps 6]

1. Stall. A real training loop (forward, backward, AdamW step on a (1, 64) batch of the preset) runs
   `--steps` steps with one checkpoint after the second step, in each mode: no checkpoint (baseline),
   sync full, async full (background thread), sync and async weights-only ("light"). Modes are interleaved
   and repeated `--rounds` times. Two figures per mode: the time the training thread is blocked in
   `save()` (copy + any previous write; median), and the loop's slowdown against the baseline (the
   stall plus the writer thread's competition for the cores; best loop of each mode, as other load
   on a shared machine only adds time). Ratios are against sync full.
2. Bytes per checkpoint with part of the model frozen (requires_grad=False: the tied wte/lm_head
   embedding; then all but the last block, as when fine-tuning the top): every tensor in every
   checkpoint (what the writer did before frozen files) against the frozen tensors stored once in
   `frozen-<sha>.safetensors` (first save, then each later one). Frozen parameters have no AdamW
   moments either way, so the saving is their weights.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lmforge import checkpoint as ck
from lmforge.config import config_from_dict
from lmforge.model import GPT
from lmforge.train.ckpt_writer import CheckpointWriter
from lmforge.train.optim import build_optimizer

MODES = ("none", "sync full", "async full", "sync light", "async light")


def build(preset: str, vocab: int, freeze: str = ""):
    cfg = config_from_dict({"model": {"preset": preset, "vocab_size": vocab, "block_size": 64}})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    top = f"blocks.{cfg.model.n_layer - 1}."
    for name, p in model.named_parameters():
        if (freeze == "embedding" and name == "wte.weight") or (freeze == "all but the last block" and
                                                               not name.startswith((top, "ln_f."))):
            p.requires_grad_(False)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    x = torch.randint(0, vocab, (1, 64))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # allocate the AdamW moments
    return model, opt, step


def one_round(mode: str, model, opt, step, root: Path, steps: int) -> tuple[float, float]:
    """(loop seconds, seconds blocked in save) for `steps` steps with one checkpoint after step 2."""
    w = CheckpointWriter(root, keep_last=1, asynchronous=mode.startswith("async"))
    t0, stall = time.perf_counter(), 0.0
    for i in range(steps):
        step()
        if i == 1 and mode != "none":
            if mode.endswith("light"):
                w.save_weights(i + 1, model, {"step": i + 1}, keep_last=1, is_best=False)
            else:
                w.save(i + 1, model, {"optimizer": opt.state_dict()}, {"step": i + 1}, is_best=False)
            stall = w.last_stall
    loop = time.perf_counter() - t0
    w.wait()  # (a write still running here would have overlapped the next steps of a longer loop)
    return loop, stall


def bench_stall(args: argparse.Namespace, tmp: Path) -> None:
    model, opt, step = build(args.preset, args.vocab)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.preset}: {n / 1e6:.1f}M parameters; full checkpoint ~{n * 12 / 2**20:.0f} MiB "
          f"(weights + 2 AdamW moments), weights-only ~{n * 4 / 2**20:.0f} MiB")
    loops: dict[str, list[float]] = {m: [] for m in MODES}
    stalls: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]  # interleave, alternating the order
        for mode in order:
            loop, stall = one_round(mode, model, opt, step, tmp / f"r{r}-{mode.replace(' ', '_')}", args.steps)
            loops[mode].append(loop)
            stalls[mode].append(stall)
    # blocked time: median; loop slowdown: best (minimum) loop of each mode against the best baseline,
    # since other load on the machine only ever adds time
    best = {m: min(loops[m]) for m in MODES}
    med = {m: (statistics.median(stalls[m]), best[m] - best["none"]) for m in MODES}
    print(f"\n1. stall: {args.steps} steps, one checkpoint; baseline loop {best['none']:.2f} s "
          f"({best['none'] / args.steps * 1000:.0f} ms/step); {args.rounds} interleaved rounds")
    print(f"{'mode':<12} {'blocked in save (s, median)':>28} {'x sync full':>12} {'loop slowdown (s, best)':>24} "
          f"{'x sync full':>12}")
    ref_stall, ref_over = med["sync full"]
    for mode in MODES[1:]:
        s, o = med[mode]
        print(f"{mode:<12} {s:>28.3f} {s / ref_stall:>12.3f} {o:>24.3f} {o / ref_over if ref_over > 0 else 0:>12.3f}")


def bench_bytes(args: argparse.Namespace, tmp: Path, freeze: str, label: str) -> None:
    model, opt, step = build(args.preset, args.vocab, freeze)
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    print(f"\n{label}. bytes per checkpoint, {freeze} frozen ({frozen / 1e6:.1f}M of "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    optim = {"optimizer": opt.state_dict()}
    every = ck.write_checkpoint(tmp / "every", 1, model_state=model, optim_state=optim, state={"step": 1})
    old = sum(f.stat().st_size for f in every.iterdir())
    w = CheckpointWriter(tmp / "once", keep_last=3)
    written = []
    for s in (1, 2, 3):
        step()
        w.save(s, model, {"optimizer": opt.state_dict()}, {"step": s}, is_best=False)
        written.append(w.last_bytes)
    w.save_weights(4, model, {"step": 4}, keep_last=1, is_best=False)
    light = w.last_bytes
    print(f"{'checkpoint':<44} {'MiB written':>12} {'x every-tensor':>15}")
    rows = [("full, every tensor in every checkpoint", old), ("full, frozen file once: first save", written[0]),
            ("full, frozen file once: each later save", written[2]), ("weights-only, later save", light)]
    for label, b in rows:
        print(f"{label:<44} {b / 2**20:>12.2f} {b / old:>15.3f}")
    shutil.rmtree(tmp / "every")
    shutil.rmtree(tmp / "once")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=6, help="training steps per round (one checkpoint after step 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training thread (1 leaves a core to the writer thread on 2 cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        bench_stall(args, Path(tmp))
        for label, freeze in (("2a", "embedding"), ("2b", "all but the last block")):
            bench_bytes(args, Path(tmp), freeze, label)


if __name__ == "__main__":
    main()
