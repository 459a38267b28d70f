"""Which source each token document came from: recorded by the tokens stage, read by `tokens.mix`.

`sources-<split>.npy` holds one uint32 per document of the split, in shard order, indexing
`manifest["sources"]["names"]` (the distinct values of the documents' `tokens.mix_field`). numpy
only, so the tokenize workers stay light.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from lmforge.errors import DataError
from lmforge.io import atomic_write_bytes


class SourceTags:
    """Per-split list of source ids, in the order documents are written (used by tokens/stage.py)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.names: dict[str, int] = {}
        self.ids: dict[str, list[int]] = {"train": [], "val": []}

    def tag(self, meta: dict[str, Any]) -> int:
        value = meta.get(self.field)
        name = "" if value is None else str(value)
        return self.names.setdefault(name, len(self.names))

    def extend(self, split: str, tags: list[int]) -> None:
        self.ids[split].extend(tags)

    def save_unit(self, folder: Any, suffix: str) -> list[str]:
        """One rank task's tags for one clean shard: sources-<split>-<suffix>.npy in `folder`; returns
        the names the ids index (for `merge_unit`)."""
        from pathlib import Path

        for split, ids in self.ids.items():
            np.save(Path(folder) / f"sources-{split}-{suffix}.npy", np.asarray(ids, dtype=np.uint32))
        return list(self.names)

    def merge_unit(self, folder: Any, suffix: str, names: list[str]) -> None:
        """Append what `save_unit` wrote, its ids mapped onto this table's names."""
        from pathlib import Path

        remap = np.asarray([self.names.setdefault(n, len(self.names)) for n in names] or [0], dtype=np.int64)
        for split in self.ids:
            ids = np.load(Path(folder) / f"sources-{split}-{suffix}.npy", allow_pickle=False)
            self.ids[split].extend(remap[ids.astype(np.int64)].tolist())

    def move(self, src_split: str, index: int, dst_split: str) -> None:
        """The stage moved document `index` of `src_split` to the end of `dst_split`."""
        self.ids[dst_split].append(self.ids[src_split].pop(index))

    def write(self, out_dir: Any) -> dict[str, Any]:
        """Write sources-<split>.npy; returns the manifest entry."""
        import io

        from lmforge.io import sha256_file

        entry: dict[str, Any] = {"field": self.field, "names": list(self.names), "splits": {}}
        for split, ids in self.ids.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(ids, dtype=np.uint32))
            path = out_dir / f"sources-{split}.npy"
            atomic_write_bytes(path, buf.getvalue())
            counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(self.names))
            entry["splits"][split] = {"file": path.name, "docs": len(ids), "sha256": sha256_file(path),
                                      "docs_by_source": {n: int(counts[i]) for n, i in self.names.items()}}
        return entry


def read_sources(tokens_dir: Any, split: str, manifest: dict[str, Any], num_docs: int) -> tuple[list[str], np.ndarray]:
    """(source names, per-document source index) of a split, checked against the manifest."""
    from pathlib import Path

    info = manifest.get("sources")
    if not info or split not in info.get("splits", {}):
        raise DataError(f"{Path(tokens_dir) / 'manifest.json'} records no document sources (tokens made before "
                        "tokens.mix existed); rerun `lmforge tokenize` (or `lmforge run`) to use tokens.mix")
    path = Path(tokens_dir) / info["splits"][split]["file"]
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the document sources ({e}); rerun `lmforge tokenize`") from None
    if ids.ndim != 1 or len(ids) != num_docs or (len(ids) and int(ids.max()) >= len(info["names"])):
        raise DataError(f"{path}: {len(ids)} source ids for {num_docs} documents (or an id out of range); "
                        "delete the tokens directory and rerun `lmforge tokenize`")
    return list(info["names"]), ids.astype(np.int64)


def assign_groups(mix: dict[str, float], names: list[str], field: str) -> list[int]:
    """Group (index of the `mix` key) of each source name; DataError for unmatched sources or keys."""
    keys = list(mix)
    group = []
    for name in names:
        g = next((i for i, k in enumerate(keys) if k == name or fnmatch.fnmatchcase(name, k)), None)
        group.append(-1 if g is None else g)
    lost = [n for n, g in zip(names, group) if g < 0]
    if lost:
        raise DataError(f"tokens.mix: documents whose meta {field!r} is {', '.join(repr(x) for x in lost[:5])}"
                        f"{' ...' if len(lost) > 5 else ''} match no key; add them (weight 0 leaves them out) or a "
                        f"catch-all \"*\". Keys: {', '.join(keys)}")
    unused = [k for i, k in enumerate(keys) if i not in group]
    if unused:
        raise DataError(f"tokens.mix: key(s) {', '.join(repr(k) for k in unused)} match no document source; the "
                        f"sources ({field!r}) are: {', '.join(repr(n) for n in names[:10])}")
    return group
