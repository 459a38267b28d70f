"""generate(): KV cache equivalence, batching, sliding window, eos and stop strings."""

from __future__ import annotations

import torch
from lmf_evalkit import ScriptedModel, tiny_model

from lmforge.infer.generate import generate, generate_tokens


def test_cached_equals_uncached_greedy_past_block_size(tokenizer):
    model = tiny_model(tokenizer.vocab_size, block_size=16)
    prompts = [tokenizer.encode("The king is dead."), tokenizer.encode("Now"), tokenizer.encode("And")]
    # 40 new tokens with a 16-token context: the window slides (re-prefill) several times
    cached = generate_tokens(model, prompts, max_new_tokens=40, temperature=0.0)
    plain = generate_tokens(model, prompts, max_new_tokens=40, temperature=0.0, use_cache=False)
    assert cached == plain
    assert all(len(c) == 40 for c in cached)
    assert len(set(map(tuple, cached))) > 1  # not a degenerate constant


def test_cached_equals_uncached_sampling_with_filters(tokenizer):
    model = tiny_model(tokenizer.vocab_size, block_size=16, pos_emb="learned", norm="layernorm", mlp="gelu")
    kw = dict(max_new_tokens=30, temperature=0.9, top_k=50, top_p=0.95, min_p=0.01, repetition_penalty=1.2, seed=5)
    prompts = [tokenizer.encode("The queen"), tokenizer.encode("The fool")]
    assert generate_tokens(model, prompts, **kw) == generate_tokens(model, prompts, use_cache=False, **kw)


def test_cache_prefill_matches_full_forward(tokenizer):
    """The first cached step sees exactly the logits of an uncached forward over the prompt."""
    model = tiny_model(tokenizer.vocab_size)
    ids = torch.tensor([tokenizer.encode("The king is dead. Long live")])
    full = model(ids)
    cache = model.new_kv_cache(1)
    pre = model(ids[:, :-3], kv_cache=cache)
    steps = [model(ids[:, t:t + 1], kv_cache=cache) for t in range(ids.size(1) - 3, ids.size(1))]
    inc = torch.cat([pre, *steps], dim=1)
    assert torch.allclose(full, inc, atol=1e-5)


def test_batched_equals_one_by_one(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    prompts = ["The king", "Now is the", "The queen", "A"]
    together = generate(model, tokenizer, prompts, max_new_tokens=12, temperature=0.0)
    alone = [generate(model, tokenizer, [p], max_new_tokens=12, temperature=0.0)[0] for p in prompts]
    assert together == alone


def test_stops_at_eos_and_excludes_it(tokenizer):
    a, b = tokenizer.encode("The")[0], tokenizer.encode(" king")[0]
    eos = tokenizer.eos_id
    model = ScriptedModel(tokenizer.vocab_size, script=[b, b, eos, a, a])  # prompt [a] -> b b <eos> ...
    assert generate_tokens(model, [[a]], max_new_tokens=10, temperature=0.0, eos_id=eos) == [[b, b]]
    assert generate(model, tokenizer, "The", max_new_tokens=10, temperature=0.0) == [" king king"]
    # without an eos id it runs to max_new_tokens
    assert len(generate_tokens(model, [[a]], max_new_tokens=10, temperature=0.0)[0]) == 10


def test_stop_strings_cut_before_match(tokenizer):
    prompt = tokenizer.encode("The")
    cont = tokenizer.encode(" king is dead. Long live the king!")
    model = ScriptedModel(tokenizer.vocab_size, script=prompt[1:] + cont, block_size=128)
    out = generate(model, tokenizer, "The", max_new_tokens=40, temperature=0.0, stop=["Long", "queen"])
    assert out == [" king is dead. "]
    assert model.calls <= len(tokenizer.encode(" king is dead. Long")) + 1  # stopped early
    full = generate(model, tokenizer, "The", max_new_tokens=len(cont), temperature=0.0)
    assert full == [" king is dead. Long live the king!"]


def test_empty_prompt_and_zero_tokens(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    out = generate(model, tokenizer, ["", "The"], max_new_tokens=5, temperature=0.0)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert generate(model, tokenizer, ["The"], max_new_tokens=0) == [""]


def test_prompt_longer_than_context_is_cropped(tokenizer):
    model = tiny_model(tokenizer.vocab_size, block_size=8)
    long_prompt = tokenizer.encode(" ".join(["king queen fool"] * 10))
    assert len(long_prompt) > 8
    cached = generate_tokens(model, [long_prompt], max_new_tokens=6, temperature=0.0)
    # only the last 8 tokens matter for the first step
    cropped = generate_tokens(model, [long_prompt[-8:]], max_new_tokens=1, temperature=0.0)
    assert cached[0][0] == cropped[0][0]
    assert cached == generate_tokens(model, [long_prompt], max_new_tokens=6, temperature=0.0, use_cache=False)


def test_model_training_mode_restored(tokenizer):
    model = tiny_model(tokenizer.vocab_size).train()
    generate(model, tokenizer, "The", max_new_tokens=2, temperature=0.0)
    assert model.training
