"""On-disk dedup (sorted signature runs, k-way merge, first-link clusters) against the in-memory filters."""

import hashlib
import random

import numpy as np
import pytest

from lmforge.config import DataConfig, NearDedupConfig
from lmforge.data.dedup import NearDedup
from lmforge.data.dedup_disk import (
    EXACT_BAND,
    REC,
    SignatureWriter,
    dedup_decisions,
    encode_order,
    merged_groups,
)
from lmforge.data.document import Document, ShardWriter, iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.data.pipeline import RankTask, finish
from lmforge.errors import DataError


def _write_runs(tmp_path, rng, n_runs, n_keys):
    paths, recs = [], []
    for r in range(n_runs):
        rec = np.empty(rng.integers(0, 40), REC)
        rec["key"] = rng.integers(0, n_keys, rec.size)
        rec["order"] = rng.integers(0, 1 << 50, rec.size)
        rec = rec[np.lexsort((rec["order"], rec["key"]))]
        p = tmp_path / f"run-{r}.bin"
        rec.tofile(p)
        paths.append(p)
        recs.append(rec)
    return paths, np.concatenate(recs)


@pytest.mark.parametrize("seed", range(6))
def test_merged_groups_is_a_sorted_merge_without_split_groups(tmp_path, seed):
    rng = np.random.default_rng(seed)
    paths, everything = _write_runs(tmp_path, rng, n_runs=int(rng.integers(1, 6)), n_keys=int(rng.integers(1, 12)))
    batches = list(merged_groups(paths, chunk=int(rng.integers(1, 5))))
    got = np.concatenate(batches) if batches else np.empty(0, REC)
    want = everything[np.lexsort((everything["order"], everything["key"]))]
    assert got.tobytes() == want.tobytes()
    seen_keys = [set(b["key"].tolist()) for b in batches]
    for a in range(len(seen_keys)):  # a key group lives in exactly one batch
        for b in range(a + 1, len(seen_keys)):
            assert not seen_keys[a] & seen_keys[b]


def _reference_near(ids, keys_per_doc):
    """The in-memory NearDedup on given band keys (in stream order): duplicate_of per document."""
    f = NearDedup(NearDedupConfig(bands=4, rows=1))
    out = {}
    for doc_id, keys in zip(ids, keys_per_doc):
        doc = Document(doc_id, "x", {"_sig_near": keys})
        out[doc.id] = doc.meta.get("duplicate_of") if f.process(doc) is None else None
    return out


