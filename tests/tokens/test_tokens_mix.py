"""`tokens.mix`: shares by weight, exact resume, disjoint ranks, epochs per source, through a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from lmforge.config import TokenizerConfig, TokensConfig
from lmforge.data.document import Document, ShardWriter
from lmforge.errors import ConfigError, DataError
from lmforge.tokenizer import train_tokenizer
from lmforge.tokens.mixture import MixtureLoader, allocate, mixture_loader
from lmforge.tokens.shards import open_split
from lmforge.tokens.stage import run_tokenize_stage

# each source writes with its own letters, so a sequence's source can be read off its tokens
ALPHABETS = {"data/web/a.jsonl": "abcdefgh", "data/web/b.jsonl": "ijklmnop", "data/code/c.py": "0123456789"}
SIZES = {"data/web/a.jsonl": 300, "data/web/b.jsonl": 200, "data/code/c.py": 12}  # c is small: it repeats
MIX = {"data/web/a.jsonl": 0.5, "data/web/b.jsonl": 0.3, "data/code/*": 0.2}
T = 16


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "data", "clean") as w:
        for src, n in SIZES.items():
            for i in range(n):
                text = "".join(rng.choice(list(ALPHABETS[src]), size=int(rng.integers(20, 60))))
                w.write(Document(f"{src}:{i}", text, {"source": src, "topic": src.split("/")[1]}))
    tok = train_tokenizer(TokenizerConfig(kind="byte"), ["x"], root / "tokenizer")
    run_tokenize_stage(TokensConfig(val_fraction=0.05, shard_tokens=2048), root / "data", root / "tokenizer",
                       root / "tokens", progress=False)
    return root / "tokens", tok


def _loader(tokens, mix=MIX, prefetch=0, **kw):
    tdir, _ = tokens
    ds = open_split(tdir, "train")
    args = dict(seq_len=T, batch_size=25, seed=3, rank=0, world_size=1)
    args.update(kw)
    return mixture_loader(tdir, ds, TokensConfig(mix=mix, prefetch=prefetch), **args)


def _source_of_row(row, tok) -> str:
    text = tok.decode([int(t) for t in row if t not in tok.special_ids])
    found = {s for s, letters in ALPHABETS.items() if text and set(text) <= set(letters)}
    assert len(found) == 1, text
    return found.pop()


def test_shares_within_one_percent_over_10k_sequences(tokens):
    _, tok = tokens
    loader = _loader(tokens)
    counts = dict.fromkeys(ALPHABETS, 0)
    for _ in range(400):  # 400 x 25 = 10,000 sequences
        batch = next(loader)
        for row in batch.input_ids.tolist():
            counts[_source_of_row(row, tok)] += 1
    n = sum(counts.values())
    assert n == 10_000
    shares = {"data/web/a.jsonl": counts["data/web/a.jsonl"] / n, "data/web/b.jsonl": counts["data/web/b.jsonl"] / n,
              "data/code/*": counts["data/code/c.py"] / n}
    for key, w in MIX.items():
        assert abs(shares[key] - w) < 0.01, shares
    m = loader.mix_metrics()
    assert m["mix/data/code/*/tokens"] == counts["data/code/c.py"] * T
    assert m["mix/data/code/*/epoch"] > 10 * m["mix/data/web/a.jsonl/epoch"] > 10  # the small source repeats most
    assert m["mix/data/code/*/epoch"] == pytest.approx(counts["data/code/c.py"] / loader.groups[2].num_windows)


def test_allocation_stays_within_one_sequence_of_the_target():
    w = np.array([0.5, 0.3, 0.2])
    c = np.zeros(3, dtype=np.int64)
    for s in range(200):
        c += allocate(c, w, s, 7)
        assert np.all(np.abs(c - (s + 1) * 7 * w) <= 1.0)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resume_gives_the_same_batches(tokens, prefetch):
    straight = _loader(tokens, prefetch=prefetch)
    ref = [next(straight) for _ in range(12)]
    first = _loader(tokens, prefetch=prefetch)
    for _ in range(5):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # it travels through state.json
    first.close()
    resumed = _loader(tokens, prefetch=prefetch)
    resumed.load_state_dict(state)
    for want in ref[5:]:
        got = next(resumed)
        assert np.array_equal(got.input_ids, want.input_ids) and np.array_equal(got.targets, want.targets)
        assert np.array_equal(got.doc_ids, want.doc_ids)
    assert resumed.mix_metrics() == straight.mix_metrics()
    for lo in (straight, resumed):
        lo.close()
    with pytest.raises(Exception, match="tokens.mix weights"):
        _loader(tokens, mix={**MIX, "data/code/*": 0.4}).load_state_dict(state)


def test_two_ranks_are_disjoint_and_cover_each_stream(tokens):
    r0, r1 = _loader(tokens, batch_size=8, world_size=2, rank=0), _loader(tokens, batch_size=8, world_size=2, rank=1)
    s0 = {slot for step in range(60) for slot in r0._slots(step)}
    s1 = {slot for step in range(60) for slot in r1._slots(step)}
    assert not s0 & s1
    for g in range(3):  # together the ranks take indices 0..n-1 of each group's stream, no gaps
        idx = sorted(k for gg, k in s0 | s1 if gg == g)
        assert idx == list(range(len(idx)))
    b0, b1 = next(r0), next(r1)  # first epoch of the big group: different sequences on the two ranks
    rows0 = {tuple(r) for r in b0.input_ids.tolist()}
    assert not rows0 & {tuple(r) for r in b1.input_ids.tolist()}


def test_bad_mixtures_are_named(tokens):
    with pytest.raises(DataError, match="'data/code/c.py' match no key"):
        _loader(tokens, mix={"data/web/*": 1.0})
    with pytest.raises(DataError, match="'wiki' match no document source"):
        _loader(tokens, mix={**MIX, "wiki": 1.0})
    with pytest.raises(ConfigError, match="tokens.mix"):
        TokensConfig(mix={"a": -1.0})
    with pytest.raises(ConfigError, match="not budget"):
        TokensConfig(mix={"a": 1.0}, packing="budget")
    with pytest.raises(DataError, match="fewer than one training sequence"):
        _loader(tokens, seq_len=4096)
    lo = _loader(tokens, mix={"data/web/*": 1.0, "data/code/*": 0})  # weight 0 leaves a source out
    assert lo.groups[1] is None and lo.mix_metrics()["mix/data/code/*/tokens"] == 0


def test_mix_field_from_jsonl_meta(tokens):
    """Another meta field (here `topic`) names the sources; shares follow it."""
    tdir, _ = tokens
    # the stage recorded `source`; a different field needs re-tokenizing, which the manifest says
    man = json.loads((tdir / "manifest.json").read_text())
    assert man["sources"]["field"] == "source" and man["sources"]["splits"]["train"]["docs"] > 0
    ds = open_split(tdir, "train")
    names = man["sources"]["names"]
    ids = np.load(tdir / "sources-train.npy")
    lo = MixtureLoader(ds, ids.astype(np.int64), names, {"*web*": 1.0, "*code*": 1.0}, seq_len=T, batch_size=10,
                       seed=0)
    next(lo)
    assert lo.mix_metrics()["mix/*web*/tokens"] == 5 * T


def test_a_two_source_mixture_through_a_run(tmp_path):
    from lmforge.cli import main
    from lmforge.monitor.metrics import read_metrics

    rng = np.random.default_rng(1)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, letters, n in (("big.jsonl", "abcdefgh", 200), ("small.jsonl", "0123456789", 6)):
        lines = ["".join(rng.choice(list(letters), size=40)) for _ in range(n)]
        (corpus / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    cfg = {"data": {"inputs": [str(corpus)]}, "tokenizer": {"kind": "byte"},
           "tokens": {"val_fraction": 0.1, "mix": {"*big.jsonl": 0.5, "*small.jsonl": 0.5}},
           "model": {"preset": "tiny", "block_size": 16},
           "train": {"batch_size": 8, "max_steps": 6, "warmup_steps": 1, "eval_every": 0, "eval_batches": 2,
                     "ckpt_every": 3, "log_every": 1, "progress": False, "device": "cpu", "precision": "fp32"},
           "eval": {"num_samples": 1, "max_new_tokens": 4, "prompts": ["a"]},
           "monitor": {"tensorboard": False, "plots": False, "system_every": 0}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "cfg.yaml"), "--run-dir", str(run)]) == 0
    train = list(read_metrics(run / "metrics.jsonl", "train"))
    assert train[-1]["mix/*big.jsonl/tokens"] == train[-1]["mix/*small.jsonl/tokens"] == 6 * 8 * 16 // 2
    assert train[-1]["mix/*small.jsonl/epoch"] > 1.0  # <= 6 small documents of 41 tokens: it repeats
    end = [e for e in read_metrics(run / "metrics.jsonl", "event") if e.get("event") == "end"][-1]
    assert end["mix/*small.jsonl/tokens"] == 6 * 8 * 16 // 2
    # changing only the weights retrains, it does not re-tokenize
    cfg["tokens"]["mix"] = {"*big.jsonl": 0.75, "*small.jsonl": 0.25}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    before = (run / "tokens" / "_SUCCESS.json").read_text()
    import shutil

    shutil.rmtree(run / "checkpoints")
    assert main(["run", str(tmp_path / "cfg.yaml"), "--run-dir", str(run)]) == 0
    assert (run / "tokens" / "_SUCCESS.json").read_text() == before
    train = list(read_metrics(run / "metrics.jsonl", "train"))
    assert train[-1]["mix/*big.jsonl/tokens"] == 6 * 8 * 16 * 3 // 4
