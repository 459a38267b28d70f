"""Tokenize stage: shards, manifest, split, special tokens, sharding, workers."""

import hashlib
import json
import os

import numpy as np
import pytest

from lmforge.config import TokenizerConfig, TokensConfig
from lmforge.data.document import Document, ShardWriter
from lmforge.errors import DataError
from lmforge.tokenizer import train_tokenizer
from lmforge.tokens.shards import open_split
from lmforge.tokens.split import split_hash
from lmforge.tokens.stage import run_tokenize_stage


def _corpus(n=120):
    words = "the quick brown fox jumps over a lazy dog while seven wizards hum".split()
    rng = np.random.default_rng(0)
    return [Document(f"doc-{i}", " ".join(rng.choice(words, size=int(rng.integers(3, 40)))) + f" №{i}.")
            for i in range(n)]


def _make(tmp_path, docs, kind="byte", shard_docs=50):
    with ShardWriter(tmp_path / "data", "clean", max_docs=shard_docs) as w:
        for d in docs:
            w.write(d)
    train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), (d.text for d in docs), tmp_path / "tokenizer")
    return tmp_path / "data", tmp_path / "tokenizer"


def _run(tmp_path, data, tokdir, name="tokens", **cfg):
    return run_tokenize_stage(TokensConfig(**cfg), data, tokdir, tmp_path / name, progress=False)


def test_stage_writes_every_document_once_with_eos(tmp_path):
    docs = _corpus()
    data, tokdir = _make(tmp_path, docs, kind="bpe")
    man = _run(tmp_path, data, tokdir, val_fraction=0.2)
    from lmforge.tokenizer import load_tokenizer

    tok = load_tokenizer(tokdir)
    texts = {}
    for split in ("train", "val"):
        ds = open_split(tmp_path / "tokens", split, fingerprint=tok.fingerprint)
        assert man["splits"][split]["tokens"] == ds.num_tokens and man["splits"][split]["docs"] == ds.num_docs
        for i in range(ds.num_docs):
            ids = ds.doc(i)
            assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
            texts.setdefault(split, []).append(tok.decode(ids))
    expect_val = [d.text for d in docs if split_hash(d.id, 0) < 0.2]
    assert texts["val"] == expect_val and len(expect_val) > 5
    assert texts["train"] == [d.text for d in docs if split_hash(d.id, 0) >= 0.2]
    for split, want in texts.items():
        assert man["splits"][split]["bytes"] == sum(len(t.encode()) for t in want)
    assert man["val_bytes_per_token"] == pytest.approx(
        man["splits"]["val"]["bytes"] / (man["splits"]["val"]["tokens"] - man["splits"]["val"]["docs"]), abs=1e-3)


def test_manifest_checksums_sharding_and_determinism(tmp_path):
    data, tokdir = _make(tmp_path, _corpus(300), shard_docs=1000)  # one clean shard: token shards roll over
    man = _run(tmp_path, data, tokdir, shard_tokens=2048, add_bos=True)
    shards = man["splits"]["train"]["shards"]
    assert len(shards) > 3 and all(s["tokens"] >= 2048 for s in shards[:-1])
    for s in shards:
        raw = (tmp_path / "tokens" / f"{s['name']}.bin").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == s["sha256_bin"] and len(raw) == 2 * s["tokens"]  # uint16
    ds = open_split(tmp_path / "tokens", "train", verify_checksums=True)
    assert all(ds.doc(i)[0] == 2 and ds.doc(i)[-1] == 3 for i in range(ds.num_docs))  # <bos> ... <eos>
    again = _run(tmp_path, data, tokdir, name="again", shard_tokens=2048, add_bos=True)
    assert again["splits"] == man["splits"]
    other_seed = _run(tmp_path, data, tokdir, name="seed1", shard_tokens=2048, add_bos=True, split_seed=1)
    assert other_seed["splits"]["val"]["shards"][0]["sha256_bin"] != man["splits"]["val"]["shards"][0]["sha256_bin"]
    assert not list((tmp_path / "tokens").glob("*.tmp"))


def test_at_least_one_val_document(tmp_path):
    docs = [Document("a", "first document"), Document("b", "second one"), Document("c", "third")]
    data, tokdir = _make(tmp_path, docs)
    man = _run(tmp_path, data, tokdir, val_fraction=1e-9)
    assert man["splits"]["val"]["docs"] == 1 and man["splits"]["train"]["docs"] == 2 and man["val_doc_forced"]
    chosen = min(docs, key=lambda d: split_hash(d.id, 0))  # the lowest hash, as if the threshold were higher
    val = open_split(tmp_path / "tokens", "val")
    assert val.doc(0).tolist() == [b + 4 for b in chosen.text.encode()] + [3]
    train = open_split(tmp_path / "tokens", "train", verify_checksums=True)
    assert train.num_docs == 2 and train.bytes == sum(len(d.text) for d in docs if d is not chosen)


