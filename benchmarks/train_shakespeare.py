"""Tiny Shakespeare (char level) against nanoGPT's CPU "baby" run.

nanoGPT reference (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000 iterations, measured on
this kind of machine): 95 s wall in all, ~40 ms/iteration, final val loss 1.886. This script runs
configs/shakespeare-char.yaml (plus any --set overrides) and prints the wall time to reach val loss
1.886 and the best val loss reached within 95 s of training.

    python benchmarks/train_shakespeare.py                         # the shipped config
    python benchmarks/train_shakespeare.py --set train.batch_size=32 --set train.lr=2e-3
    python benchmarks/train_shakespeare.py --variants              # shipped config vs nanoGPT's settings

Caveat: the validation split differs (lmforge: 10% of paragraphs by hash; nanoGPT: the last 10% of
the file), so the comparison is indicative.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from lmforge.config import load_config
from lmforge.train.callbacks import Callback
from lmforge.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
TARGET, BUDGET_S = 1.886, 95.0
# nanoGPT's own baby-run settings, for comparison with the shipped config's defaults.
NANOGPT = ["train.batch_size=12", "train.lr=1e-3", "train.min_lr=1e-4", "train.warmup_steps=100",
           "train.max_steps=2000", "train.schedule=cosine"]


class Watch(Callback):
    """Records the training time at which the val loss first reaches TARGET, and the best val loss
    seen within BUDGET_S; stops once both are known."""

    def __init__(self) -> None:
        self.t_target: float | None = None
        self.best_in_budget = math.inf
        self.curve: list[tuple[int, float, float]] = []

    def post_step(self, trainer, result) -> None:
        s = trainer.state
        if s.val_step != s.step or s.val_loss is None:
            return
        t = trainer.elapsed()
        self.curve.append((s.step, t, s.val_loss))
        if t <= BUDGET_S:
            self.best_in_budget = min(self.best_in_budget, s.val_loss)
        if self.t_target is None and s.val_loss <= TARGET:
            self.t_target = t
        if (self.t_target is not None and t > BUDGET_S) or t > 3 * BUDGET_S:
            trainer.stop_requested = "benchmark_done"  # both figures known, or hopeless


def prepare(cfg, run_dir: Path) -> None:
    from lmforge.run import prepare_run_dir, run_data, run_tokenize, run_tokenizer

    prepare_run_dir(cfg, run_dir)
    run_data(cfg, run_dir)
    run_tokenizer(cfg, run_dir)
    run_tokenize(cfg, run_dir)


def run_variant(name: str, overrides: list[str], work: Path, eval_every: int) -> dict:
    import os

    os.chdir(ROOT)  # the config's data path (../shared/data/...) is relative to the repository root
    cfg = load_config(ROOT / "configs" / "shakespeare-char.yaml",
                      [f"train.eval_every={eval_every}", "train.ckpt_every=0", "train.progress=false",
                       "monitor.tensorboard=false", "monitor.plots=false", *overrides])
    run_dir = work / name
    prepare(cfg, run_dir)
    watch = Watch()
    t0 = time.time()
    summary = train(cfg, run_dir, extra_callbacks=[watch])
    return {"name": name, "wall": time.time() - t0, "t_target": watch.t_target, "best95": watch.best_in_budget,
            "final": summary["val_loss"], "steps": summary["step"], "overrides": overrides}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. train.lr=2e-3")
    p.add_argument("--variants", action="store_true", help="also run nanoGPT's own settings")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validations (time includes them)")
    args = p.parse_args()
    variants = [("shipped", args.set)]
    if args.variants:
        variants.append(("nanogpt", NANOGPT + args.set))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_variant(n, o, Path(tmp), args.eval_every) for n, o in variants]
    print(f"\nnanoGPT baby run: val {TARGET} after {BUDGET_S:.0f} s (2000 iterations)")
    print(f"{'variant':<10} {'time to 1.886':>14} {'ratio':>7} {'best val <=95s':>15} {'final val':>10} {'steps':>6}")
    for r in rows:
        tt = f"{r['t_target']:.1f} s" if r["t_target"] is not None else "not reached"
        ratio = f"{BUDGET_S / r['t_target']:.2f}x" if r["t_target"] else "-"
        best = f"{r['best95']:.3f}" if math.isfinite(r["best95"]) else "no eval yet"
        print(f"{r['name']:<10} {tt:>14} {ratio:>7} {best:>15} {r['final']:>10.3f} {r['steps']:>6}")
        if r["overrides"]:
            print(f"           overrides: {' '.join(r['overrides'])}")


if __name__ == "__main__":
    main()
