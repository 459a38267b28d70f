import gzip
import json

import pytest

from lmforge.data.readers import ReadOptions, decode, expand_inputs, read_source
from lmforge.errors import DataError


def _read(path, warnings=None, **kw):
    opts = ReadOptions(warn=(warnings.append if warnings is not None else lambda m: None), **kw)
    return list(read_source(str(path), opts))


def test_expand_inputs_files_dirs_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.txt", "a.jsonl", "sub/c.md", "sub/skip.bin", ".hidden.txt"):
        (tmp_path / name).write_text("x")
    got = expand_inputs([str(tmp_path)])
    assert [p.replace(str(tmp_path) + "/", "") for p in got] == ["a.jsonl", "b.txt", "sub/c.md"]
    assert expand_inputs([str(tmp_path / "*.txt"), str(tmp_path / "b.txt")]) == [str(tmp_path / "b.txt")]
    assert expand_inputs(["builtin:stdlib"]) == ["builtin:stdlib"]


@pytest.mark.parametrize("bad, msg", [("nope.txt", "does not exist"), ("*.nothing", "matches no files")])
def test_expand_inputs_missing(tmp_path, bad, msg):
    with pytest.raises(DataError, match=msg) as e:
        expand_inputs([str(tmp_path / bad)])
    assert str(tmp_path / bad) in str(e.value)


def test_expand_inputs_empty_dir(tmp_path):
    with pytest.raises(DataError, match="holds no readable files"):
        expand_inputs([str(tmp_path)])


def test_txt_modes(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"\xef\xbb\xbfpara one\r\nstill one\r\n\r\n  \r\npara two\n")
    paras = _read(p)
    assert [(d.text, d.meta["line"], d.meta["block"]) for d in paras] == [
        ("para one\nstill one", 1, 0), ("para two", 5, 1)]
    assert paras[0].id == f"{p}:1" and paras[0].meta["source"] == str(p)
    lines = _read(p, txt_mode="lines")
    assert [(d.text, d.meta["line"]) for d in lines] == [("para one", 1), ("still one", 2), ("para two", 5)]
    (whole,) = _read(p, txt_mode="file")
    assert whole.text == "para one\r\nstill one\r\n\r\n  \r\npara two\n" and whole.id == str(p)


def test_empty_and_whitespace_files(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    (tmp_path / "w.txt").write_bytes(b"  \n\t\n")
    assert _read(tmp_path / "e.txt") == [] and _read(tmp_path / "e.txt", txt_mode="file") == []
    assert _read(tmp_path / "w.txt") == []
    (d,) = _read(tmp_path / "w.txt", txt_mode="file")  # kept, so the pipeline rejects it as too_short
    assert d.text == "  \n\t\n"


def test_decode_counts_only_invalid_sequences():
    assert decode("é\ufffd".encode(), "replace") == ("é\ufffd", 0)
    assert decode(b"caf\xe9 \xff\xfe ok", "replace") == ("caf\ufffd \ufffd\ufffd ok", 3)


def test_latin1_file_replace_and_reject(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes("Grüße aus Köln\n\nplain\n".encode("latin-1"))
    a, b = _read(p)
    assert a.text == "Gr\ufffd\ufffde aus K\ufffdln" and a.meta["utf8_replaced"] == 3 and "reject_reason" not in a.meta
    assert b.text == "plain" and "utf8_replaced" not in b.meta
    a, b = _read(p, encoding_errors="reject")
    assert a.meta["reject_reason"] == "invalid_utf8" and "reject_reason" not in b.meta


def test_jsonl_fields_meta_and_ids(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"body": "first", "key": 7, "url": "u1"}, {"body": "second", "key": "k2", "meta": {"lang": "en"}}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = _read(p, text_field="body", id_field="key")
    assert (a.id, a.text, a.meta) == ("7", "first", {"url": "u1", "source": str(p), "line": 1})
    assert (b.id, b.text, b.meta) == ("k2", "second", {"lang": "en", "source": str(p), "line": 2})
    c, _ = _read(p, text_field="body")
    assert c.id == f"{p}:1" and c.meta["key"] == 7


def test_jsonl_malformed_and_missing_field_are_counted_rejects(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "unterminated\n[1, 2]\n{"other": 1}\n{"text": null}\n')
    warnings = []
    docs = _read(p, warnings)
    assert [d.meta.get("reject_reason") for d in docs] == [
        None, "malformed_json", "malformed_json", "missing_field", "missing_field"]
    assert [d.meta["line"] for d in docs] == [1, 2, 3, 4, 5]
    assert docs[1].text == '{"text": "unterminated'  # the raw line is kept in the reject
    assert len(warnings) == 4 and warnings[0].startswith(f"{p}:2: malformed JSON")
    assert f"{p}:4: text field 'text' is missing" in warnings[2]


def test_jsonl_on_error_fail_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=rf"{p}:2: malformed JSON.*data.on_error=skip"):
        _read(p, on_error="fail")


def test_jsonl_bom_and_lone_surrogates(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a\\ud800b", "x": "\\udfff"}\n')
    (d,) = _read(p)
    assert d.text == "a\ufffdb" and d.meta["x"] == "\ufffd" and d.meta["utf8_replaced"] == 1
    d.to_json().encode("utf-8")  # encodable


def test_binary_file_is_one_reject(tmp_path):
    p = tmp_path / "img.txt"
    p.write_bytes(gzip.compress(bytes(range(256)) * 40))
    warnings = []
    (d,) = _read(p, warnings)
    assert d.meta["reject_reason"] == "binary" and d.meta["source"] == str(p)
    assert "looks binary" in warnings[0]


def test_nul_bytes_in_text_are_kept_for_cleaning(tmp_path):
    p = tmp_path / "n.txt"
    p.write_bytes(b"hello\x00world\n")
    (d,) = _read(p)
    assert d.text == "hello\x00world"


@pytest.mark.parametrize("mode", ["lines", "paragraphs", "file"])
def test_huge_record_is_bounded_too_long_reject(tmp_path, mode):
    p = tmp_path / "big.txt"
    p.write_bytes(b"x" * 300_000 + b"\n\nsmall\n")
    docs = _read(p, txt_mode=mode, max_record_bytes=10_000)
    big = docs[0]
    assert big.meta["reject_reason"] == "too_long" and big.meta["truncated"] is True
    assert len(big.text) <= 10_000
    if mode == "file":
        assert big.meta["bytes"] == 300_008 and len(docs) == 1
    else:
        assert big.meta["bytes"] == 300_000 and docs[1].text == "small"
