"""Tiny Shakespeare (char level): nanoGPT's recipe against lmforge's shipped config, on nanoGPT's split.

Both models train on the first 90% of the file and are scored on the last 10% **as one continuous
stream with the same windows** (the character spans of consecutive `block_size + 1` windows, each
model encoding them with its own character vocabulary), by this script, not by either trainer:

1. baseline: nanoGPT's `train.py` recipe for the CPU "baby" run, written here (learned positions,
   LayerNorm without bias, GELU, tied embeddings, 4 layers x 4 heads x 128, context 64, batch 12,
   AdamW lr 1e-3 betas (0.9, 0.99) weight decay 0.1 on matrices, 100 warmup iterations, cosine to
   1e-4 over 2000 iterations, clip 1.0, random windows of the training text);
2. lmforge: configs/shakespeare-char.yaml as shipped (its data, tokenizer and tokenize stages run first
   and are not timed; `train.eval_every=0`: lmforge's own validation is not training time).

During training each model is scored every `--every` training seconds (default 10) on `--windows` windows spread
evenly over the held-out text (the clock stops while scoring); at the end both are scored on every
window. Printed: time to nanoGPT's 1.886, loss at equal wall time, final losses on the whole stream.
Goal: lmforge reaches 1.886 in at most half the baseline's wall time.

    python benchmarks/train_shakespeare.py                       # both
    python benchmarks/train_shakespeare.py --set train.max_steps=600 --skip-baseline
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmforge.data.builtin import builtin_text_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(builtin_text_path("builtin:shakespeare"))  # the copy shipped with lmforge (nanoGPT's input.txt)
TARGET = 1.886


# ----------------------------------------------------------------------------- nanoGPT, as its model.py
class Block(nn.Module):
    def __init__(self, C: int, H: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)
        self.H = H

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab: int, T: int = 64, L: int = 4, H: int = 4, C: int = 128) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f, self.lm_head = nn.LayerNorm(C, bias=False), nn.Linear(C, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def nanogpt_lr(it: int, lr=1e-3, min_lr=1e-4, warmup=100, decay=2000) -> float:
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    ratio = min(1.0, (it - warmup) / (decay - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


# ----------------------------------------------------------------------------- the common yardstick
class Stream:
    """The held-out text cut into consecutive windows of T + 1 characters; `loss(model, encode)` is the
    mean next-character loss over the chosen windows (a subset for curves, all for the final figure)."""

    def __init__(self, text: str, T: int, subset: int) -> None:
        self.text, self.T = text, T
        self.n = (len(text) - 1) // T
        self.all = np.arange(self.n)
        self.subset = np.linspace(0, self.n - 1, min(subset, self.n)).astype(int)

    @torch.no_grad()
    def loss(self, model: nn.Module, ids: np.ndarray, which: np.ndarray, forward) -> float:
        was = model.training
        model.eval()
        T, total, count = self.T, 0.0, 0
        for i in range(0, len(which), 64):
            w = torch.from_numpy(np.stack([ids[j * T: j * T + T + 1] for j in which[i:i + 64]]).astype(np.int64))
            logits = forward(model, w[:, :-1])
            total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
            count += w[:, 1:].numel()
        model.train(was)
        return total / count


class Clock:
    """Training seconds: wall time minus the time spent scoring."""

    def __init__(self) -> None:
        self.t0, self.paused = time.perf_counter(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def pause(self, fn):
        t = time.perf_counter()
        out = fn()
        self.paused += time.perf_counter() - t
        return out


def run_baseline(text: str, stream: Stream, every_s: float, threads: int) -> dict:
    torch.manual_seed(1337)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(len(data) * 0.9)
    train, val_ids = torch.from_numpy(data[:n]), data[n:]
    model = NanoGPT(len(chars))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    fwd = lambda m, x: m(x)  # noqa: E731
    curve, clock, next_score = [], Clock(), 0.0
    for it in range(2000):
        for g in opt.param_groups:
            g["lr"] = nanogpt_lr(it)
        ix = torch.randint(len(train) - 64, (12,))
        x = torch.stack([train[i:i + 64] for i in ix])
        y = torch.stack([train[i + 1:i + 65] for i in ix])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if clock.now() >= next_score or it == 1999:
            curve.append((it + 1, clock.now(), clock.pause(lambda: stream.loss(model, val_ids, stream.subset, fwd))))
            next_score += every_s
    wall = clock.now()
    final = stream.loss(model, val_ids, stream.all, fwd)
    return {"name": "nanoGPT recipe", "curve": curve, "wall": wall, "final": final, "steps": 2000,
            "params": sum(p.numel() for p in model.parameters())}


def run_lmforge(text: str, stream: Stream, every_s: float, overrides: list[str], work: Path) -> dict:
    from lmforge.config import load_config
    from lmforge.run import prepare_run_dir, run_data, run_tokenize, run_tokenizer
    from lmforge.tokenizer import load_tokenizer
    from lmforge.train.build import train
    from lmforge.train.callbacks import Callback

    cfg = load_config(ROOT / "configs" / "shakespeare-char.yaml",
                      [f"data.inputs=[{DATA}]", "train.progress=false", "train.eval_every=0",
                       "monitor.tensorboard=false", "monitor.plots=false", "monitor.system_every=0", *overrides])
    run_dir = work / "lmforge"
    prepare_run_dir(cfg, run_dir)
    for stage in (run_data, run_tokenizer, run_tokenize):
        stage(cfg, run_dir)
    tok = load_tokenizer(run_dir / "tokenizer")
    val_ids = np.array(tok.encode(stream.text), dtype=np.int64)
    assert len(val_ids) == len(stream.text), "a character tokenizer: one id per character"
    fwd = lambda m, x: m(x)  # noqa: E731

    class Watch(Callback):
        def __init__(self) -> None:
            self.curve, self.clock, self.next = [], None, 0.0

        def pre_train(self, trainer) -> None:
            self.clock = Clock()

        def post_step(self, trainer, result) -> None:
            last = bool(trainer.budget_reached())
            if self.clock.now() >= self.next or last:
                m = trainer.raw_model
                self.curve.append((trainer.state.step, self.clock.now(),
                                   self.clock.pause(lambda: stream.loss(m, val_ids, stream.subset, fwd))))
                self.next += every_s

    watch = Watch()
    summary = train(cfg, run_dir, extra_callbacks=[watch])
    wall = watch.curve[-1][1]
    from lmforge.checkpoint import load_for_inference

    model, _, _ = load_for_inference(run_dir, "latest", "cpu")
    final = stream.loss(model, val_ids, stream.all, fwd)
    return {"name": "lmforge shipped", "curve": watch.curve, "wall": wall, "final": final, "steps": summary["step"],
            "params": model.num_params(), "overrides": overrides}


def first_below(curve, target) -> tuple[int, float] | None:
    return next(((s, t) for s, t, v in curve if v <= target), None)


def at_time(curve, t_max) -> float:
    return min((v for _, t, v in curve if t <= t_max), default=math.inf)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", default=[], help="lmforge config override, e.g. train.max_steps=600")
    p.add_argument("--every", type=float, default=10.0, help="score every N training seconds (default 10)")
    p.add_argument("--windows", type=int, default=300, help="windows in the in-training score (default 300)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count())
    args = p.parse_args()
    if not DATA.is_file():
        print(f"{DATA} is missing: nothing to benchmark (this benchmark needs Tiny Shakespeare)")
        return
    torch.set_num_threads(args.threads)
    text = DATA.read_text(encoding="utf-8")
    held = text[int(len(text) * 0.9):]
    stream = Stream(held, 64, args.windows)
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_baseline:
            rows.append(run_baseline(text, stream, args.every, args.threads))
        rows.append(run_lmforge(text, stream, args.every, args.set, Path(tmp)))
    load1 = os.getloadavg()
    base = rows[0] if not args.skip_baseline else None
    print(f"\nheld-out: the last 10% of Tiny Shakespeare ({len(held):,} chars), {stream.n} windows of 65 "
          f"characters as one stream; curves on {len(stream.subset)} of them, final figure on all")
    print(f"threads {args.threads}; load average before {load0[0]:.1f}, after {load1[0]:.1f} "
          f"(2-core machine shared with other jobs: wall times are noisy)")
    hdr = f"{'run':<17}{'params':>9}{'steps':>7}{'train s':>9}{'final loss':>11}{'t to 1.886':>12}{'vs base':>9}"
    if base:
        hdr += f"{'loss @ base t/2':>16}{'loss @ base t':>14}"
    print(hdr)
    for r in rows:
        hit = first_below(r["curve"], TARGET)
        line = (f"{r['name']:<17}{r['params']:>9,}{r['steps']:>7}{r['wall']:>9.1f}{r['final']:>11.4f}"
                f"{(f'{hit[1]:.1f} s' if hit else 'not reached'):>12}")
        if base:
            bh = first_below(base["curve"], TARGET)
            if hit and bh:
                ratio = f"{bh[1] / hit[1]:.2f}x"
            elif hit and r is not base:  # the baseline never got there: its whole run is a lower bound
                ratio = f">{base['wall'] / hit[1]:.2f}x"
            else:
                ratio = "-"
            line += f"{ratio:>9}"
            line += f"{at_time(r['curve'], base['wall'] / 2):>16.4f}{at_time(r['curve'], base['wall']):>14.4f}"
        print(line)
    for r in rows:
        print(f"{r['name']} curve (step, train s, loss): "
              + ", ".join(f"({s}, {t:.0f}, {v:.3f})" for s, t, v in r["curve"]))
    if rows[-1].get("overrides"):
        print("lmforge overrides:", " ".join(rows[-1]["overrides"]))
    print("vs base = baseline's time to 1.886 / lmforge's (goal >= 2.00x); '>' when the baseline never reached 1.886: "
          "its whole run's time over lmforge's is then a lower bound", file=sys.stdout)


if __name__ == "__main__":
    main()
