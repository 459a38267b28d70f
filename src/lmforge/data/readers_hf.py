"""Hugging Face `datasets` as input: `data.inputs: ["hf:PATH"]` (or `hf:PATH@SPLIT`, default `train`).

PATH is a `save_to_disk` folder (read with `load_from_disk`, memory-mapped), or anything
`load_dataset` reads locally — a folder of data files (parquet/json/csv/txt), or a dataset already in
the HF cache — read streaming. The dataset's shards (its arrow files, or its data files when streamed)
become one source each (`hf:PATH#I`), so ranks split a dataset like files. Nothing is downloaded
unless the environment allows it; offline, a dataset that is not here is a DataError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.data.document import Document, json_safe
from lmforge.errors import ConfigError, DataError

HF_PREFIX = "hf:"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ConfigError("data.inputs: hf: inputs need the datasets package: pip install 'lmforge[hf]'") from e
    datasets.disable_progress_bars()
    return datasets


def _parse(spec: str) -> tuple[str, str, int | None]:
    """`hf:PATH[@SPLIT][#SHARD]` -> (PATH, SPLIT, SHARD)."""
    rest = spec[len(HF_PREFIX):]
    shard = None
    if "#" in rest:
        rest, _, s = rest.rpartition("#")
        shard = int(s)
    path, _, split = rest.partition("@") if "@" in rest and not Path(rest).exists() else (rest, "", "")
    return path, split or "train", shard


def _open(path: str, split: str) -> tuple[Any, int, bool]:
    """(dataset, number of shards, streamed?)"""
    datasets = _datasets()
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        splits = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
        raise DataError(f"data.inputs: hf:{path} holds several splits ({', '.join(splits)}): "
                        f"use hf:{path}/SPLIT, e.g. hf:{path}/{splits[0] if splits else 'train'}")
    if (p / "state.json").is_file() and (p / "dataset_info.json").is_file():
        ds = datasets.load_from_disk(str(p))
        return ds, max(1, len(json.loads((p / "state.json").read_text()).get("_data_files", []))), False
    try:
        ds = datasets.load_dataset(path, split=split, streaming=True)
    except (ConnectionError, FileNotFoundError, ValueError) as e:
        raise DataError(f"data.inputs: hf:{path} (split {split}) is not a save_to_disk folder, a local folder of "
                        f"data files or a dataset in the local Hugging Face cache, and nothing is downloaded "
                        f"offline: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    return ds, max(1, ds.num_shards), True


def hf_sources(spec: str) -> list[str]:
    """The sources of `hf:PATH`: one per shard of the dataset."""
    path, split, _ = _parse(spec)
    _, n, _ = _open(path, split)
    return [f"{spec}#{i}" for i in range(n)]


def read_hf(source: str, text_field: str, id_field: str | None, reject: Any) -> Iterator[Document]:
    """Rows of one shard as Documents; a row without a string `text_field` goes to `reject(doc, reason,
    detail)` (which applies `data.on_error`)."""
    path, split, shard = _parse(source)
    ds, n, streamed = _open(path, split)
    part = ds.shard(num_shards=n, index=shard or 0) if streamed else ds.shard(n, shard or 0, contiguous=True)
    if not streamed and text_field not in ds.column_names:
        d = Document(f"{source}:schema", "", {"source": source, "line": 0, "columns": ds.column_names})
        yield reject(d, "missing_field", f"no column {text_field!r} (columns: {', '.join(ds.column_names[:10])}; "
                                         "see data.text_field)")
        return
    for row, rec in enumerate(part, 1):
        rec = dict(rec)
        text = rec.pop(text_field, None)
        doc_id = rec.pop(id_field, None) if id_field else None
        meta = {k: json_safe(v) for k, v in rec.items()}
        meta.update(source=source, line=row, hf_shard=shard or 0)
        d = Document(str(doc_id) if doc_id is not None else f"{source}:{row}", text if isinstance(text, str) else "",
                     meta)
        if not isinstance(text, str):
            yield reject(d, "missing_field", f"text field {text_field!r} is missing or not a string")
            continue
        yield d

