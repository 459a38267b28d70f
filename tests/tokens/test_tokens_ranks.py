"""Distributed tokenize: any number of rank tasks (and any executor) gives byte-identical token shards
and the same manifest; a finished rank is skipped on a retry; the forced val document is chosen globally."""

import json

import numpy as np
import pytest

from lmforge.config import TokenizerConfig, TokensConfig
from lmforge.data.config import SlurmConfig
from lmforge.data.document import Document, ShardWriter
from lmforge.errors import DataError
from lmforge.tokenizer import train_tokenizer
from lmforge.tokens.shards import open_split
from lmforge.tokens.stage import merge_tokenize_tasks, run_tokenize_stage, run_tokenize_task


def _make(tmp_path, n=240, shard_docs=40, kind="bpe"):
    words = "the quick brown fox jumps over a lazy dog while seven wizards hum".split()
    rng = np.random.default_rng(1)
    docs = [Document(f"doc-{i}", " ".join(rng.choice(words, size=int(rng.integers(3, 60)))) + f" {i}.")
            for i in range(n)]
    with ShardWriter(tmp_path / "data", "clean", max_docs=shard_docs) as w:
        for d in docs:
            w.write(d)
    train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), (d.text for d in docs), tmp_path / "tokenizer")
    return tmp_path / "data", tmp_path / "tokenizer", docs


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".bin", ".idx")}


def _same_manifest(a, b):
    drop = lambda m: {k: v for k, v in m.items() if k != "stats"}
    assert drop(a) == drop(b)


def test_any_number_of_ranks_gives_identical_tokens(tmp_path):
    data, tok, docs = _make(tmp_path)
    mans = {r: run_tokenize_stage(TokensConfig(ranks=r, shard_tokens=1024), data, tok, tmp_path / f"r{r}",
                                  progress=False) for r in (1, 2, 3)}
    one = _files(tmp_path / "r1")
    assert len(one) > 4
    for r in (2, 3):
        assert _files(tmp_path / f"r{r}") == one
        _same_manifest(mans[1], mans[r])
        assert mans[r]["stats"]["ranks"] == r and not (tmp_path / f"r{r}" / "_work").exists()
    train = open_split(tmp_path / "r3", "train", verify_checksums=True)
    val = open_split(tmp_path / "r3", "val", verify_checksums=True)
    assert train.num_docs + val.num_docs == len(docs)
    # a second encoding worker inside each rank changes nothing either
    two = run_tokenize_stage(TokensConfig(ranks=2, workers=2, shard_tokens=1024), data, tok, tmp_path / "w2",
                             progress=False)
    assert _files(tmp_path / "w2") == one
    _same_manifest(mans[1], two)


def test_finished_ranks_are_skipped_and_merge_needs_all(tmp_path):
    data, tok, _ = _make(tmp_path)
    cfg, out = TokensConfig(ranks=3), tmp_path / "tokens"
    assert run_tokenize_task(cfg, data, tok, out, rank=1, world_size=3) is True
    assert run_tokenize_task(cfg, data, tok, out, rank=1, world_size=3) is False
    with pytest.raises(DataError, match=r"tokenize ranks \[0, 2\] of 3 have not finished"):
        merge_tokenize_tasks(cfg, data, tok, out, 3)
    for r in (0, 2):
        run_tokenize_task(cfg, data, tok, out, rank=r, world_size=3)
    man = merge_tokenize_tasks(cfg, data, tok, out, 3)
    assert json.loads((out / "manifest.json").read_text())["splits"] == man["splits"]


def test_forced_val_document_is_the_global_lowest_hash(tmp_path):
    data, tok, docs = _make(tmp_path, n=30, shard_docs=7, kind="byte")
    m1 = run_tokenize_stage(TokensConfig(val_fraction=1e-9), data, tok, tmp_path / "a", progress=False)
    m3 = run_tokenize_stage(TokensConfig(val_fraction=1e-9, ranks=3), data, tok, tmp_path / "b", progress=False)
    assert m1["val_doc_forced"] and m1["splits"]["val"]["docs"] == 1
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    _same_manifest(m1, m3)


def test_slurm_local_backend_gives_the_same_tokens(tmp_path):
    pytest.importorskip("submitit")
    data, tok, _ = _make(tmp_path, n=80)
    ref = run_tokenize_stage(TokensConfig(ranks=2), data, tok, tmp_path / "local", progress=False)
    cfg = TokensConfig(ranks=2, executor="slurm", slurm=SlurmConfig(backend="local", poll_s=0.2))
    man = run_tokenize_stage(cfg, data, tok, tmp_path / "slurm", progress=False)
    assert _files(tmp_path / "slurm") == _files(tmp_path / "local")
    _same_manifest(ref, man)


def test_lmforge_run_rerun_after_a_crash_skips_finished_ranks(tmp_path, monkeypatch):
    """The stage runner empties an incomplete stage folder but keeps `_work/`: ranks that finished
    before the crash (here: in the merge) keep their markers and are not encoded again."""
    from lmforge import run
    from lmforge.config import load_config
    from lmforge.io import write_marker
    from lmforge.tokens import stage

    data, tok, _ = _make(tmp_path)
    run_dir = tmp_path / "run"
    for name, src in (("data", data), ("tokenizer", tok)):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        src.rename(run_dir / name)
    cfg = load_config(None, ["tokens.ranks=3", "train.progress=false"])
    for name in ("data", "tokenizer"):  # as the earlier stages leave them
        write_marker(run_dir / name, run._stage_fingerprints(cfg)[name])
    real_merge = stage.merge_tokenize_tasks

    def crash(*a, **k):
        raise RuntimeError("killed during the merge")

    monkeypatch.setattr(stage, "merge_tokenize_tasks", crash)
    with pytest.raises(RuntimeError, match="killed during the merge"):
        run.run_tokenize(cfg, run_dir)
    markers = {p: p.stat().st_mtime_ns for p in (run_dir / "tokens" / "_work").glob("rank-*/_SUCCESS.json")}
    assert len(markers) == 3
    seen = {}

    def merge(*a, **k):
        seen.update({p: p.stat().st_mtime_ns for p in markers})
        return real_merge(*a, **k)

    monkeypatch.setattr(stage, "merge_tokenize_tasks", merge)
    assert run.run_tokenize(cfg, run_dir) is True
    assert seen == markers  # no rank was redone
    assert open_split(run_dir / "tokens", "train").num_docs > 0 and not (run_dir / "tokens" / "_work").exists()
