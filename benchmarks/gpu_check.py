"""Single-process GPU checks of the training engine (called by gpu_check.sh).

Each check prints one row: name, ok/FAIL/no CUDA, detail. The last rows are gpt2-124m at context
1024 with packed documents (bf16 + torch.compile + FlexAttention document masks): tokens/s and MFU
against the GPU's dense bf16 peak, and an lmforge model of Llama's architecture against Hugging Face
`LlamaForCausalLM` (attn_implementation="sdpa") of the same shape, timed in this process. Without
CUDA every row says "no CUDA" and the script exits 0.
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
NAMES = ["bf16 autocast", "fp16 + GradScaler", "fused AdamW", "flash attention (SDPA)", "flex attention (doc mask)",
         "torch.compile", "grad checkpointing", "muon step", "chunked loss peak memory", "trainer end to end",
         "gpt2-124m T=1024 MFU", "vs HF Llama (sdpa)"]


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
    """The model's `auto` path on CUDA (compiled FlexAttention, block mask from doc ids) against
    the dense-mask reference: loss and gradients of one packed batch."""
    from lmforge.model.attention import resolve_kind

    assert resolve_kind("auto", True, DEV) == "flex"
    out = []
    for attention in ("auto", "dense"):
        cfg, m, b = model_and_batch(T=512, attention=attention)
        doc = (torch.arange(512) // 100).expand(b.input_ids.size(0), 512).contiguous()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(b.input_ids.to(DEV), doc_ids=doc.to(DEV))
        loss = F.cross_entropy(logits.float().flatten(0, 1), b.targets.flatten().to(DEV))
        loss.backward()
        out.append((loss.item(), m.blocks[0].attn.c_attn.weight.grad.float()))
    err = (out[0][1] - out[1][1]).abs().max().item() / out[1][1].abs().max().item()
    assert abs(out[0][0] - out[1][0]) < 2e-2 and err < 5e-2, (out[0][0], out[1][0], err)
    return f"model flex vs dense mask: loss {out[0][0]:.4f} vs {out[1][0]:.4f}, grad rel err {err:.1e}"


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


@check("muon step")
def c_muon() -> str:
    cfg = config_from_dict({"model": {"preset": "small", "vocab_size": 8192, "block_size": 256},
                            "train": {"optimizer": "muon"}})
    torch.manual_seed(0)
    m = GPT(cfg.model).to(DEV)
    opt = build_optimizer(m, cfg.train, DEV)
    x = torch.randint(0, 8192, (8, 257), generator=torch.Generator().manual_seed(0))
    b = Batch(x[:, :-1], x[:, 1:], None)
    losses = [train_step(m, opt, [b], StepSettings(autocast=bf16_ctx())).loss for _ in range(5)]
    assert losses[-1] < losses[0], losses
    return f"5 steps on one batch (bf16 Newton-Schulz): loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@check("chunked loss peak memory")
def c_chunked() -> str:
    peaks, losses = [], []
    for rows in (0, 4096):
        cfg, m, b = model_and_batch("gpt2-124m", vocab=50304, T=1024, B=8)
        opt = build_optimizer(m, cfg.train, DEV)
        s = StepSettings(autocast=bf16_ctx(), loss_chunk_rows=rows)
        train_step(m, opt, [b], s)  # optimiser state allocated
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        losses.append(train_step(m, opt, [b], s).loss)
        peaks.append(torch.cuda.max_memory_allocated() / 2**20)
        del m, opt
        torch.cuda.empty_cache()
    assert peaks[1] < peaks[0] and abs(losses[0] - losses[1]) < 1e-2, (peaks, losses)
    return (f"gpt2-124m 8x1024 bf16 step: full logits {peaks[0]:,.0f} MiB, chunked (4096 rows) {peaks[1]:,.0f} MiB "
            f"({peaks[0] / peaks[1]:.2f}x)")


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


def packed_batches(vocab: int, batch: int, T: int, n: int, seed: int = 1) -> list[Batch]:
    """Rows of packed documents (lengths 50..800, as a web corpus packs), pinned for async copies."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, vocab, (batch, T + 1), generator=g)
        lengths = torch.randint(50, 800, (batch * T // 50,), generator=g)
        doc = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)[:batch * T].view(batch, T)
        out.append(Batch(x[:, :-1].pin_memory(), x[:, 1:].pin_memory(), doc.contiguous().pin_memory()))
    return out


def time_steps(step: Callable[[Batch], None], batches: list[Batch], steps: int) -> float:
    for i in range(3):  # compile + warm-up
        step(batches[i % len(batches)])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def lmforge_tps(model_over: dict, steps: int, batch: int, T: int = 1024) -> tuple[float, float, GPT]:
    """(tokens/s, model FLOPs per token) of compiled bf16 training steps on packed documents."""
    cfg = config_from_dict({"model": {"vocab_size": 50304, "block_size": T, **model_over}})
    torch.manual_seed(0)
    m = GPT(cfg.model).to(DEV)
    opt = build_optimizer(m, cfg.train, DEV)
    cm, s = torch.compile(m), StepSettings(autocast=bf16_ctx())
    dt = time_steps(lambda b: train_step(cm, opt, [b], s), packed_batches(50304, batch, T, 4), steps)
    return steps * batch * T / dt, m.flops_per_token(T), m


def mfu_gpt2(steps: int, batch: int) -> None:
    try:
        tps, fpt, _ = lmforge_tps({"preset": "gpt2-124m"}, steps, batch)
        peak = peak_flops(config_from_dict({}).train, "bf16", DEV)
        mfu = fpt * tps / peak if peak else float("nan")
        row("gpt2-124m T=1024 MFU", "ok", f"{torch.cuda.get_device_name()}: {tps:,.0f} tokens/s, MFU {mfu:.1%} "
            f"(bf16 peak {peak / 1e12:.0f} TFLOP/s; micro-batch {batch}, packed docs 50-800 tokens, compile, "
            f"FlexAttention; FLOPs count full causal attention, as nanoGPT's MFU)")
    except Exception as e:
        traceback.print_exc()
        row("gpt2-124m T=1024 MFU", "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")


def vs_hf_llama(steps: int, batch: int) -> None:
    """lmforge with Llama's architecture (RoPE, RMSNorm, SwiGLU, untied) against LlamaForCausalLM of the
    same shape (attn_implementation="sdpa", bf16 autocast, fused AdamW, eager: what HF users run), at
    768 wide, 12 layers, 12 heads, context 1024. lmforge attends within documents; HF over the row."""
    name = "vs HF Llama (sdpa)"
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        row(name, "skip", "transformers is not installed (pip install 'lmforge[test]')")
        return
    try:
        shape = dict(n_layer=12, n_head=12, n_embd=768, mlp="swiglu", norm="rmsnorm", pos_emb="rope",
                     tie_embeddings=False, bias=False)
        ours, _, m = lmforge_tps(shape, steps, batch)
        hcfg = LlamaConfig(vocab_size=50304, hidden_size=768, intermediate_size=m.blocks[0].mlp.c_proj.in_features,
                           num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                           max_position_embeddings=1024, tie_word_embeddings=False, attn_implementation="sdpa")
        del m
        torch.manual_seed(0)
        hf = LlamaForCausalLM(hcfg).to(DEV)
        opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)

        def hf_step(b: Batch) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = hf(input_ids=b.input_ids.to(DEV, non_blocking=True),
                         labels=b.input_ids.to(DEV, non_blocking=True))  # HF shifts the labels itself
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        dt = time_steps(hf_step, packed_batches(50304, batch, 1024, 4), steps)
        theirs = steps * batch * 1024 / dt
        row(name, "ok", f"lmforge {ours:,.0f} vs HF {theirs:,.0f} tokens/s: {ours / theirs:.2f}x "
            f"(Llama shape 768x12, T=1024, micro-batch {batch}; lmforge compiled, HF eager)")
    except Exception as e:
        traceback.print_exc()
        row(name, "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:100]}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    if not torch.cuda.is_available():
        for name in NAMES:
            row(name, "no CUDA", "torch.cuda.is_available() is False: not measured")
        args.table.write_text("\n".join(ROWS) + "\n")
        return
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"known peaks: {', '.join(GPU_PEAK_FLOPS)}", flush=True)
    for c in (c_bf16, c_fp16, c_fused, c_flash, c_flex, c_compile, c_ckpt, c_muon, c_chunked, c_trainer):
        c()
        torch.cuda.empty_cache()
    mfu_gpt2(args.steps, args.batch)
    torch.cuda.empty_cache()
    vs_hf_llama(args.steps, args.batch)
    args.table.write_text("\n".join(ROWS) + "\n")
    raise SystemExit(1 if any(" FAIL " in r for r in ROWS) else 0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
