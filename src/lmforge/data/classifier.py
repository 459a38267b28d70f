"""Content classifiers in fastText's format (the format of DCLM/FineWeb-style quality classifiers).

    lmforge classifier train --positive good/ --negative cc/ --out quality.bin   # held-out accuracy printed
    data.classifier: {enabled: true, model: quality.bin, label: hq, min_score: 0.5}

Training reads the examples with the data stage's readers (txt paragraphs, JSONL, parquet, ...), holds
out `val_fraction` of each class (chosen by a hash of the text, so deterministic) and trains
fastText's supervised model on the rest (word bigrams, `bucket` hashed n-gram rows so the model stays
small). fastText reads one example per line: newlines become spaces, as in `score_text`.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError

_WS = re.compile(r"\s+")
LABEL_PREFIX = "__label__"


def import_fasttext() -> Any:
    try:
        import fasttext
    except ImportError as e:
        raise ConfigError("content classification needs fastText: pip install 'lmforge[classifier]' "
                          "(the fasttext-numpy2 build)") from e
    fasttext.FastText.eprint = lambda *a, **k: None  # its load-time warning about the deprecated API
    return fasttext


def one_line(text: str) -> str:
    """What fastText sees of a document: whitespace runs (newlines included) become one space."""
    return _WS.sub(" ", text).strip()


def label_name(label: str) -> str:
    return label if label.startswith(LABEL_PREFIX) else LABEL_PREFIX + label


def _texts(inputs: list[str], text_field: str) -> list[str]:
    from lmforge.data.readers import ReadOptions, expand_inputs, read_source

    out = []
    for src in expand_inputs(inputs):
        for doc in read_source(src, ReadOptions(text_field=text_field, warn=lambda _m: None)):
            if "reject_reason" not in doc.meta and (t := one_line(doc.text)):
                out.append(t)
    return out


def _held_out(text: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return h / 2.0**64 < fraction


def train_classifier(positive: list[str], negative: list[str], out: str | Path, *, label: str = "hq",
                     negative_label: str = "lq", text_field: str = "text", val_fraction: float = 0.1,
                     epoch: int = 25, lr: float = 0.1, word_ngrams: int = 2, dim: int = 32, bucket: int = 10_000,
                     seed: int = 0) -> dict[str, Any]:
    """Train on the documents of `positive` (label `label`) vs `negative`; write the model to `out`
    (atomically) and return held-out accuracy, precision and recall of `label`."""
    fasttext = import_fasttext()
    pos, neg = _texts(positive, text_field), _texts(negative, text_field)
    if not pos or not neg:
        raise DataError(f"classifier train needs documents of both classes (positive: {len(pos)}, negative: "
                        f"{len(neg)}); check --positive/--negative and --text-field")
    lab, nlab = label_name(label), label_name(negative_label)
    rows = [(lab, t) for t in pos] + [(nlab, t) for t in neg]
    train = [r for r in rows if not _held_out(r[1], val_fraction)]
    val = [r for r in rows if _held_out(r[1], val_fraction)]
    random.Random(seed).shuffle(train)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text("".join(f"{lab_} {t}\n" for lab_, t in train), encoding="utf-8")
        params = dict(epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim, bucket=bucket, minCount=1, thread=1,
                      seed=seed, verbose=0)
        tmp_out = out.with_name(out.name + ".tmp")
        _train_fresh(str(path), str(tmp_out), params)
    model = fasttext.load_model(str(tmp_out))
    os.replace(tmp_out, out)
    return {"model": str(out), "label": lab, "train": len(train), "held_out": len(val),
            "positive": len(pos), "negative": len(neg), **_scores(model, val, lab)}


def _train_worker(path: str, out: str, params: dict[str, Any]) -> None:
    import_fasttext().train_supervised(input=path, **params).save_model(out)


def _train_fresh(path: str, out: str, params: dict[str, Any], attempts: int = 3) -> None:
    """Train in a fresh process: the fastText build sometimes stops with "Encountered NaN" in a process
    that has done other work (seen after other tests ran in the same process, at any lr), never in a
    new one so far; a NaN is retried in another new process."""
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(attempts):
        with ctx.Pool(1) as pool:
            try:
                pool.apply(_train_worker, (path, out, params))
                return
            except RuntimeError as e:
                if "NaN" not in str(e) or attempt == attempts - 1:
                    raise DataError(f"classifier training failed ({e}); try a lower --lr") from e


def _scores(model: Any, val: list[tuple[str, str]], lab: str) -> dict[str, float | None]:
    if not val:
        return {"accuracy": None, "precision": None, "recall": None}
    pred = [model.predict(t, k=1)[0][0] for _, t in val]
    tp = sum(p == lab and y == lab for (y, _), p in zip(val, pred))
    n_pred, n_true = sum(p == lab for p in pred), sum(y == lab for y, _ in val)
    return {"accuracy": round(sum(p == y for (y, _), p in zip(val, pred)) / len(val), 4),
            "precision": round(tp / n_pred, 4) if n_pred else None,
            "recall": round(tp / n_true, 4) if n_true else None}


class FastTextScorer:
    """P(label | text) under a fastText model file."""

    def __init__(self, path: str | Path, label: str) -> None:
        fasttext = import_fasttext()
        if not Path(path).is_file():
            raise ConfigError(f"data.classifier.model: {path} does not exist (train one with "
                              "`lmforge classifier train --positive ... --negative ... --out MODEL`)")
        try:
            self.model = fasttext.load_model(str(path))
        except ValueError as e:
            raise ConfigError(f"data.classifier.model: {path} is not a fastText model ({e})") from e
        self.label = label_name(label)
        labels = self.model.get_labels()
        if self.label not in labels:
            raise ConfigError(f"data.classifier.label: {label!r} is not a label of {path} "
                              f"(labels: {', '.join(x.removeprefix(LABEL_PREFIX) for x in labels)})")
        self.k = len(labels)

    def score(self, text: str) -> float:
        labels, probs = self.model.predict(one_line(text), k=self.k)
        return float(dict(zip(labels, probs)).get(self.label, 0.0))
