"""The data extension point: the README's example runs as written; `data.extra_steps` in YAML with
keywords; rejects carry the step's name; bad specs are config errors naming the key."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.config import load_config
from lmforge.data.config import DataConfig
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "src" / "lmforge" / "data" / "README.md"


def _readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Your own filter (`extra_steps`)", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _corpus(d: Path) -> Path:
    d.mkdir()
    (d / "a.txt").write_text("a calm sentence about the sea.\n\nTHIS ONE IS SHOUTING LOUDLY.\n\nanother calm one.\n")
    return d


def _rejects(out: Path) -> list:
    return [d for p in sorted((out / "rejected").glob("*.jsonl.zst")) for d in read_shard(p)]


def test_readme_example_runs(tmp_path, monkeypatch):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 20 and "extra_steps=[NoShouting(0.3)]" in code
    _corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the documented example, run as written
    report = ns["report"]
    assert report["documents_out"] == 2 and report["rejected"]["no_shouting"]["count"] == 1
    [rej] = _rejects(tmp_path / "out" / "data")
    assert rej.meta["reject_reason"] == rej.meta["reject_step"] == "no_shouting"
    assert any(s["name"] == "no_shouting" and s["docs_in"] == 3 for s in report["steps"])


def test_extra_steps_from_yaml_with_keywords(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg" / "my_filters"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from lmforge.data import Filter

        class MaxWords(Filter):
            def __init__(self, limit=3, reason="too_wordy"):
                super().__init__()
                self.limit, self.reason = limit, reason
            def filter(self, doc):
                return len(doc.text.split()) <= self.limit or (False, self.reason)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    corpus = _corpus(tmp_path / "corpus")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"data:\n  inputs: [{corpus}]\n  plots: false\n  extra_steps:\n"
                        "    - {step: 'my_filters:MaxWords', limit: 4, reason: wordy}\n")
    cfg = load_config(cfg_file)
    report = run_data_stage(cfg.data, tmp_path / "out", progress=False)
    assert [d.text for d in iter_clean_documents(tmp_path / "out")] == ["another calm one."]
    rejects = _rejects(tmp_path / "out")
    assert {(d.meta["reject_reason"], d.meta["reject_step"]) for d in rejects} == {("wordy", "MaxWords")}
    assert report["rejected"]["wordy"]["count"] == 2
    # the same in two worker processes (the step is imported there)
    run_data_stage(DataConfig(**{**cfg.data.__dict__, "workers": 2}), tmp_path / "out2", progress=False)
    assert [d.text for d in iter_clean_documents(tmp_path / "out2")] == ["another calm one."]
    sys.modules.pop("my_filters", None)


@pytest.mark.parametrize("spec, msg", [
    ("nocolon", r"data.extra_steps\[0\].*must be 'module:Class'"),
    ("no_such_module_xyz:F", r"data.extra_steps\[0\]: cannot import 'no_such_module_xyz'"),
    ("json:NoSuchThing", r"data.extra_steps\[0\]: 'json' has no 'NoSuchThing'"),
    ("json:JSONDecoder", r"data.extra_steps\[0\]: JSONDecoder is not a data step"),
])
def test_bad_extra_steps_are_config_errors(tmp_path, spec, msg):
    with pytest.raises(ConfigError, match=msg):
        run_data_stage(DataConfig(inputs=[str(_corpus(tmp_path / "c"))], extra_steps=[spec]), tmp_path / "o",
                       progress=False)
