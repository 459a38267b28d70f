"""Issue 3's bad inputs, through the whole stage: each is decoded by policy or rejected with file,
line and reason; counts reach the report; the run finishes; memory stays bounded."""

import gzip
import json
import tracemalloc

import pytest

from lmforge.config import DataConfig
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.data.readers import ReadOptions, read_source


@pytest.fixture
def bad_dir(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "bom.txt").write_bytes(b"\xef\xbb\xbfStarts with a byte order mark.\n")
    (d / "nul.txt").write_bytes(b"Has a NUL\x00 byte inside.\n")
    (d / "crlf.txt").write_bytes(b"Windows line one.\r\nWindows line two.\r\n\r\nSecond block.\r\n")
    (d / "latin1.txt").write_bytes("Ein Grüß aus Köln.\n".encode("latin-1"))
    (d / "invalid.txt").write_bytes(b"Broken \xff\xfe bytes here.\n")
    (d / "empty.txt").write_bytes(b"")
    (d / "spaces.txt").write_bytes(b"   \n\t\n  \n")
    (d / "binary.txt").write_bytes(bytes(range(256)) * 64)
    (d / "lines.jsonl").write_text('{"text": "Good json line."}\n{"text": "no end\n{"body": "x"}\n')
    rows = "".join(json.dumps({"text": f"Row {i} of a long gzip file."}) + "\n" for i in range(3000))
    blob = gzip.compress(rows.encode())
    (d / "truncated.jsonl.gz").write_bytes(blob[: len(blob) * 2 // 3])
    return d


def test_bad_inputs_run_finishes_with_counts(bad_dir, tmp_path, capsys):
    out = tmp_path / "out"
    report = run_data_stage(DataConfig(inputs=[str(bad_dir)], plots=False), out, progress=False)
    texts = {d.meta["source"].rsplit("/", 1)[1]: d.text for d in iter_clean_documents(out)}
    assert texts["bom.txt"] == "Starts with a byte order mark."
    assert texts["nul.txt"] == "Has a NUL byte inside."
    assert [d.text for d in iter_clean_documents(out) if d.meta["source"].endswith("crlf.txt")] == [
        "Windows line one.\nWindows line two.", "Second block."]
    assert texts["latin1.txt"] == "Ein Gr\ufffd\ufffd aus K\ufffdln."
    assert texts["invalid.txt"] == "Broken \ufffd\ufffd bytes here."
    counts = {r: v["count"] for r, v in report["rejected"].items()}
    assert counts == {"binary": 1, "corrupt_input": 1, "malformed_json": 1, "missing_field": 1}
    assert report["encoding"]["utf8_replaced"] == 5 and report["encoding"]["documents"] == 2
    assert {s.rsplit("/", 1)[1] for s in report["empty_sources"]} == {"empty.txt", "spaces.txt"}
    gz_rows = [d for d in iter_clean_documents(out) if d.meta["source"].endswith("truncated.jsonl.gz")]
    assert 0 < len(gz_rows) < 3000
    rejects = {d.meta["reject_reason"]: d for p in (out / "rejected").glob("*.zst") for d in read_shard(p)}
    assert rejects["malformed_json"].meta["line"] == 2 and rejects["missing_field"].meta["line"] == 3
    assert rejects["corrupt_input"].meta["line"] == len(gz_rows) + 1
    assert rejects["binary"].meta["source"].endswith("binary.txt")
    err = capsys.readouterr().err
    for name in ("lines.jsonl:2", "lines.jsonl:3", "truncated.jsonl.gz", "binary.txt"):
        assert name in err
    md = (out / "report.md").read_text()
    assert "| corrupt_input | 1 |" in md and "invalid UTF-8: 5" in md


def test_encoding_reject_policy_on_bad_bytes(bad_dir, tmp_path):
    cfg = DataConfig(inputs=[str(bad_dir / "latin1.txt"), str(bad_dir / "bom.txt")], encoding_errors="reject",
                     plots=False)
    report = run_data_stage(cfg, tmp_path / "o", progress=False)
    assert report["rejected"]["invalid_utf8"]["count"] == 1 and report["documents_out"] == 1


def test_whitespace_only_file_in_file_mode_is_too_short(bad_dir, tmp_path):
    cfg = DataConfig(inputs=[str(bad_dir / "spaces.txt"), str(bad_dir / "bom.txt")], txt_mode="file", plots=False)
    report = run_data_stage(cfg, tmp_path / "o", progress=False)
    assert report["rejected"]["too_short"]["count"] == 1


def test_huge_line_without_newline_bounded_memory(tmp_path):
    p = tmp_path / "huge.txt"
    with open(p, "wb") as f:
        for _ in range(40):  # 40 MB, no newline
            f.write(b"word " * 209_715 + b"word")
        f.write(b"\n\nA normal paragraph after it.\n")
    tracemalloc.start()
    docs = list(read_source(str(p), ReadOptions(max_record_bytes=1_000_000)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8_000_000  # never the whole 40 MB line
    big, small = docs
    assert big.meta["reject_reason"] == "too_long" and big.meta["truncated"] is True
    assert big.meta["bytes"] == 40 * (5 * 209_715 + 4) and len(big.text) <= 2000
    assert small.text == "A normal paragraph after it."
