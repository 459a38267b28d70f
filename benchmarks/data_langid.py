"""Language-ID accuracy of the data stage's identifier (py3langid, norm_probs) on shared/data/langid.

Each line of `<lang>.txt` is one sentence (Leipzig corpora via lingua-py's test set). Prints accuracy per
language, overall accuracy, the effect of the `min_score` threshold (how many sentences fall under it),
and throughput, next to a trivial baseline (always answering the most common language).

    python benchmarks/data_langid.py [--data ../shared/data/langid] [--min-score 0.65]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from _shared import SHARED_DATA, require

from lmforge.data.filters.language import identify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED_DATA / "langid"))
    ap.add_argument("--min-score", type=float, default=0.65)
    args = ap.parse_args()
    rows = []
    for p in sorted(require(args.data).glob("*.txt")):
        rows += [(p.stem, line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    identify("warm up")
    t0 = time.perf_counter()
    preds = [identify(text) for _, text in rows]
    dt = time.perf_counter() - t0
    per = Counter()
    total = Counter(lang for lang, _ in rows)
    confused: Counter = Counter()
    low = 0
    for (lang, _), (pred, score) in zip(rows, preds):
        per[lang] += pred == lang
        low += score < args.min_score
        if pred != lang:
            confused[(lang, pred)] += 1
    print(f"{'lang':6s} {'n':>5s} {'accuracy':>9s}")
    for lang in sorted(total):
        print(f"{lang:6s} {total[lang]:5d} {per[lang] / total[lang]:9.3f}")
    acc = sum(per.values()) / len(rows)
    baseline = max(total.values()) / len(rows)
    print(f"\noverall accuracy {acc:.3f} on {len(rows)} sentences (majority-class baseline {baseline:.3f}; "
          f"{acc / baseline:.1f}x)")
    print(f"below min_score {args.min_score}: {low} sentences ({low / len(rows):.1%})")
    print(f"throughput: {len(rows) / dt:,.0f} sentences/s, {sum(len(t) for _, t in rows) / dt / 1e6:.2f} MB/s")
    print("most common confusions:", ", ".join(f"{a}->{b} {n}" for (a, b), n in confused.most_common(5)))


if __name__ == "__main__":
    main()
