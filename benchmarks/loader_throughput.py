"""Loader throughput against the `small` preset's training-step rate, measured in the same run.

    python benchmarks/loader_throughput.py [--tokens 20000000] [--steps 4] [--batch 16]

Prints: loader batches/s (concat and best_fit packing, with and without a prefetch thread), the
model's train steps/s (forward + backward + AdamW, fp32, doc masks), the ratio between them, the
measured data-wait fraction of a short training loop that consumes a prefetching loader, the
packing report (padding and split rates) and the memory of the two document-mask forms.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def make_tokens(out: Path, n_tokens: int, vocab: int) -> None:
    """Random documents with a long-tailed length distribution (like web text), a few shards."""
    from lmforge.tokens.shards import write_tokens_dir

    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(5.5, 1.0, size=n_tokens // 200).astype(np.int64) + 2, 20_000)
    lengths = lengths[np.cumsum(lengths) <= n_tokens]
    flat = rng.integers(4, vocab, size=int(lengths.sum()), dtype=np.int64)
    docs = np.split(flat, np.cumsum(lengths)[:-1])
    write_tokens_dir(out, {"train": docs, "val": docs[:10]}, vocab_size=vocab, shard_tokens=n_tokens // 4)


def loader_rate(ds, packing: str, prefetch: int, seq_len: int, batch: int, n: int = 200) -> float:
    from lmforge.tokens.loader import TokenLoader

    ld = TokenLoader(ds, seq_len=seq_len, batch_size=batch, seed=0, packing=packing, prefetch=prefetch)
    next(ld)  # thread start and first permutation
    t0 = time.perf_counter()
    for _ in range(n):
        next(ld)
    rate = n / (time.perf_counter() - t0)
    ld.close()
    return rate


def small_model(vocab: int):
    from lmforge.config import ModelConfig
    from lmforge.model import GPT, get_preset

    model = GPT(ModelConfig(**{**get_preset("small"), "vocab_size": vocab}))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def train_step(model, opt, b) -> None:
    logits = model(b.input_ids, doc_ids=b.doc_ids)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), b.targets.flatten(), ignore_index=-100)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20_000_000)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    from lmforge.model import get_preset
    from lmforge.model.attention import mask_memory_report
    from lmforge.tokens.loader import TokenLoader
    from lmforge.tokens.packing import PACKERS
    from lmforge.tokens.shards import open_split

    T = get_preset("small")["block_size"]
    with tempfile.TemporaryDirectory() as tmp:
        make_tokens(Path(tmp), a.tokens, a.vocab)
        ds = open_split(tmp, "train")
        t0 = time.perf_counter()
        rep = {name: cls(ds, T).stats() for name, cls in PACKERS.items()}  # padding and split rates
        pack_s = time.perf_counter() - t0
        rates = {(p, f): loader_rate(ds, p, f, T, a.batch) for p in ("concat", "best_fit") for f in (0, 2)}
        model, opt = small_model(a.vocab)
        ld = TokenLoader(ds, seq_len=T, batch_size=a.batch, seed=0, prefetch=2)
        train_step(model, opt, next(ld))  # warm-up
        ld.wait_time = 0.0
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train_step(model, opt, next(ld))
        loop_s = time.perf_counter() - t0
        step_rate = a.steps / loop_s
        wait_frac = ld.wait_time / loop_s
        ld.close()
        mask = mask_memory_report(next(TokenLoader(ds, seq_len=T, batch_size=a.batch, seed=0)).doc_ids, 128,
                                  build_block_mask=False)
    print(f"{ds.num_tokens / 1e6:.1f}M tokens, {ds.num_docs} docs, {len(ds.shard_names)} shards; small preset, "
          f"B={a.batch}, T={T}, {torch.get_num_threads()} torch threads")
    print(f"{'loader':28s} {'batches/s':>10s} {'x train steps/s':>16s}")
    for (p, f), r in rates.items():
        print(f"{f'{p}, prefetch {f}':28s} {r:10.1f} {r / step_rate:16.1f}")
    print(f"{'small model train step':28s} {step_rate:10.3f} {1.0:16.1f}")
    print(f"data wait in a {a.steps}-step training loop (prefetch 2): {100 * wait_frac:.3f}% of step time "
          f"({ld.wait_time * 1e3:.1f} ms of {loop_s:.1f} s)")
    print(f"packing report (built in {pack_s:.1f} s for both):")
    for name, s in rep.items():
        print(f"  {name:9s} windows {s['windows']:8d}  padding {100 * s['padding_rate']:6.2f}%  "
              f"split docs {100 * s['split_rate']:6.2f}%  dropped tokens {s['dropped_tokens']}")
    print(f"document mask per batch (B={a.batch}, T={T}): dense bool {mask['dense_bool_bytes'] / 1e6:.2f} MB, "
          f"FlexAttention block mask {mask['flex_block_mask_bytes'] / 1e3:.2f} kB "
          f"({mask['dense_over_flex']}x smaller)")
    print(f"{'seq_len':>8s} {'dense bool MB':>14s} {'block mask kB':>14s} {'ratio':>8s}"
          f"   (B={a.batch}, 128-token blocks)")
    for t in (1024, 4096, 8192):
        m = mask_memory_report(torch.zeros(a.batch, t, dtype=torch.long), 128, build_block_mask=False)
        print(f"{t:8d} {m['dense_bool_bytes'] / 1e6:14.1f} {m['flex_block_mask_bytes'] / 1e3:14.1f} "
              f"{m['dense_over_flex']:8.0f}")


if __name__ == "__main__":
    main()
