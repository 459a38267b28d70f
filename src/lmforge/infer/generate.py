"""Text generation with a KV cache, batched prompts and Hugging Face sampling semantics.

    texts = generate(model, tokenizer, ["Once upon", "The"], max_new_tokens=100, temperature=0.8, top_p=0.95)

* Returns the continuations only (not the prompts), in the order of `prompts`.
* Batching: prompts are grouped by token length and each group decodes as one batch with one KV
  cache. Equal lengths need no padding, so positions and the causal mask stay exact (our model has
  no attention-mask input for left padding); distinct lengths run one after the other.
* Filters, in HF order: repetition penalty -> temperature -> top-k -> top-p -> min-p
  (see `lmforge.infer.sampling`). temperature == 0 is greedy (argmax after the penalty).
* Stops at `<eos>` (not included) or at the first stop string (cut before it, not included).
* Context window: the model sees at most `block_size` tokens. When the context would overflow, it
  slides: the newest `3/4 * block_size` tokens are kept and (with the cache) re-prefilled, then
  decoding continues one token per step. The uncached path follows the same window schedule, so
  cached and uncached decoding compute the same logits at every step.
"""

from __future__ import annotations

import torch

from lmforge.infer.sampling import check_sampling_args, filter_logits


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    start = getattr(tokenizer, "bos_id", None)
    if start is None:
        start = tokenizer.eos_id
    out = []
    for p in prompts:
        ids = list(tokenizer.encode(p)) if p else []
        out.append(ids or [start])  # an empty prompt starts from <bos> (or <eos>)
    return out


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _Window:
    """The sliding-window schedule shared by the cached and uncached paths."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.keep = max(1, (3 * block_size) // 4)
        self.start = -1  # -1: nothing prefilled yet

    def advance(self, length: int) -> bool:
        """Update the context start for a sequence of `length` tokens; True when it moved
        (the cache must be re-prefilled)."""
        if self.start < 0:
            self.start = max(0, length - self.block_size)
            return True
        if length - self.start > self.block_size:
            self.start = length - self.keep
            return True
        return False


@torch.inference_mode()
def _decode_group(model, ids: torch.Tensor, *, max_new_tokens: int, eos_id: int | None, gen, use_cache: bool,
                  filters: dict, greedy: bool, stop_check) -> list[list[int]]:
    B = ids.size(0)
    seen = None  # (B, V) tokens present so far, only for the repetition penalty
    if filters["repetition_penalty"] != 1.0:
        seen = torch.zeros(B, model.cfg.vocab_size, dtype=torch.bool, device=ids.device).scatter_(1, ids, True)
    done = [False] * B  # a Python list: indexing a device tensor would sync once per sequence
    out: list[list[int]] = [[] for _ in range(B)]
    window, cache = _Window(model.cfg.block_size), None
    tokens = ids
    for _ in range(max_new_tokens):
        moved = window.advance(tokens.size(1))
        if not use_cache:
            logits = model(tokens[:, window.start:])[:, -1]
        elif moved:
            cache = model.new_kv_cache(B, model.cfg.block_size)
            logits = model(tokens[:, window.start:], kv_cache=cache)[:, -1]
        else:
            logits = model(tokens[:, -1:], kv_cache=cache)[:, -1]
        logits = filter_logits(logits, seen, **filters)
        if greedy:
            nxt = logits.argmax(dim=-1)
        else:
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=gen).squeeze(1)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if seen is not None:
            seen.scatter_(1, nxt[:, None], True)
        for b, t in enumerate(nxt.tolist()):
            if done[b]:
                continue
            if t == eos_id:
                done[b] = True
                continue
            out[b].append(t)
            if stop_check(out[b]):
                done[b] = True
        if all(done):
            break
    return out


def generate_tokens(model, prompt_ids: list[list[int]], *, max_new_tokens: int, eos_id: int | None = None,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                    repetition_penalty: float = 1.0, seed: int | None = None, use_cache: bool = True,
                    stop_check=None) -> list[list[int]]:
    """Token-level generation: new token ids per prompt (without the eos). `eos_id=None` never stops
    early (benchmarks); `stop_check(ids) -> bool` ends a sequence when it returns True."""
    check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty)
    if max_new_tokens <= 0 or not prompt_ids:
        return [[] for _ in prompt_ids]
    device = next(model.parameters()).device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    filters = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                   repetition_penalty=repetition_penalty)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {i} has no tokens")
        groups.setdefault(len(ids), []).append(i)
    results: list[list[int]] = [[] for _ in prompt_ids]
    was_training = model.training
    model.eval()
    try:
        for length in sorted(groups):
            members = groups[length]
            ids = torch.tensor([prompt_ids[i] for i in members], dtype=torch.long, device=device)
            outs = _decode_group(model, ids, max_new_tokens=max_new_tokens, eos_id=eos_id, gen=gen,
                                 use_cache=use_cache, filters=filters, greedy=temperature == 0.0,
                                 stop_check=stop_check or (lambda _ids: False))
            for i, toks in zip(members, outs):
                results[i] = toks
    finally:
        model.train(was_training)
    return results


def generate(model, tokenizer, prompts: list[str] | str, *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
             seed: int | None = None, stop: list[str] | str | None = None, use_cache: bool = True) -> list[str]:
    """Continue each prompt by up to `max_new_tokens` tokens; returns the continuations.

    `seed` makes sampling reproducible (a private torch.Generator; the global RNG is untouched).
    `stop`: strings that end a continuation (cut before the first match)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    stop = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
    tail = 4 * max((len(s) for s in stop), default=0) + 4  # tokens that can hold a stop string

    def stop_check(ids: list[int]) -> bool:
        return bool(stop) and _cut_at_stop(tokenizer.decode(ids[-tail:]), stop)[1]

    outs = generate_tokens(model, encode_prompts(tokenizer, prompts), max_new_tokens=max_new_tokens,
                           eos_id=tokenizer.eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
                           min_p=min_p, repetition_penalty=repetition_penalty, seed=seed, use_cache=use_cache,
                           stop_check=stop_check)
    return [_cut_at_stop(tokenizer.decode(toks), stop)[0] for toks in outs]
