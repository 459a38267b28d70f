"""Evaluation throughput against training passes on the same model and batch shape.

    python benchmarks/eval_throughput.py [--docs 200] [--repeats 3] [--batch 8] [--device cpu|cuda]

Measured in this process, tokens per second of:
1. `score_documents` (what `lmforge eval` runs): documents of mixed lengths packed into rows with
   block-diagonal attention, exact per-document sums, no gradients;
2. a training forward + backward pass (cross-entropy, `loss.backward()`, no optimiser step) on
   full rows of the same shape — the baseline;
3. a no-grad forward + cross-entropy on full rows (the ceiling for eval: no packing, no masks, no
   per-document bookkeeping), and a bare no-grad forward.
Ratios: eval / train fwd+bwd (about 3x expected: backward costs about twice the forward) and
eval / forward + loss (the cost of packing, masks and per-document accounting).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.eval.scoring import score_documents
from lmforge.model import GPT


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(fn, n_calls: int, args, tokens: int | None = None, warmup: bool = True) -> float:
    """Tokens/s of `n_calls` calls of `fn` (each on full (batch, block) rows unless `tokens` says
    how many tokens the calls handle in all), after one warm-up call."""
    if warmup:
        fn()
    _sync(args.device)
    t = time.perf_counter()
    for _ in range(n_calls):
        fn()
    _sync(args.device)
    done = tokens if tokens is not None else n_calls * args.batch * args.block
    return done / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds; best of each (default 3)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=args.layers, n_head=args.width // 64, n_embd=args.width, block_size=args.block,
                      vocab_size=args.vocab)
    model = GPT(cfg).to(args.device)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mean=4.5, sigma=1.0, size=args.docs).astype(int), 4, 4 * args.block)
    docs = [rng.integers(4, args.vocab, size=n) for n in lengths]
    print(f"model {model.num_params() / 1e6:.2f}M params, device {args.device}, threads {torch.get_num_threads()}; "
          f"{args.docs} docs, {int(lengths.sum()):,} tokens (median {int(np.median(lengths))}), rows of {args.block}, "
          f"batch {args.batch}")

    score_documents(model, docs[:20], 20, prefix_id=3, batch_size=args.batch)  # warm-up
    total = int(sum(len(d) for d in docs))  # every token is scored (an <eos> prefix predicts the first)
    n_steps = max(1, int(np.ceil(total / (args.batch * args.block))))
    x = torch.randint(4, args.vocab, (args.batch, args.block + 1), device=args.device)

    def evaluate() -> None:
        model.eval()
        score_documents(model, docs, len(docs), prefix_id=3, batch_size=args.batch)

    def train_step() -> None:
        model.train()
        logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    def fwd_loss() -> None:
        model.eval()
        with torch.inference_mode():
            F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())

    def fwd() -> None:
        model.eval()
        with torch.inference_mode():
            model(x[:, :-1])

    # Rounds alternate the four measurements; the best of each is kept (least disturbed by other load).
    best = {"eval": 0.0, "train": 0.0, "loss": 0.0, "fwd": 0.0}
    for _ in range(args.repeats):
        best["eval"] = max(best["eval"], _rate(evaluate, 1, args, tokens=total, warmup=False))
        best["train"] = max(best["train"], _rate(train_step, n_steps, args))
        best["loss"] = max(best["loss"], _rate(fwd_loss, n_steps, args))
        best["fwd"] = max(best["fwd"], _rate(fwd, n_steps, args))
    eval_tps, train_tps, loss_tps, fwd_tps = best["eval"], best["train"], best["loss"], best["fwd"]

    print(f"eval (score_documents) : {eval_tps:12,.0f} tokens/s")
    print(f"train forward+backward : {train_tps:12,.0f} tokens/s")
    print(f"forward + loss, no grad: {loss_tps:12,.0f} tokens/s")
    print(f"bare forward, no grad  : {fwd_tps:12,.0f} tokens/s")
    print(f"eval / train fwd+bwd   : {eval_tps / train_tps:8.2f}x")
    print(f"eval / forward + loss  : {eval_tps / loss_tps:8.2f}x (1.0 = packing, masks, per-doc sums cost nothing)")
    print(f"eval / bare forward    : {eval_tps / fwd_tps:8.2f}x")


if __name__ == "__main__":
    main()
