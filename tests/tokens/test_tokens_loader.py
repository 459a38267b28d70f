"""TokenLoader: packing, document ids, rank coverage, exact resume, eval pass, model equivalence."""

import numpy as np
import pytest
import torch

from lmforge.errors import DataError, LmforgeError
from lmforge.tokens.loader import TokenLoader
from lmforge.tokens.shards import open_split, write_tokens_dir


def _stream_dataset(tmp_path, n_tokens=1001, doc_len=37, shard_tokens=300):
    """Token i has value i (uint32 vocab), documents of doc_len tokens, several shards."""
    toks = np.arange(n_tokens)
    docs = [toks[i:i + doc_len] for i in range(0, n_tokens, doc_len)]
    write_tokens_dir(tmp_path, {"train": docs, "val": docs[:3]}, vocab_size=100_000, shard_tokens=shard_tokens)
    return open_split(tmp_path, "train")


def test_concat_windows_shift_and_doc_ids(tmp_path):
    ds = _stream_dataset(tmp_path)
    assert len(ds.shard_names) > 2 and ds.num_tokens == 1001
    T = 16
    loader = TokenLoader(ds, seq_len=T, batch_size=4, seed=0, shuffle=False)
    assert loader.num_windows == 1000 // T and loader.tokens_per_epoch == (1000 // T) * T
    b = next(loader)
    for row in range(4):
        start = row * T
        assert b.input_ids[row].tolist() == list(range(start, start + T))
        assert b.targets[row].tolist() == list(range(start + 1, start + T + 1))
        assert b.doc_ids[row].tolist() == [(start + t) // 37 for t in range(T)]
    assert b.input_ids.dtype == torch.long and b.targets.dtype == torch.long
    assert TokenLoader(ds, seq_len=T, batch_size=4, seed=0, doc_masks=False).__next__().doc_ids is None


def _windows_seen(ds, T, B, W, steps, seed=3):
    """Window index (first token / T) of every row each rank sees, per step."""
    seen = []
    loaders = [TokenLoader(ds, seq_len=T, batch_size=B, seed=seed, rank=r, world_size=W) for r in range(W)]
    for _ in range(steps):
        rows = []
        for ld in loaders:
            b = next(ld)
            assert b.input_ids.shape == (B, T)
            rows.append([int(x) // T for x in b.input_ids[:, 0]])
        seen.append(rows)
    return seen


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_are_disjoint_and_cover_each_epoch_exactly_once(tmp_path, world_size):
    ds = _stream_dataset(tmp_path, n_tokens=20 * 10 + 1)
    T, B = 10, 3  # 20 windows; 20 is not a multiple of B * W for W = 2, 3
    n = 20
    steps = 2 * n  # global stream items: 2n*B*W = B*W*2 epochs... consume several epochs
    seen = _windows_seen(ds, T, B, world_size, steps)
    # rank r's row b of step s is stream item (s*B + b)*W + r; rebuild the global stream order
    stream = [seen[s][r][b] for s in range(steps) for b in range(B) for r in range(world_size)]
    for e in range(len(stream) // n):
        epoch = stream[e * n:(e + 1) * n]
        assert sorted(epoch) == list(range(n)), f"epoch {e} does not cover every window once"
    assert stream[:n] != list(range(n))  # shuffled
    assert stream[:n] != stream[n:2 * n]  # a new permutation per epoch


def test_resume_gives_the_same_batches(tmp_path):
    ds = _stream_dataset(tmp_path)
    kw = dict(seq_len=8, batch_size=5, seed=11, rank=1, world_size=2)
    ref = TokenLoader(ds, **kw)
    batches = [next(ref) for _ in range(60)]  # > 4 epochs of 62 windows / 10 per step
    for k in (0, 1, 6, 7, 33):
        a = TokenLoader(ds, **kw)
        for _ in range(k):
            next(a)
        state = a.state_dict()
        b = TokenLoader(ds, **{**kw, "seed": 11}, prefetch=3)  # a prefetching loader resumes identically
        b.load_state_dict(state)
        for j in range(k, k + 10):
            got = next(b)
            assert torch.equal(got.input_ids, batches[j].input_ids) and torch.equal(got.doc_ids, batches[j].doc_ids)
        b.close()
    assert ref.epoch == pytest.approx(60 * 10 / ref.num_windows)


def test_state_after_prefetch_counts_only_consumed_batches(tmp_path):
    ds = _stream_dataset(tmp_path)
    a = TokenLoader(ds, seq_len=8, batch_size=2, seed=1, prefetch=4)
    first = [next(a) for _ in range(3)]
    state = a.state_dict()
    assert state["step"] == 3
    nxt = next(a)
    b = TokenLoader(ds, seq_len=8, batch_size=2, seed=1)
    b.load_state_dict(state)
    assert torch.equal(next(b).input_ids, nxt.input_ids)
    assert a.wait_time > 0 and len(first) == 3
    a.close()


def test_resume_with_another_world_size_when_divisible(tmp_path):
    ds = _stream_dataset(tmp_path)
    one = TokenLoader(ds, seq_len=8, batch_size=4, seed=5)
    for _ in range(3):
        next(one)
    two = [TokenLoader(ds, seq_len=8, batch_size=2, seed=5, rank=r, world_size=2) for r in range(2)]
    for ld in two:
        ld.load_state_dict(one.state_dict())
    ref = next(one).input_ids  # rows are stream items 12..15; world size 2 interleaves them by rank
    per_rank = [next(ld).input_ids for ld in two]
    got = torch.stack([per_rank[r][b] for b in range(2) for r in range(2)])
    assert torch.equal(got, ref)
    bad = TokenLoader(ds, seq_len=8, batch_size=5, seed=5)
    with pytest.raises(LmforgeError, match="not a multiple"):
        bad.load_state_dict(one.state_dict())
    with pytest.raises(LmforgeError, match="seq_len"):
        TokenLoader(ds, seq_len=9, batch_size=4, seed=5).load_state_dict(one.state_dict())


def test_eval_pass_covers_every_token_once_and_restarts(tmp_path):
    ds = _stream_dataset(tmp_path, n_tokens=1001)
    T = 64
    for W in (1, 2):
        targets = []
        for r in range(W):
            ev = TokenLoader.for_eval(ds, seq_len=T, batch_size=3, rank=r, world_size=W)
            passes = [[b for b in ev], [b for b in ev]]
            assert all(torch.equal(x.targets, y.targets) for x, y in zip(*passes)) and len(passes[0]) == len(ev)
            for b in passes[0]:
                assert torch.all(b.doc_ids[b.targets == -100][1:] == -1)
                targets += b.targets[b.targets != -100].tolist()
        assert sorted(targets) == list(range(1, 1001))  # every token after the first is a target once


def test_too_few_tokens_for_one_sequence(tmp_path):
    write_tokens_dir(tmp_path, {"train": [[5, 6, 7]], "val": [[1, 2]]}, vocab_size=300)
    ds = open_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"train-00000.*fewer than one training sequence.*block_size"):
        TokenLoader(ds, seq_len=8, batch_size=1, seed=0)
    assert len(list(TokenLoader.for_eval(ds, seq_len=8, batch_size=1))) == 1  # evaluation still works


def test_transient_read_errors_are_retried_then_named(tmp_path, monkeypatch):
    ds = _stream_dataset(tmp_path)
    loader = TokenLoader(ds, seq_len=8, batch_size=2, seed=0, retry_backoff=0.001, read_retries=2)
    real, fails = ds.read, {"n": 2}

    def flaky(start, end):
        if fails["n"] > 0:
            fails["n"] -= 1
            raise OSError("EIO")
        return real(start, end)

    monkeypatch.setattr(ds, "read", flaky)
    expect = TokenLoader(ds, seq_len=8, batch_size=2, seed=0)
    monkeypatch.setattr(ds, "read", flaky)
    assert torch.equal(next(loader).input_ids, expect.make_batch(0).input_ids)
    monkeypatch.setattr(ds, "read", lambda s, e: (_ for _ in ()).throw(OSError("EIO")))
    with pytest.raises(DataError, match=r"train-0000\d.*after 2 retries"):
        next(loader)


def test_doc_logits_in_packed_sequence_equal_doc_alone(tmp_path):
    from lmforge.config import ModelConfig
    from lmforge.model import GPT

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = [5, 17, 9, 30, 3, 12]
    docs = [rng.integers(4, 100, size=n) for n in lengths]
    write_tokens_dir(tmp_path, {"train": docs, "val": docs[:1]}, vocab_size=100)
    ds = open_split(tmp_path, "train")
    T = sum(lengths) - 1
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=T, vocab_size=100)).eval()
    b = next(TokenLoader(ds, seq_len=T, batch_size=1, seed=0, shuffle=False))
    with torch.no_grad():
        packed = model(b.input_ids, doc_ids=b.doc_ids)[0]
        starts = np.cumsum([0] + lengths)
        for i, d in enumerate(docs):
            a, e = starts[i], min(starts[i + 1], T)
            alone = model(torch.as_tensor(d[: e - a], dtype=torch.long)[None])[0]
            torch.testing.assert_close(packed[a:e], alone, rtol=0, atol=1e-5)
        plain = model(b.input_ids)[0]  # without doc masks later documents see earlier ones
        assert (plain[starts[1]:starts[2]] - packed[starts[1]:starts[2]]).abs().max() > 1e-3


def test_prefetch_thread_hands_read_errors_to_the_caller(tmp_path, monkeypatch):
    ds = _stream_dataset(tmp_path)
    loader = TokenLoader(ds, seq_len=8, batch_size=2, seed=0, prefetch=2, retry_backoff=0.0, read_retries=1)
    first = next(loader)
    monkeypatch.setattr(ds, "read", lambda s, e: (_ for _ in ()).throw(OSError("EIO")))
    with pytest.raises(DataError, match=r"token shard train-0000\d.*after 1 retries"):
        for _ in range(5):  # batches already prefetched come first, then the error
            next(loader)
    assert loader.state_dict()["step"] >= 1 and first.input_ids.shape == (2, 8)
    loader.close()


def test_pread_reader_equals_mmap_and_retries_real_os_errors(tmp_path, monkeypatch):
    import os

    _stream_dataset(tmp_path)
    mm, pr = open_split(tmp_path, "train"), open_split(tmp_path, "train", mmap=False)
    assert np.array_equal(mm.read(250, 720), pr.read(250, 720)) and np.array_equal(mm.doc(7), pr.doc(7))
    ref = TokenLoader(mm, seq_len=8, batch_size=3, seed=2).make_batch(5)
    loader = TokenLoader(pr, seq_len=8, batch_size=3, seed=2, retry_backoff=0.001, read_retries=3)
    loader.step = 5
    real, fails = os.pread, {"n": 2}

    def flaky(fd, n, off):
        if fails["n"]:
            fails["n"] -= 1
            raise OSError(5, "Input/output error")
        return real(fd, n, off)

    monkeypatch.setattr(os, "pread", flaky)
    assert torch.equal(next(loader).input_ids, ref.input_ids) and fails["n"] == 0
    monkeypatch.setattr(os, "pread", lambda fd, n, off: real(fd, n, off)[: n // 2])  # short reads persist
    with pytest.raises(DataError, match=r"token shard train-0000\d .*short read from .*train-0000\d\.bin"):
        next(loader)


def test_uint32_shards_for_large_vocabularies(tmp_path):
    docs = [np.array([70_000, 5, 65_536, 3]), np.array([100_000, 3])]
    man = write_tokens_dir(tmp_path, {"train": docs, "val": docs[:1]}, vocab_size=100_001)
    ds = open_split(tmp_path, "train", verify_checksums=True)
    assert (tmp_path / "train-00000.bin").stat().st_size == 4 * 6 and man["splits"]["train"]["tokens"] == 6
    assert ds.doc(0).tolist() == [70_000, 5, 65_536, 3] and ds.doc(1).tolist() == [100_000, 3]


def test_state_survives_json_and_torch_weights_only(tmp_path):
    import json

    ds = _stream_dataset(tmp_path)
    a = TokenLoader(ds, seq_len=8, batch_size=3, seed=4, packing="best_fit")
    for _ in range(5):
        next(a)
    torch.save({"loader": a.state_dict()}, tmp_path / "s.pt")
    for state in (json.loads(json.dumps(a.state_dict())), torch.load(tmp_path / "s.pt", weights_only=True)["loader"]):
        b = TokenLoader(ds, seq_len=8, batch_size=3, seed=4, packing="best_fit")
        b.load_state_dict(state)
        assert torch.equal(next(b).input_ids, a.make_batch(5).input_ids)