@pytest.mark.parametrize("seed", range(8))
def test_near_decisions_equal_in_memory_greedy(tmp_path, seed):
    """Random band keys from a small alphabet: chains, bridges between clusters, keyless documents."""
    rng = random.Random(seed)
    bands, n = 4, 120
    keys_per_doc = [[] if rng.random() < 0.05 else [b * 1000 + rng.randrange(25) for b in range(bands)]
                    for _ in range(n)]
    ranks = [tmp_path / "rank-0", tmp_path / "rank-1"]
    writers = [SignatureWriter(d, range(bands), buffer_docs=rng.randrange(1, 9)) for d in ranks]
    for i, keys in enumerate(keys_per_doc):
        if keys:  # documents of source i % 2 go to rank i % 2, as the executor splits them
            writers[i % 2].add(encode_order([i % 2, i // 2]), keys)
    for w in writers:
        w.flush()
    dec = dedup_decisions(ranks, range(bands), chunk=rng.randrange(1, 6))
    stream = sorted(range(n), key=lambda i: (i % 2, i // 2))  # global order: source, then record
    got = {}
    for i in stream:
        root = dec.root_of(encode_order([i % 2, i // 2]), f"d{i}")
        got[f"d{i}"] = None if root is None else dec.id_of(root)
    ref = _reference_near([f"d{i}" for i in stream], [keys_per_doc[i] for i in stream])
    assert got == ref
    assert sum(v is not None for v in got.values()) > 20  # the corpus really has duplicates
    assert len({v for v in got.values() if v}) > 3  # ... in several clusters


def _planted_corpus(tmp_path, n_files=3, per_file=40, seed=0):
    """Distinct paragraphs with planted near-duplicates (a few words changed), chains, exact copies."""
    rng = random.Random(seed)
    vocab = [hashlib.md5(str(i).encode()).hexdigest()[:7].translate(str.maketrans("0123456789", "ghijklmnop"))
             for i in range(3000)]
    originals = []
    files = [[] for _ in range(n_files)]
    for k in range(n_files * per_file):
        f = files[k % n_files]
        roll = rng.random()
        if originals and roll < 0.25:  # near copy of an earlier paragraph: ~3 words in 80 changed
            w = rng.choice(originals).split()
            for _ in range(2):
                w[rng.randrange(len(w))] = rng.choice(vocab)
            f.append(" ".join(w))
        elif originals and roll < 0.32:
            f.append(rng.choice(originals))  # exact copy
        else:
            text = " ".join(rng.choice(vocab) for _ in range(80))
            originals.append(text)
            f.append(text)
        if rng.random() < 0.2:
            originals.append(f[-1])  # later copies may derive from a copy: chains
    d = tmp_path / "in"
    d.mkdir()
    for i, paras in enumerate(files):
        (d / f"part-{i}.txt").write_text("\n\n".join(paras) + "\n")
    return d


def _outcome(out):
    kept = [d.id for d in iter_clean_documents(out)]
    rejected = sorted((d.id, d.meta["reject_reason"], d.meta.get("duplicate_of"))
                      for p in sorted((out / "rejected").glob("*.zst")) for d in read_shard(p))
    return kept, rejected


def _in_memory_reference(cfg, out):
    """The single-pass path with in-memory dedup tables (signatures in meta)."""
    import time

    from lmforge.data.readers import expand_inputs

    with ShardWriter(out / "rejected", "rejected", cfg.shard_docs) as rejected:
        task = RankTask(cfg, expand_inputs(cfg.inputs), 0, 1, rejected.write)
        finish(cfg, out, task.documents(), lambda: [task.state()], rejected, progress=False, t0=time.perf_counter())
    return _outcome(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_stage_on_disk_equals_in_memory_reference(tmp_path, workers, monkeypatch):
    import lmforge.data.dedup_disk as dd

    if workers == 1:  # in this process: many small sorted runs and tiny merge chunks
        monkeypatch.setattr(dd.SignatureWriter.__init__, "__defaults__", (7,))
        monkeypatch.setattr(dd.dedup_decisions, "__defaults__", (3,))
    src = _planted_corpus(tmp_path)
    cfg = DataConfig(inputs=[str(src)], plots=False, workers=workers, near_dedup=NearDedupConfig(enabled=True))
    ref = _in_memory_reference(cfg, tmp_path / "ref")
    report = run_data_stage(cfg, tmp_path / "disk", progress=False)
    assert _outcome(tmp_path / "disk") == ref
    reasons = [r[1] for r in ref[1]]
    assert reasons.count("near_duplicate") >= 15 and reasons.count("duplicate") >= 3
    assert report["near_duplicate_clusters"]["documents_removed"] == reasons.count("near_duplicate")
    assert not (tmp_path / "disk" / "_work").exists()  # signature runs removed on success
    if workers == 1:
        assert dd.SignatureWriter(tmp_path / "w", [0]).cap == 7  # the small runs were in effect


def test_crash_in_merge_leaves_no_complete_looking_output_and_merge_reruns(tmp_path, monkeypatch):
    import lmforge.data.dedup_disk as dd
    from lmforge.data.executor import merge_data_tasks

    src = _planted_corpus(tmp_path, n_files=2, per_file=20, seed=3)
    cfg = DataConfig(inputs=[str(src)], plots=False, near_dedup=NearDedupConfig(enabled=True))
    good = tmp_path / "good"
    run_data_stage(cfg, good, progress=False)
    real = dd.band_links

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(dd, "band_links", boom)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        run_data_stage(cfg, out, progress=False)
    assert not (out / "report.json").exists() and not list(out.glob("clean-*"))
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(dd, "band_links", real)
    merge_data_tasks(cfg, out, 1, progress=False)  # the rank phase finished: only the merge reruns
    assert _outcome(out) == _outcome(good)


def test_order_bounds_and_exact_band_files(tmp_path):
    assert encode_order([1, 0]) > encode_order([0, (1 << 40) - 1])
    with pytest.raises(DataError, match="record"):
        encode_order([0, 1 << 40])
    w = SignatureWriter(tmp_path, [EXACT_BAND], buffer_docs=2)
    for i, k in enumerate([5, 3, 5]):
        w.add(i, [k])
    w.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sig-b99-00000.bin", "sig-b99-00001.bin"]
    first = np.fromfile(tmp_path / "sig-b99-00000.bin", REC)
    assert first["key"].tolist() == [3, 5] and first["order"].tolist() == [1, 0]
    dec = dedup_decisions([tmp_path], [EXACT_BAND])
    assert [dec.root_of(i, f"d{i}") for i in range(3)] == [None, None, 0] and dec.id_of(0) == "d0"
