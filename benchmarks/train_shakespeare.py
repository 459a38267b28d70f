"""Tiny Shakespeare (char level) against nanoGPT's CPU "baby" run.

nanoGPT reference (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iterations, measured on
this kind of machine): 95 s wall in all, ~40 ms/iteration, final val loss 1.886. This script runs

1. configs/shakespeare-char.yaml as shipped (plus any --set overrides): its whole `train()` call
   (model build, every step, the validations, the final checkpoint) is timed, and its final val
   loss compared with 1.886 — the wall time lmforge needs to reach nanoGPT's result;
2. the same config with a 95 s time budget (`train.max_time=95`, no step budget: the LR schedule
   decays over the time budget) — the best val loss lmforge reaches in nanoGPT's wall time.

    python benchmarks/train_shakespeare.py                         # both runs
    python benchmarks/train_shakespeare.py --set train.max_steps=300 --skip-budget
    python benchmarks/train_shakespeare.py --variants              # also nanoGPT's own settings

Caveat: the validation split differs (lmforge: 10% of paragraphs by hash; nanoGPT: the last 10% of
the file), so the comparison is indicative. Data preparation (nanoGPT's prepare.py; our data,
tokenizer and tokenize stages) is not timed on either side.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from lmforge.config import load_config
from lmforge.train.build import train
from lmforge.train.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
TARGET, BUDGET_S = 1.886, 95.0
# nanoGPT's own baby-run settings, for comparison with the shipped config's defaults.
NANOGPT = ["train.batch_size=12", "train.lr=1e-3", "train.min_lr=1e-4", "train.warmup_steps=100",
           "train.max_steps=2000", "train.schedule=cosine"]


class Watch(Callback):
    """Records (step, seconds since the train() call, val loss) at every validation."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.curve: list[tuple[int, float, float]] = []

    def post_step(self, trainer, result) -> None:
        s = trainer.state
        if s.val_step == s.step and s.val_loss is not None:
            self.curve.append((s.step, time.time() - self.t0, s.val_loss))


def prepare(cfg, run_dir: Path) -> None:
    from lmforge.run import prepare_run_dir, run_data, run_tokenize, run_tokenizer

    prepare_run_dir(cfg, run_dir)
    run_data(cfg, run_dir)
    run_tokenizer(cfg, run_dir)
    run_tokenize(cfg, run_dir)


def run_variant(name: str, overrides: list[str], work: Path) -> dict:
    import os

    os.chdir(ROOT)  # the config's data path (../shared/data/...) is relative to the repository root
    cfg = load_config(ROOT / "configs" / "shakespeare-char.yaml",
                      ["train.progress=false", "monitor.tensorboard=false", "monitor.plots=false", *overrides])
    run_dir = work / name
    prepare(cfg, run_dir)
    watch = Watch()
    summary = train(cfg, run_dir, extra_callbacks=[watch])
    wall = time.time() - watch.t0
    curve = watch.curve + [(summary["step"], wall, summary["val_loss"])]  # the final validation
    first = next(((st, t) for st, t, v in curve if v <= TARGET), None)
    best95 = min((v for _, t, v in curve if t <= BUDGET_S), default=math.inf)
    return {"name": name, "wall": wall, "first": first, "best95": best95, "final": summary["val_loss"],
            "steps": summary["step"], "overrides": overrides}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. train.lr=2e-3")
    p.add_argument("--skip-budget", action="store_true", help="skip the 95 s time-budget run")
    p.add_argument("--variants", action="store_true", help="also run nanoGPT's own settings")
    args = p.parse_args()
    variants = [("shipped", args.set)]
    if not args.skip_budget:
        variants.append(("budget95", args.set + ["train.max_steps=0", f"train.max_time={BUDGET_S:g}"]))
    if args.variants:
        variants.append(("nanogpt", NANOGPT + ["train.eval_every=250"] + args.set))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_variant(n, o, Path(tmp)) for n, o in variants]
    print(f"\nnanoGPT baby run: val {TARGET} in {BUDGET_S:.0f} s wall (2000 iterations)")
    print(f"{'run':<10} {'wall':>7} {'steps':>6} {'final val':>10} {'1st val <= 1.886':>20} {'vs 95 s':>8} "
          f"{'best val <= 95 s':>17}")
    for r in rows:
        first = f"step {r['first'][0]}, {r['first'][1]:.1f} s" if r["first"] else "not reached"
        ratio = f"{BUDGET_S / r['first'][1]:.2f}x" if r["first"] else "-"
        best = f"{r['best95']:.3f}" if math.isfinite(r["best95"]) else "-"
        print(f"{r['name']:<10} {r['wall']:>6.1f}s {r['steps']:>6} {r['final']:>10.3f} {first:>20} {ratio:>8} "
              f"{best:>17}")
        if r["overrides"]:
            print(f"           overrides: {' '.join(r['overrides'])}")
    print("wall = the whole train() call: model build, steps, validations, final checkpoint")


if __name__ == "__main__":
    main()
