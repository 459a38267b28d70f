"""Issue 12, data stage: a truncated .zst is a `corrupt_input` reject (like .gz); an input record's
own `reject_reason` never steers the pipeline; broken symlinks among the inputs are counted rejects
and never tracebacks."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import zstandard

from lmforge.config import DataConfig
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.data.readers import ReadOptions, expand_inputs, read_source


def _truncated_zst(path, rows, fraction=0.6):
    """Rows that compress poorly, so the file has many zstd blocks and the cut leaves whole ones."""
    blob = zstandard.ZstdCompressor(level=3).compress("".join(rows).encode())
    path.write_bytes(blob[: int(len(blob) * fraction)])


def _noise(i):
    return hashlib.sha256(str(i).encode()).hexdigest() * 2


@pytest.mark.parametrize("name", ["cut.jsonl.zst", "cut.txt.zst"])
def test_truncated_zst_is_a_corrupt_input_reject(tmp_path, name):
    """Defect 3: records up to the damage were kept, the last cut mid-word, and no reject."""
    path = tmp_path / name
    if name.endswith(".jsonl.zst"):
        rows = [json.dumps({"text": f"Row {_noise(i)} ends here."}) + "\n" for i in range(4000)]
    else:
        rows = [f"Row {_noise(i)} ends here.\n\n" for i in range(4000)]
    _truncated_zst(path, rows)
    docs = list(read_source(str(path), ReadOptions(warn=lambda m: None)))
    good = [d for d in docs if "reject_reason" not in d.meta]
    bad = [d for d in docs if "reject_reason" in d.meta]
    assert 0 < len(good) < 4000
    assert [d.meta["reject_reason"] for d in bad] == ["corrupt_input"]
    assert "truncated" in bad[0].meta["reject_detail"] or "EOF" in bad[0].meta["reject_detail"]
    assert all(d.text.endswith("ends here.") for d in good)  # no record cut mid-word


def test_complete_multi_frame_zst_reads_whole(tmp_path):
    c = zstandard.ZstdCompressor()
    parts = [c.compress(f"Frame {i} line one.\nFrame {i} line two.\n".encode()) for i in range(3)]
    (tmp_path / "multi.txt.zst").write_bytes(b"".join(parts))
    docs = list(read_source(str(tmp_path / "multi.txt.zst"), ReadOptions(txt_mode="lines")))
    assert [d.text for d in docs][-1] == "Frame 2 line two." and len(docs) == 6
    assert not any("reject_reason" in d.meta for d in docs)


def test_input_reject_reason_never_steers_the_pipeline(tmp_path):
    """Defect 7: a record's own `reject_reason` (top level or in meta) forced a rejection."""
    d = tmp_path / "in"
    d.mkdir()
    rows = [{"text": "A perfectly good sentence, long enough to pass every filter we run here today.",
             "reject_reason": "too_short"},
            {"text": "Another fine sentence that was rejected once by a stricter filter setting before.",
             "meta": {"reject_reason": "gopher_quality", "reject_detail": "x", "lang": "en"}}]
    (d / "rejected_before.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    report = run_data_stage(DataConfig(inputs=[str(d)], plots=False, min_chars=10), out, progress=False)
    docs = list(iter_clean_documents(out))
    assert len(docs) == 2, report["rejected"]
    assert docs[0].meta["input_reject_reason"] == "too_short" and "reject_reason" not in docs[0].meta
    assert docs[1].meta["input_reject_reason"] == "gopher_quality" and docs[1].meta["input_reject_detail"] == "x"


def test_broken_symlinks_in_an_input_directory_are_counted_rejects(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.txt").write_text("A good paragraph of plain text that passes the filters without trouble.\n")
    (d / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (d / "loop.txt").symlink_to(d / "loop.txt")
    out = tmp_path / "out"
    report = run_data_stage(DataConfig(inputs=[str(d)], plots=False, min_chars=10), out, progress=False)
    assert [x.meta["source"].rsplit("/", 1)[1] for x in iter_clean_documents(out)] == ["good.txt"]
    rejects = [x for p in (out / "rejected").glob("*.zst") for x in read_shard(p)]
    assert sorted(x.meta["source"].rsplit("/", 1)[1] for x in rejects) == ["dangling.txt", "loop.txt"]
    assert {x.meta["reject_reason"] for x in rejects} == {"broken_symlink"}
    assert report["rejected"]["broken_symlink"]["count"] == 2


def test_glob_matching_only_broken_symlinks_is_a_message(tmp_path):
    from lmforge.errors import DataError

    (tmp_path / "a.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "b.txt")
    sources = expand_inputs([str(tmp_path / "*.txt")])  # listed, then each becomes a counted reject
    assert sorted(os.path.basename(s) for s in sources) == ["a.txt", "b.txt"]
    docs = [x for s in sources for x in read_source(s, ReadOptions(warn=lambda m: None))]
    assert [x.meta["reject_reason"] for x in docs] == ["broken_symlink", "broken_symlink"]
    assert "dangling" in docs[0].meta["reject_detail"] and "loop" in docs[1].meta["reject_detail"]
    with pytest.raises(DataError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.none")])
