"""Generation speed: KV cache against no cache, and against `transformers` `generate`.

    python benchmarks/generate_kvcache.py [--new-tokens 512] [--batch 1] [--device cpu|cuda]

Timings are the best of `--repeats` runs. Same model (random weights, greedy decoding, no early
stop) and the same prompt for every variant, measured in this process:
1. lmforge with the KV cache vs lmforge recomputing the whole context each step (goal >= 5x);
2. lmforge with the cache vs the model exported to HF (`LlamaForCausalLM`) and decoded with
   `transformers` `generate(do_sample=False, use_cache=True)` (goal >= 1x; skipped without transformers).
The greedy outputs are compared too: all three must produce the same tokens.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models

from lmforge.config import ModelConfig
from lmforge.infer.generate import generate_tokens
from lmforge.model import GPT


def _timed(fn, device: str, repeats: int = 1) -> tuple[float, object]:
    """Best of `repeats` wall times (the least disturbed by other load on the machine)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def _tokenizer(vocab: int) -> SimpleNamespace:
    """A word-level HF tokenizer with `vocab` entries (only needed for the export)."""
    names = ["<pad>", "<unk>", "<bos>", "<eos>"] + [f"w{i}" for i in range(vocab - 4)]
    hf = Tokenizer(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    return SimpleNamespace(hf=hf, pad_id=0, unk_id=1, bos_id=2, eos_id=3, vocab_size=vocab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="best of N for the cached runs (default 3)")
    ap.add_argument("--skip-uncached", action="store_true", help="only compare against transformers")
    args = ap.parse_args()
    if args.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    block = args.prompt_tokens + args.new_tokens  # the whole run fits the context: no window slide
    cfg = ModelConfig(n_layer=args.layers, n_head=args.width // 64, n_embd=args.width, block_size=block,
                      vocab_size=args.vocab)
    model = GPT(cfg).to(args.device).eval()
    prompt = torch.randint(4, args.vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    prompts = [prompt] * args.batch
    n_tok = args.new_tokens * args.batch
    print(f"model: {model.num_params() / 1e6:.2f}M params ({args.layers} layers x {args.width}), device "
          f"{args.device}, threads {torch.get_num_threads()}, batch {args.batch}, prompt {args.prompt_tokens} "
          f"tokens, {args.new_tokens} new tokens, greedy")

    def ours(cache: bool):
        return generate_tokens(model, prompts, max_new_tokens=args.new_tokens, temperature=0.0, use_cache=cache)

    ours(True)  # warm-up (allocator, kernels)
    t_cache, out_cache = _timed(lambda: ours(True), args.device, args.repeats)
    print(f"lmforge, KV cache      : {n_tok / t_cache:10.1f} tokens/s ({t_cache:.2f} s)")
    if not args.skip_uncached:
        t_plain, out_plain = _timed(lambda: ours(False), args.device)
        print(f"lmforge, no cache      : {n_tok / t_plain:10.1f} tokens/s ({t_plain:.2f} s)")
        same = out_plain == out_cache
        print(f"  KV cache speed-up    : {t_plain / t_cache:10.2f}x (goal >= 5x); same tokens: {same}")
    try:
        import transformers
    except ImportError:
        print("transformers not installed: skipping the comparison (pip install transformers)")
        return
    from lmforge.export.hf import export_model

    with tempfile.TemporaryDirectory() as tmp:
        export_model(model.cpu(), _tokenizer(args.vocab), Path(tmp) / "hf")
        model.to(args.device)
        hf = transformers.AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=torch.float32)
    hf = hf.to(args.device).eval()
    ids = torch.tensor(prompts, device=args.device)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, use_cache=True,
              eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(ids))

    def theirs():
        with torch.inference_mode():
            return hf.generate(ids, **kw)[:, args.prompt_tokens:].tolist()

    theirs()
    t_hf, out_hf = _timed(theirs, args.device, args.repeats)
    t_cache, _ = _timed(lambda: ours(True), args.device, args.repeats)  # again, right after: same load
    print(f"transformers generate  : {n_tok / t_hf:10.1f} tokens/s ({t_hf:.2f} s)")
    print(f"lmforge, KV cache (again): {n_tok / t_cache:8.1f} tokens/s ({t_cache:.2f} s)")
    print(f"  lmforge vs transformers: {t_hf / t_cache:8.2f}x (goal >= 1x); same tokens: {out_hf == out_cache}")


if __name__ == "__main__":
    main()
