"""HTML main-text extraction quality on shared/data/html (trafilatura's own snippet benchmark).

For each page, expected.json lists snippets the main text must contain (`with`) and boilerplate it
must not (`without`). As in trafilatura's tests/comparison.py: a `with` snippet found is a true
positive, missed a false negative; a `without` snippet found is a false positive. Whitespace is
normalised on both sides (the data README's rule). Pages are decoded by lmforge's HTML reader (declared
charset honoured), so the numbers measure what the data stage really does.

    python benchmarks/data_html_extraction.py [--data ../shared/data/html]

Reference (measured on these 40 pages): trafilatura defaults F1 0.919 (P 0.885, R 0.956); naive all-text 0.618.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from _shared import SHARED_DATA, require

from lmforge.data.extract import extract_resiliparse, extract_selectolax, extract_trafilatura
from lmforge.data.readers import ReadOptions, read_source


def norm(s: str) -> str:
    return " ".join(s.split())


def score(pages: list[tuple[str, str | None, dict]], fn: Callable[[str, str | None], str]) -> dict[str, float]:
    tp = fn_ = fp = 0
    t0 = time.perf_counter()
    for html, url, item in pages:
        text = norm(fn(html, url) or "")
        for s in item["with"]:
            if norm(s) in text:
                tp += 1
            else:
                fn_ += 1
        fp += sum(norm(s) in text for s in item["without"])
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn_)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-9, p + r),
            "pages_per_s": len(pages) / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED_DATA / "html"))
    args = ap.parse_args()
    data = require(args.data)
    expected = json.loads((data / "expected.json").read_text())
    pages = []
    for key, item in expected.items():
        (doc,) = read_source(str(data / item["file"]), ReadOptions())
        pages.append((doc.text, key if key.startswith("http") else None, item))
    methods = {
        "naive: all text nodes (baseline)": lambda h, u: extract_selectolax(h, drop=("script", "style", "noscript")),
        "selectolax minus page chrome": lambda h, u: extract_selectolax(h),
        "trafilatura, lmforge default (no comments)": lambda h, u: extract_trafilatura(h, url=u),
        "trafilatura, with comments (its default)": lambda h, u: extract_trafilatura(h, url=u, comments=True),
        "trafilatura, favor precision": lambda h, u: extract_trafilatura(h, url=u, favor="precision"),
        "resiliparse main content (DCLM)": lambda h, u: extract_resiliparse(h),
    }
    print(f"{len(pages)} pages, {sum(len(i['with']) for _, _, i in pages)} with / "
          f"{sum(len(i['without']) for _, _, i in pages)} without snippets\n")
    print(f"{'method':46s} {'P':>6s} {'R':>6s} {'F1':>6s} {'pages/s':>8s} {'F1 / baseline':>14s} "
          f"{'speed / trafilatura':>20s}")
    base = None
    results = {name: score(pages, fn) for name, fn in methods.items()}
    traf = results["trafilatura, lmforge default (no comments)"]["pages_per_s"]
    for name, r in results.items():
        base = base or r["f1"]
        print(f"{name:46s} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['pages_per_s']:8.1f} "
              f"{r['f1'] / base:13.2f}x {r['pages_per_s'] / traf:19.2f}x")


if __name__ == "__main__":
    main()
