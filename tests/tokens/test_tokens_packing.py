"""Best-fit packing, packing reports, and token-budget dynamic batching."""

import numpy as np
import pytest
import torch

from lmforge.tokens.batching import TokenBudgetLoader
from lmforge.tokens.loader import TokenLoader
from lmforge.tokens.packing import PACKERS, BestFitPacker, ConcatPacker
from lmforge.tokens.shards import open_split, write_tokens_dir


@pytest.fixture()
def ds(tmp_path):
    """Documents of assorted lengths (some longer than a window); token values encode (doc, offset)."""
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(1, 30, size=60)] + [45, 70, 33, 1, 2]
    docs = [1000 * d + np.arange(n) for d, n in enumerate(lengths)]
    write_tokens_dir(tmp_path, {"train": docs, "val": docs[:2]}, vocab_size=100_000, shard_tokens=200)
    return open_split(tmp_path, "train")


def _decode(tok):  # token value -> (doc, offset)
    return int(tok) // 1000, int(tok) % 1000


def test_best_fit_never_splits_short_documents(ds):
    T = 32
    pk = BestFitPacker(ds, T)
    lengths = np.diff(ds.doc_starts)
    seen: dict[int, list[int]] = {}
    for i in range(pk.num_windows):
        toks, docs, valid = pk.window(i)
        k = int(valid.sum())
        assert len(toks) == T + 1 and valid[:k].all() and not valid[k:].any()  # padding only at the end
        assert np.all(docs[~valid] == -1) and np.all(toks[~valid] == 0)
        for t, d in zip(toks[valid], docs[valid]):
            dd, off = _decode(t)
            assert dd == d
            seen.setdefault(dd, []).append(off)
        for d in set(docs[valid].tolist()):  # each document's tokens in a window are contiguous, in order
            offs = [_decode(t)[1] for t, x in zip(toks, docs) if x == d]
            assert offs == list(range(offs[0], offs[0] + len(offs)))
    for d, n in enumerate(lengths):
        if n <= T + 1:
            assert seen[d] == list(range(n))  # whole, in order, exactly once
        else:  # long documents: pieces overlap by one token, every token present
            assert set(seen[d]) == set(range(n))
    stats = pk.stats()
    assert stats["docs_split"] == sum(n > T + 1 for n in lengths) == 2
    used = sum(len(v) for v in seen.values())
    assert stats["padding_rate"] == pytest.approx(1 - used / (pk.num_windows * (T + 1)))


def test_packing_report_compares_both(ds):
    rep = {name: cls(ds, 32).stats() for name, cls in PACKERS.items()}
    assert rep["concat"]["padding_rate"] == 0.0
    assert rep["best_fit"]["split_rate"] < rep["concat"]["split_rate"]
    # concat: check the split count against a direct count of documents crossing a window edge
    starts = ds.doc_starts
    direct = sum(any(s < e <= t - 1 for e in range(32, ds.num_tokens + 32, 32))
                 for s, t in zip(starts[:-1], starts[1:]))
    assert rep["concat"]["docs_split"] == direct
    assert ConcatPacker(ds, 32).stats()["dropped_tokens"] == ds.num_tokens - (ds.num_tokens - 1) // 32 * 32 - 1


def test_best_fit_loader_masks_padding_and_matches_model(ds):
    from lmforge.config import ModelConfig
    from lmforge.model import GPT

    T = 32
    loader = TokenLoader(ds, seq_len=T, batch_size=4, seed=0, packing="best_fit")
    b = next(loader)
    pad_in = b.doc_ids == -1
    assert torch.all(b.targets[pad_in] == -100)
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=T, vocab_size=100_000)).eval()
    with torch.no_grad():
        packed = model(b.input_ids, doc_ids=b.doc_ids)
        row = 0
        for d in torch.unique(b.doc_ids[row]).tolist():
            if d < 0:
                continue
            cols = (b.doc_ids[row] == d).nonzero().flatten()
            alone = model(b.input_ids[row, cols][None])[0]
            torch.testing.assert_close(packed[row, cols], alone, rtol=0, atol=1e-5)
    # resume works the same for best_fit
    state = loader.state_dict()
    nxt = next(loader)
    again = TokenLoader(ds, seq_len=T, batch_size=4, seed=0, packing="best_fit")
    again.load_state_dict(state)
    assert torch.equal(next(again).input_ids, nxt.input_ids)


@pytest.mark.parametrize("world_size", [1, 2])
def test_token_budget_batches(ds, world_size):
    loaders = [TokenBudgetLoader(ds, max_tokens=96, max_len=24, seed=3, rank=r, world_size=world_size,
                                 infinite=False) for r in range(world_size)]
    rows = []
    counts = []
    for ld in loaders:
        n = 0
        for b in ld:
            n += 1
            B, L = b.input_ids.shape
            assert B * L <= 96 and L <= 24 and b.doc_ids is None
            for i in range(B):
                real = b.targets[i] != -100
                k = int(real.sum())
                assert torch.all(real[:k]) and not real[k:].any()  # right padding only
                assert torch.all(b.input_ids[i, k:] == 0)
                seq = b.input_ids[i, :k].tolist() + [b.targets[i, k - 1].item()]
                rows.append(tuple(seq))
                assert b.targets[i, :k].tolist() == seq[1:]
        counts.append(n)
    assert len(set(counts)) == 1  # every rank takes the same number of steps
    # rows are whole documents (or 25-token pieces of longer ones), none twice
    assert len(rows) == len(set(rows))
    if world_size == 1:  # one epoch, nothing dropped: every piece of >= 2 tokens exactly once
        expected = set()
        for d, n in enumerate(np.diff(ds.doc_starts).tolist()):
            k = 0
            while True:
                piece = tuple(1000 * d + np.arange(k * 24, min(k * 24 + 25, n)))
                if len(piece) >= 2:
                    expected.add(piece)
                if k * 24 + 25 >= n:
                    break
                k += 1
        assert set(rows) == expected


def test_token_budget_resume(ds):
    kw = dict(max_tokens=80, max_len=20, seed=9)
    ref = TokenBudgetLoader(ds, **kw)
    batches = [next(ref) for _ in range(50)]  # several epochs
    a = TokenBudgetLoader(ds, **kw)
    for _ in range(17):
        next(a)
    b = TokenBudgetLoader(ds, **kw)
    b.load_state_dict(a.state_dict())
    for j in range(17, 50):
        assert torch.equal(next(b).input_ids, batches[j].input_ids)
    assert ref.epoch > 1


def test_build_loader_follows_tokens_packing(ds):
    from lmforge.config import TokensConfig
    from lmforge.errors import ConfigError
    from lmforge.tokens.loader import build_loader

    kw = dict(seq_len=16, batch_size=4, seed=0)
    budget = build_loader(ds, TokensConfig(packing="budget"), **kw)
    assert isinstance(budget, TokenBudgetLoader) and budget.max_tokens == 64
    assert budget.tokens_per_epoch == sum(int(n) - 1 for n in budget.p_len)
    best = build_loader(ds, TokensConfig(packing="best_fit", prefetch=0), **kw)
    assert isinstance(best.packer, BestFitPacker)
    assert isinstance(build_loader(ds, TokensConfig(), **kw).packer, ConcatPacker)
    with pytest.raises(ConfigError, match="tokens.packing"):
        TokensConfig(packing="zigzag")
