"""`hf:` inputs: a save_to_disk dataset and a folder of data files read through the data stage, split
by shard between ranks; offline, a dataset that is not here is a clear error."""

from __future__ import annotations

import json
import time

import pytest

from lmforge.data.config import DataConfig
from lmforge.data.document import iter_clean_documents
from lmforge.data.executor import run_data_stage
from lmforge.errors import DataError

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _texts(n):
    return [f"Row {i} of the dataset talks about topic {i * 7 % 11} at some length." for i in range(n)]


def test_save_to_disk_dataset_split_by_shard(tmp_path):
    texts = _texts(20)
    ds = datasets.Dataset.from_dict({"body": texts, "url": [f"u{i}" for i in range(20)], "key": list(range(20))})
    ds.save_to_disk(str(tmp_path / "ds"), num_shards=3)
    outs = {}
    for workers in (1, 2):
        cfg = DataConfig(inputs=[f"hf:{tmp_path / 'ds'}"], text_field="body", id_field="key", plots=False,
                         workers=workers)
        report = run_data_stage(cfg, tmp_path / f"out{workers}", progress=False)
        assert report["sources"] == 3 and report["documents_out"] == 20
        outs[workers] = [(d.id, d.text, d.meta["url"]) for d in iter_clean_documents(tmp_path / f"out{workers}")]
    assert outs[1] == outs[2] == [(str(i), t, f"u{i}") for i, t in enumerate(texts)]


def test_folder_of_data_files_streamed(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    texts = _texts(6)
    for i in range(2):
        rows = [{"text": t} for t in texts[3 * i: 3 * i + 3]] + ([{"text": None}] if i == 1 else [])
        (d / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_data_stage(DataConfig(inputs=[f"hf:{d}"], plots=False), tmp_path / "out", progress=False)
    assert [x.text for x in iter_clean_documents(tmp_path / "out")] == texts
    assert report["sources"] == 2 and report["rejected"]["missing_field"]["count"] == 1


def test_missing_dataset_offline_is_a_message(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="hf:no-such-user/no-such-dataset .*nothing is downloaded offline"):
        run_data_stage(DataConfig(inputs=["hf:no-such-user/no-such-dataset"]), tmp_path / "out", progress=False)
    assert time.perf_counter() - t0 < 30


def test_dataset_dict_names_its_splits(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b c"]}),
                               "test": datasets.Dataset.from_dict({"text": ["d e f"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"holds several splits \(train, test\).*hf:.*/dd/train"):
        run_data_stage(DataConfig(inputs=[f"hf:{tmp_path / 'dd'}"]), tmp_path / "out", progress=False)
    report = run_data_stage(DataConfig(inputs=[f"hf:{tmp_path / 'dd' / 'test'}"], plots=False), tmp_path / "o2",
                            progress=False)
    assert report["documents_out"] == 1


def test_a_changed_local_dataset_reruns_the_data_stage(tmp_path):
    """`lmforge run` fingerprints an `hf:` folder like any input folder: new rows rebuild the data stage."""
    from lmforge import run
    from lmforge.config import load_config

    d = tmp_path / "files"
    d.mkdir()
    (d / "part-0.jsonl").write_text(json.dumps({"text": _texts(1)[0]}) + "\n")
    cfg = load_config(None, [f"data.inputs=[hf:{d}@train]", "data.plots=false", "train.progress=false"])
    assert run.run_data(cfg, tmp_path / "run") is True
    assert run.run_data(cfg, tmp_path / "run") is False  # unchanged: skipped
    (d / "part-1.jsonl").write_text(json.dumps({"text": _texts(2)[1]}) + "\n")
    assert run.run_data(cfg, tmp_path / "run") is True
    assert len(list(iter_clean_documents(tmp_path / "run" / "data"))) == 2
