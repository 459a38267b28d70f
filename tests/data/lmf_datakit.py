"""Shared by the executor tests: a small corpus and a byte-level comparison of two data outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lmforge.data.filters.base import Filter

TIMING = ("seconds", "docs_per_second", "rank_peak_rss_mb")


def write_corpus(d: Path, files: int = 5, paras: int = 6) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        body = [f"File {i} paragraph {j} says " + " ".join(hashlib.md5(f"{i}-{j}-{k}".encode()).hexdigest()[:7]
                                                          for k in range(12)) + "." for j in range(paras)]
        if i in (1, 3):
            body.append("A paragraph that appears in two files, so only its first copy is kept.")
        body.append("x")  # too short with min_chars=5: a reject in every file
        (d / f"f{i}.txt").write_text("\n\n".join(body) + "\n")
    (d / "g.jsonl").write_text('{"text": "json doc number one here"}\n{broken\n')
    return d


def normalized_report(out: Path, ignore_steps: tuple[str, ...] = ()) -> dict:
    """report.json without its timings (and without the steps named in `ignore_steps`)."""
    rep = json.loads((out / "report.json").read_text())
    for k in TIMING:
        rep.pop(k, None)
    rep["steps"] = [s for s in rep["steps"] if s["name"] not in ignore_steps]
    for s in rep["steps"]:
        s.pop("seconds", None)
    return rep


def output_files(out: Path) -> dict[str, bytes]:
    """Every clean and rejected shard, by relative path, with its bytes."""
    files = sorted(out.glob("clean-*.jsonl.zst")) + sorted((out / "rejected").glob("*.jsonl.zst"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def assert_same_output(a: Path, b: Path, ignore_steps: tuple[str, ...] = ()) -> None:
    fa, fb = output_files(a), output_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs"
    assert normalized_report(a, ignore_steps) == normalized_report(b, ignore_steps)



class Boom(Filter):
    """An extra step that raises on the documents of one input file (importable, so it pickles)."""

    name = "boom"

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, doc):
        if self.needle in doc.meta.get("source", ""):
            raise ValueError(f"boom in {doc.id}")
        return True


def record_threads(out: str, *, rank: int, world_size: int) -> bool:
    """A rank task that records the tokenizer thread count its process was given."""
    import os

    Path(out, f"threads-{rank}.txt").write_text(os.environ.get("RAYON_NUM_THREADS", "unset"))
    return True


def read_threads(out: str) -> list[str]:
    return [p.read_text() for p in sorted(Path(out).glob("threads-*.txt"))]