def test_one_document_each_in_its_own_shard_can_move_to_val(tmp_path):
    docs = [Document("a", "x" * 1500), Document("b", "y" * 1500)]
    data, tokdir = _make(tmp_path, docs)
    man = _run(tmp_path, data, tokdir, val_fraction=1e-9, shard_tokens=1024)
    assert man["splits"]["val"]["docs"] == 1 and man["splits"]["train"]["docs"] == 1
    assert len(man["splits"]["train"]["shards"]) == 1
    open_split(tmp_path / "tokens", "train", verify_checksums=True)


def test_empty_corpus_is_a_data_error(tmp_path):
    data, tokdir = _make(tmp_path, [Document("a", "x")])
    (data / "clean-00000.jsonl.zst").unlink()
    with pytest.raises(DataError, match="no clean documents"):
        _run(tmp_path, data, tokdir)


def test_two_workers_write_the_same_shards(tmp_path):
    data, tokdir = _make(tmp_path, _corpus(200), kind="bpe")
    one = _run(tmp_path, data, tokdir, name="w1", batch_bytes=500)
    two = _run(tmp_path, data, tokdir, name="w2", batch_bytes=500, workers=2)
    assert one["splits"] == two["splits"] and two["stats"]["workers"] == 2
    assert json.loads((tmp_path / "w2" / "manifest.json").read_text())["splits"] == one["splits"]


def test_in_process_threads_write_the_same_shards_and_leave_the_env_as_it_was(tmp_path, monkeypatch):
    """tokens.workers=1 encodes on one thread per core of the rank's share (RAYON_NUM_THREADS), each with HF's
    own pool off while the rank encodes; the shards do not depend on the thread count."""
    import lmforge.tokens.stage as stage

    seen, encode = [], stage.encode_docs

    def watched(*a):
        seen.append(os.environ.get("TOKENIZERS_PARALLELISM"))
        return encode(*a)

    monkeypatch.setattr(stage, "encode_docs", watched)
    data, tokdir = _make(tmp_path, _corpus(200), kind="bpe")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    runs = {}
    for threads in (1, 3):
        monkeypatch.setenv("RAYON_NUM_THREADS", str(threads))
        assert stage._threads() == threads and stage._in_flight(TokensConfig()) == 2 * threads
        runs[threads] = _run(tmp_path, data, tokdir, name=f"t{threads}", batch_bytes=300)
    assert runs[1]["splits"] == runs[3]["splits"]
    assert seen and set(seen) == {"false"} and os.environ["TOKENIZERS_PARALLELISM"] == "true"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    with stage._serial_encoding(True):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    assert "TOKENIZERS_PARALLELISM" not in os.environ
    monkeypatch.delenv("RAYON_NUM_THREADS")
    assert stage._threads() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("shard_tokens", [1, 7, 40, 10_000])
def test_add_many_writes_the_shards_add_writes_one_by_one(tmp_path, shard_tokens):
    """The stage writes a batch's documents with one `add_many` per split: the same shard files, records
    and (shard, doc) positions as adding them one by one, across shard boundaries and across calls."""
    from lmforge.tokens.shards import TokenShardWriter

    rng = np.random.default_rng(1)
    batches = [rng.integers(1, 12, size=int(rng.integers(1, 9))) for _ in range(6)]
    kw = dict(shard_tokens=shard_tokens, fingerprint="fp", vocab_size=300)
    one, many = TokenShardWriter(tmp_path / "a", "train", **kw), TokenShardWriter(tmp_path / "b", "train", **kw)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for lengths in batches:
        docs = [rng.integers(0, 300, size=int(n)) for n in lengths]
        nbytes = rng.integers(1, 50, size=len(docs))
        want = [one.add(d, int(b)) for d, b in zip(docs, nbytes)]
        shard, doc = many.add_many(np.concatenate(docs), lengths, nbytes)
        assert list(zip(shard.tolist(), doc.tolist())) == want
    assert many.close() == one.close()
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(names) >= 2
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n


@pytest.mark.parametrize("kind", ["bpe", "byte", "char"])
@pytest.mark.parametrize("add_bos", [False, True])
def test_encode_docs_is_each_document_encoded_with_its_specials(tmp_path, kind, add_bos):
    from lmforge.tokens.stage import encode_docs

    texts = ["To be, or not to be", "", "two\n\nparagraphs", "x", "spaces  and\ttabs ", "the end."]
    cfg = TokenizerConfig(kind=kind, **({"vocab_size": 300} if kind == "bpe" else {}))
    tok = train_tokenizer(cfg, iter(texts * 20), tmp_path)
    flat, lengths = encode_docs(tok, texts, add_bos)
    want = [([tok.bos_id] if add_bos else []) + tok.encode(t) + [tok.eos_id] for t in texts]
    assert flat.dtype == np.uint32 and flat.tolist() == [i for d in want for i in d]
    assert lengths.tolist() == [len(d) for d in want]
    empty = encode_docs(tok, [], add_bos)
    assert empty[0].tolist() == [] and empty[1].tolist() == []
