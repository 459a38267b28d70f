"""Training throughput of the `small` preset: tokens/s and MFU against this machine's matmul rate,
measured in the same run (fp32 and bf16), and against Hugging Face `LlamaForCausalLM` with the
same dimensions in a plain PyTorch loop (when `transformers` is installed).

    python benchmarks/train_throughput.py                  # small, batch 8 x 256, 2 threads
    python benchmarks/train_throughput.py --steps 20 --compile

MFU here = model FLOPs per token (6N + attention, `GPT.flops_per_token`) x tokens/s, divided by the
measured dense matmul rate (2048^3) of the same dtype, or of fp32 when that is faster (CPUs without
native bf16 emulate it slowly): the share of the achievable peak we reach. The runs compared take
turns step by step in one process, so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import torch

from lmforge.config import config_from_dict
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.optim import build_optimizer
from lmforge.train.step import StepSettings, train_step


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def batches(vocab: int, b: int, t: int, n: int) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randint(0, vocab, (b, t + 1), generator=g)
        out.append(Batch(x[:, :-1].contiguous(), x[:, 1:].contiguous(), None))
    return out


def lmforge_stepper(args, precision: str):
    """A closure running one lmforge training step on a given batch, and the model's FLOPs/token."""
    cfg = config_from_dict({"model": {"preset": "small", "vocab_size": args.vocab, "block_size": args.seq},
                            "train": {"lr": 1e-3, "compile": args.compile}})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    run = torch.compile(model) if args.compile else model
    ac = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if precision == "bf16"
          else contextlib.nullcontext)
    s = StepSettings(grad_clip=1.0, autocast=ac)
    return (lambda b: train_step(run, opt, [b], s)), model.flops_per_token(args.seq)


def hf_stepper(args):
    """The same dimensions as Hugging Face LlamaForCausalLM in a plain PyTorch loop (None without
    transformers)."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        return None
    c = config_from_dict({"model": {"preset": "small", "vocab_size": args.vocab}}).model
    from lmforge.model.gpt import mlp_hidden

    hf_cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=c.n_embd, intermediate_size=mlp_hidden(c),
                         num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_head,
                         max_position_embeddings=args.seq, tie_word_embeddings=True, attention_dropout=0.0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf_cfg)
    model.config._attn_implementation = "sdpa"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))

    def step(b: Batch) -> None:
        logits = model(input_ids=b.input_ids).logits  # same loss as lmforge: fp32 cross-entropy
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), b.targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def interleaved(steppers: dict, data: list[Batch], warmup: int) -> dict[str, list[float]]:
    """Step times of each stepper, taking turns step by step, so that load from other processes on
    a shared machine falls on all of them alike."""
    for b in data[:warmup]:
        for fn in steppers.values():
            fn(b)
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for b in data[warmup:]:
        for k, fn in steppers.items():
            t0 = time.perf_counter()
            fn(b)
            times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"small preset, micro-batch {args.batch} x {args.seq}, vocab {args.vocab}, "
          f"{torch.get_num_threads()} threads, compile={args.compile}, torch {torch.__version__}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    fp32_peak = matmul_rate(torch.float32)
    steppers, flops = {}, 0.0
    for precision in args.precisions.split(","):
        steppers["lmforge " + precision], flops = lmforge_stepper(args, precision)
    hf = None if args.no_hf else hf_stepper(args)
    if hf is not None:
        steppers["HF Llama fp32"] = hf
    elif not args.no_hf:
        print("transformers not installed: no LlamaForCausalLM baseline")
    data = batches(args.vocab, args.batch, args.seq, args.warmup + args.steps)
    times = interleaved(steppers, data, args.warmup)
    tokens = args.batch * args.seq
    print(f"{'run':<16} {'tokens/s (median)':>18} {'best':>9} {'model GFLOP/s':>14} {'matmul GFLOP/s':>15} {'MFU':>7}")
    for name, ts in times.items():
        prec = name.split()[-1]
        # the achievable dense rate: this dtype's, or fp32's where the CPU emulates bf16 more slowly
        peak = fp32_peak if prec == "fp32" else max(fp32_peak, matmul_rate(dtypes[prec], reps=1))
        tps, best = tokens / statistics.median(ts), tokens / min(ts)
        print(f"{name:<16} {tps:>18,.0f} {best:>9,.0f} {flops * tps / 1e9:>14.1f} {peak / 1e9:>15.1f} "
              f"{flops * tps / peak:>6.1%}")
    if hf is not None and "lmforge fp32" in times:
        med = statistics.median(times["HF Llama fp32"]) / statistics.median(times["lmforge fp32"])
        best = min(times["HF Llama fp32"]) / min(times["lmforge fp32"])
        print(f"lmforge fp32 / HF Llama fp32 tokens/s: {med:.2f}x (median step), {best:.2f}x (best step)")


if __name__ == "__main__":
    main()
