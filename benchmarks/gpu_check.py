"""Single-process GPU checks of the training engine (called by gpu_check.sh; needs CUDA).

Each check prints one row: name, ok/FAIL/skip, detail. The last row is gpt2-124m at context 1024
(bf16 + torch.compile + flash attention): tokens/s and MFU against the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.config import config_from_dict
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.build import GPU_PEAK_FLOPS, peak_flops
from lmforge.train.optim import build_optimizer
from lmforge.train.step import StepSettings, train_step

DEV = torch.device("cuda")
ROWS: list[str] = []


def row(name: str, status: str, detail: str) -> None:
    line = f"{name:<26} {status:<7} {detail}"
    ROWS.append(line)
    print(line, flush=True)


def check(name: str) -> Callable:
    def wrap(fn: Callable[[], str]) -> Callable[[], None]:
        def run() -> None:
            try:
                row(name, "ok", fn())
            except Exception as e:  # one failing check must not hide the others
                traceback.print_exc()
                row(name, "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")
        return run
    return wrap


def model_and_batch(preset: str = "small", vocab: int = 8192, T: int = 256, B: int = 8, **kw):
    cfg = config_from_dict({"model": {"preset": preset, "vocab_size": vocab, "block_size": T, **kw}})
    torch.manual_seed(0)
    m = GPT(cfg.model).to(DEV)
    x = torch.randint(0, vocab, (B, T + 1), generator=torch.Generator().manual_seed(0))
    return cfg, m, Batch(x[:, :-1], x[:, 1:], None)


def bf16_ctx():
    return functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16)


@check("bf16 autocast")
def c_bf16() -> str:
    cfg, m, b = model_and_batch()
    with torch.no_grad():
        ref = F.cross_entropy(m(b.input_ids.to(DEV)).float().flatten(0, 1), b.targets.flatten().to(DEV)).item()
    res = train_step(m, build_optimizer(m, cfg.train, DEV), [b], StepSettings(autocast=bf16_ctx()))
    assert res.applied and abs(res.loss - ref) < 0.05, (res.loss, ref)
    return f"loss {res.loss:.4f} vs fp32 {ref:.4f}"


@check("fp16 + GradScaler")
def c_fp16() -> str:
    cfg, m, b = model_and_batch()
    scaler = torch.amp.GradScaler("cuda")
    s = StepSettings(autocast=functools.partial(torch.autocast, "cuda", dtype=torch.float16), scaler=scaler)
    opt = build_optimizer(m, cfg.train, DEV)
    results = [train_step(m, opt, [b], s) for _ in range(3)]
    assert all(not r.bad for r in results)
    return f"losses {[round(r.loss, 3) for r in results]}, scale {scaler.get_scale():.0f}"


@check("fused AdamW")
def c_fused() -> str:
    cfg, m, b = model_and_batch()
    opt = build_optimizer(m, cfg.train, DEV)
    assert opt.param_groups[0]["fused"] is True
    train_step(m, opt, [b], StepSettings(autocast=bf16_ctx()))
    return "param_groups fused=True, step ran"


@check("flash attention (SDPA)")
def c_flash() -> str:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg, m, b = model_and_batch()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot run these inputs
        res = train_step(m, build_optimizer(m, cfg.train, DEV), [b], StepSettings(autocast=bf16_ctx()))
    return f"forced FLASH_ATTENTION backend, loss {res.loss:.4f}"


@check("flex attention (doc mask)")
def c_flex() -> str:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, H, T, D = 2, 4, 512, 64
    q, k, v = (torch.randn(B, H, T, D, device=DEV, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    doc = (torch.arange(T, device=DEV) // 100).expand(B, T)

    def mask_mod(b, h, qi, ki):
        return (qi >= ki) & (doc[b, qi] == doc[b, ki])

    bm = create_block_mask(mask_mod, B, None, T, T, device=DEV)
    out = torch.compile(flex_attention)(q, k, v, block_mask=bm)
    out.float().sum().backward()
    dense = (doc[:, :, None] == doc[:, None, :]) & torch.ones(T, T, dtype=torch.bool, device=DEV).tril()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense[:, None])
    err = (out - ref).abs().max().item()
    assert err < 2e-2, err
    return f"compiled flex vs SDPA+mask max err {err:.1e}, backward ok"


@check("torch.compile")
def c_compile() -> str:
    cfg, m, b = model_and_batch()
    with torch.no_grad():
        eager = m(b.input_ids.to(DEV))
    cm = torch.compile(m)
    t0 = time.time()
    res = train_step(cm, build_optimizer(m, cfg.train, DEV), [b], StepSettings(autocast=bf16_ctx()))
    with torch.no_grad():
        err = (torch.compile(m)(b.input_ids.to(DEV)) - eager).abs().max().item()
    return f"first step {time.time() - t0:.0f} s, loss {res.loss:.4f}, |compiled - eager| after 1 step {err:.1e}"


@check("grad checkpointing")
def c_ckpt() -> str:
    cfg, m, b = model_and_batch(B=16)
    opt = build_optimizer(m, cfg.train, DEV)
    peaks = []
    for on in (False, True):
        m.grad_checkpointing = on
        torch.cuda.reset_peak_memory_stats()
        train_step(m, opt, [b], StepSettings(autocast=bf16_ctx()))
        peaks.append(torch.cuda.max_memory_allocated() / 2**20)
    assert peaks[1] < peaks[0], peaks
    return f"peak memory {peaks[0]:.0f} -> {peaks[1]:.0f} MiB"


@check("trainer end to end")
def c_trainer() -> str:
    from lmforge.checkpoint import load_for_inference
    from lmforge.config import TokenizerConfig, TokensConfig
    from lmforge.data.document import Document, ShardWriter
    from lmforge.tokenizer import train_tokenizer
    from lmforge.tokens.stage import run_tokenize_stage
    from lmforge.train.build import train

    tmp = Path(tempfile.mkdtemp())
    try:
        g = torch.Generator().manual_seed(0)
        words = ["the", "king", "queen", "of", "and", "a", "river", "stone", "sings", "night"]
        docs = [" ".join(words[i] for i in torch.randint(0, 10, (200,), generator=g).tolist()) for _ in range(400)]
        with ShardWriter(tmp / "data", "clean") as w:
            for i, d in enumerate(docs):
                w.write(Document(f"d{i}", d))
        train_tokenizer(TokenizerConfig(kind="byte"), docs, tmp / "tokenizer")
        run_tokenize_stage(TokensConfig(val_fraction=0.1), tmp / "data", tmp / "tokenizer", tmp / "tokens",
                           progress=False)
        cfg = config_from_dict({"model": {"preset": "tiny", "block_size": 128},
                                "train": {"max_steps": 30, "batch_size": 8, "eval_every": 15, "ckpt_every": 15,
                                          "precision": "auto", "progress": False, "async_checkpoint": True},
                                "monitor": {"tensorboard": False, "plots": False}})
        s = train(cfg, tmp)
        s2 = train(config_from_dict({**{"model": {"preset": "tiny", "block_size": 128}},
                                     "train": {"max_steps": 40, "batch_size": 8, "progress": False},
                                     "monitor": {"tensorboard": False, "plots": False}}), tmp, resume="auto")
        model, _, info = load_for_inference(tmp, "latest", device="cuda")
        assert s["step"] == 30 and s2["step"] == 40 and info["step"] == 40
        return f"30 steps bf16 val {s['val_loss']:.3f}, resumed to 40, async ckpt, load_for_inference on cuda"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mfu_gpt2(steps: int, batch: int) -> None:
    try:
        cfg, m, _ = model_and_batch("gpt2-124m", vocab=50304, T=1024, B=batch)
        opt = build_optimizer(m, cfg.train, DEV)
        cm = torch.compile(m)
        s = StepSettings(autocast=bf16_ctx())
        g = torch.Generator().manual_seed(1)
        data = [torch.randint(0, 50304, (batch, 1025), generator=g) for _ in range(4)]
        batches = [Batch(x[:, :-1].pin_memory(), x[:, 1:].pin_memory(), None) for x in data]
        for i in range(3):  # compile + warm-up
            train_step(cm, opt, [batches[i % 4]], s)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            train_step(cm, opt, [batches[i % 4]], s)
        torch.cuda.synchronize()
        tps = steps * batch * 1024 / (time.perf_counter() - t0)
        peak = peak_flops(cfg.train, "bf16", DEV)
        mfu = m.flops_per_token(1024) * tps / peak if peak else float("nan")
        row("gpt2-124m T=1024 MFU", "ok", f"{torch.cuda.get_device_name()}: {tps:,.0f} tokens/s, MFU {mfu:.1%} "
            f"(bf16 peak {peak / 1e12:.0f} TFLOP/s; micro-batch {batch}, compile, flash)")
    except Exception as e:
        traceback.print_exc()
        row("gpt2-124m T=1024 MFU", "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"known peaks: {', '.join(GPU_PEAK_FLOPS)}", flush=True)
    for c in (c_bf16, c_fp16, c_fused, c_flash, c_flex, c_compile, c_ckpt, c_trainer):
        c()
        torch.cuda.empty_cache()
    mfu_gpt2(args.steps, args.batch)
    args.table.write_text("\n".join(ROWS) + "\n")
    raise SystemExit(1 if any(" FAIL " in r for r in ROWS) else 0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
