"""Issue 12, defect 1: `lmforge export --out DIR` deleted whatever was at DIR (the run directory
itself included). Now: a non-empty DIR needs --force, the run directory (or a parent of it, or one of
its stage folders) is never accepted, and only a temp folder we created is ever removed."""

from __future__ import annotations

import pytest

from lmforge.cli import main


def _export(capsys, run, out, *extra):
    code = main(["export", str(run), "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def _snapshot(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("where", ["run", "parent", "checkpoints", "tokenizer"])
def test_export_never_touches_the_run_directory(infer_run, capsys, where):
    out = {"run": infer_run, "parent": infer_run.parent, "checkpoints": infer_run / "checkpoints",
           "tokenizer": infer_run / "tokenizer"}[where]
    before = _snapshot(infer_run)
    for extra in ([], ["--force"]):
        code, err = _export(capsys, infer_run, out, *extra)
        assert code == 2 and "run directory" in err, (extra, err)
    assert _snapshot(infer_run) == before


def test_non_empty_out_needs_force_and_is_then_replaced(infer_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, err = _export(capsys, infer_run, out)
    assert code == 2 and "not empty" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "my notes"
    code, _ = _export(capsys, infer_run, out, "--force")
    assert code == 0 and (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine")]  # no temp left beside it


def test_empty_or_missing_out_and_the_default_location(infer_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _export(capsys, infer_run, tmp_path / "empty")[0] == 0
    assert _export(capsys, infer_run, tmp_path / "new" / "deeper")[0] == 0
    assert main(["export", str(infer_run)]) == 0
    assert main(["export", str(infer_run)]) == 0  # lmforge's own RUN/export/hf is replaced without --force
    assert (infer_run / "export" / "hf" / "config.json").is_file()


def test_a_user_owned_dot_tmp_folder_is_never_removed(infer_run, tmp_path, capsys):
    mine = tmp_path / "out.tmp"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    assert _export(capsys, infer_run, tmp_path / "out")[0] == 0
    assert (mine / "keep.txt").read_text() == "precious"


def test_out_that_is_a_file_or_unwritable(infer_run, tmp_path, capsys):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    for extra in ([], ["--force"]):
        code, err = _export(capsys, infer_run, f, *extra)
        assert code == 2 and "is a file" in err and f.read_bytes() == b"x"
    code, err = _export(capsys, infer_run, f / "sub")
    assert code == 2 and "cannot write" in err and str(f) in err
