"""The package's layering: no import circles and no import back up the pipeline (tools/import_graph.py)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_circles_and_no_imports_up_the_flow():
    r = _tool().report(ROOT / "src")
    assert r["file_circles"] == [] and r["package_circles"] == [] and r["upward"] == []
    assert len(r["edges"]) > 50  # the graph was really built


def test_the_tool_sees_a_circle_and_an_upward_import(tmp_path):
    tool = _tool()
    pkg = tmp_path / "lmforge"
    (pkg / "data").mkdir(parents=True)
    (pkg / "train").mkdir()
    for d in (pkg, pkg / "data", pkg / "train"):
        (d / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from lmforge.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from lmforge.data.a import x\n"
                                       "    from lmforge.train.t import y\n")
    (pkg / "train" / "t.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                        "    from lmforge.data.a import z\n")
    r = tool.report(tmp_path)
    assert r["file_circles"] == [["lmforge.data.a", "lmforge.data.b"]]
    assert r["upward"] == [("lmforge.data.b", "lmforge.train.t")]
    assert "lmforge.data.a" not in r["edges"]["lmforge.train.t"]  # TYPE_CHECKING imports do not count
