"""Ranks: 2 ranks give the same documents as 1; markers make a rerun skip finished ranks."""

import hashlib
import json

import pytest

from lmforge.config import DataConfig, NearDedupConfig
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import merge_data_tasks, run_data_stage, run_data_task
from lmforge.errors import DataError


def _word(*key: int) -> str:
    """A made-up word, letters only (digits would be normalised away by the MinHash shingles)."""
    h = hashlib.md5(repr(key).encode()).hexdigest()[:8]
    return h.translate(str.maketrans("0123456789", "ghijklmnop"))


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    shared = "A paragraph that appears in two files, so only its first copy may be kept by the dedup."
    for i in range(5):
        body = [f"File {_word(i, j, 0)} paragraph says {' '.join(_word(i, j, k) for k in range(1, 8))}."
                for j in range(4)]
        if i in (1, 2):  # file 1 goes to rank 1, file 2 to rank 0: the duplicate crosses ranks
            body.append(shared)
        (d / f"f{i}.txt").write_text("\n\n".join(body) + "\n")
    (d / "g.jsonl").write_text('{"text": "json doc"}\n{broken\n')
    return d


def _outputs(out):
    clean = [(d.id, d.text) for d in iter_clean_documents(out)]
    rejected = sorted((d.id, d.meta["reject_reason"], d.meta.get("duplicate_of"))
                      for p in sorted((out / "rejected").glob("*.jsonl.zst")) for d in read_shard(p))
    return clean, rejected


def _cfg(src, **kw):
    return DataConfig(inputs=[str(src)], plots=False, near_dedup=NearDedupConfig(enabled=True), **kw)


def test_two_workers_same_output_as_one(inputs, tmp_path):
    r1 = run_data_stage(_cfg(inputs), tmp_path / "one", progress=False)
    r2 = run_data_stage(_cfg(inputs, workers=2), tmp_path / "two", progress=False)
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert one == two  # same documents, same order, same rejects
    clean, rejected = one
    assert len(clean) == 22
    assert sorted(r[1] for r in rejected) == ["duplicate", "malformed_json"]  # distinct paragraphs stay
    dup = next(r for r in rejected if r[1] == "duplicate")
    assert dup[0] == f"{inputs / 'f2.txt'}:9" and dup[2] == f"{inputs / 'f1.txt'}:9"
    for key in ("documents_in", "documents_out", "documents_rejected", "bytes_in", "bytes_out", "rejected",
                "length_chars", "length_chars_before_filters"):
        assert r1[key] == r2[key], key
    assert r2["workers"] == 2 and not (tmp_path / "two" / "_work").exists()
    assert all("_o" not in d.meta and "_sig_exact" not in d.meta for d in iter_clean_documents(tmp_path / "two"))


def test_rank_markers_skip_finished_ranks_and_merge_checks(inputs, tmp_path):
    cfg, out = _cfg(inputs), tmp_path / "out"
    assert run_data_task(cfg, out, 0, 2) is True
    assert run_data_task(cfg, out, 0, 2) is False  # complete: skipped
    with pytest.raises(DataError, match=r"ranks \[1\] of 2 have not finished"):
        merge_data_tasks(cfg, out, 2, progress=False)
    crashed = out / "_work" / "rank-00001"
    crashed.mkdir(parents=True)
    (crashed / "docs-00000.jsonl.zst.tmp").write_bytes(b"partial")  # what a crash leaves
    assert run_data_task(cfg, out, 1, 2) is True
    assert not (crashed / "docs-00000.jsonl.zst.tmp").exists()
    report = merge_data_tasks(cfg, out, 2, progress=False)
    assert report["documents_out"] == 22
    assert json.loads((out / "report.json").read_text())["documents_out"] == 22
    with pytest.raises(DataError, match="rank 2 is outside"):
        run_data_task(cfg, out, 2, 2)


def test_local_ranks_side_by_side_share_the_cores(tmp_path, monkeypatch):
    """Ranks run as processes side by side: HF tokenizers' thread pool in each gets its share of the
    cores this process may use (not every core, which would oversubscribe the machine by the ranks)."""
    import os

    from lmf_datakit import read_threads, record_threads

    from lmforge.data.executors import RankJob
    from lmforge.data.executors.local import run_local

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    job = RankJob("probe", record_threads, (str(tmp_path),), 3, read_threads, (str(tmp_path),), tmp_path / "_work",
                  progress=False)
    assert run_local(job, 2) == [str(max(1, cpus // 2))] * 3
    monkeypatch.setenv("RAYON_NUM_THREADS", "7")  # the user's setting wins
    assert run_local(job, 2) == ["7"] * 3
