"""Named held-out sets (`eval.sets`): their documents read and cleaned like the data stage's, encoded
with the run's tokenizer as the tokens stage encodes (`<bos>`? + text + `<eos>`), written as a
one-split ("val") token directory per set:

    RUN/eval_sets/<name>/val-00000.bin|.idx, manifest.json     (open_split(dir, "val") reads it)

Training scores them in the loop (`val/<name>/loss|ppl|bpb`), `lmforge eval` in its report. This
module lives in `tokens` so both may use it (train never imports eval).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError
from lmforge.io import atomic_write_json, reset_dir
from lmforge.tokens.shards import MANIFEST, TokenShardWriter, open_split, split_summary

SETS_DIR = "eval_sets"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
SPLIT = "val"


def set_documents(name: str, inputs: list[str], *, txt_mode: str = "paragraphs", text_field: str = "text",
                  clean: dict[str, bool] | None = None, counts: dict[str, int] | None = None) -> Iterator[Any]:
    """Documents of one set: the data stage's readers and cleaning chain (no filters, no dedup:
    a held-out set is what the user says it is). Unreadable records and documents empty after
    cleaning are counted in `counts` (`rejected`, `empty`), never silently dropped."""
    from lmforge.data.clean import clean_text
    from lmforge.data.readers import ReadOptions, expand_inputs, read_source
    from lmforge.tokens.split import join_continuations

    counts = counts if counts is not None else {}
    try:
        sources = expand_inputs(list(inputs))
    except DataError as e:
        raise ConfigError(f"config key 'eval.sets.{name}.inputs': {e}") from None
    problems: list[str] = []
    opts = ReadOptions(txt_mode=txt_mode, text_field=text_field, warn=problems.append)

    def docs() -> Iterator[Any]:
        for src in sources:
            for d in read_source(src, opts):
                if d.meta.get("reject_reason"):
                    counts["rejected"] = counts.get("rejected", 0) + 1
                    continue
                d.text = clean_text(d.text, **(clean or {}))
                if not d.text.strip():
                    counts["empty"] = counts.get("empty", 0) + 1
                    continue
                yield d

    yield from join_continuations(docs())
    if problems:
        counts["problems"] = problems[:5]  # type: ignore[assignment]


def build_eval_set(name: str, inputs: list[str], tokenizer: Any, out_dir: Path, *, txt_mode: str = "paragraphs",
                   text_field: str = "text", clean: dict[str, bool] | None = None, add_bos: bool = False,
                   shard_tokens: int = 100_000_000) -> dict[str, Any]:
    """Tokenize one named set into `out_dir` (emptied first); returns its manifest."""
    from lmforge.tokens.stage import encode_docs

    if not NAME_RE.match(name):
        raise ConfigError(f"config key 'eval.sets': set name {name!r} must be letters, digits, _ . - (max 64)")
    reset_dir(out_dir)
    writer = TokenShardWriter(out_dir, SPLIT, shard_tokens=shard_tokens, fingerprint=tokenizer.fingerprint,
                              vocab_size=tokenizer.vocab_size)
    counts: dict[str, Any] = {}
    def write(texts: list[str]) -> None:
        flat, lengths = encode_docs(tokenizer, texts, add_bos)
        starts = [0, *lengths.cumsum().tolist()]
        for i, t in enumerate(texts):
            writer.add(flat[starts[i]:starts[i + 1]], len(t.encode("utf-8", "surrogatepass")))

    try:
        batch: list[str] = []
        for d in set_documents(name, inputs, txt_mode=txt_mode, text_field=text_field, clean=clean, counts=counts):
            batch.append(d.text)
            if len(batch) == 256:
                write(batch)
                batch = []
        if batch:
            write(batch)
    except BaseException:
        writer.abort()
        raise
    records = writer.close()
    if not records:
        raise DataError(f"eval.sets.{name}: no documents in {', '.join(inputs)} (rejected {counts.get('rejected', 0)}, "
                        f"empty after cleaning {counts.get('empty', 0)}); check the inputs and "
                        f"eval.sets.{name}.txt_mode / text_field")
    manifest = {"format": "lmforge-tokens", "version": 1, "set": name, "inputs": list(inputs), "txt_mode": txt_mode,
                "tokenizer_fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
                "eos_id": tokenizer.eos_id, "bos_id": tokenizer.bos_id, "add_bos": add_bos,
                "rejected": counts.get("rejected", 0), "empty_after_cleaning": counts.get("empty", 0),
                "splits": {SPLIT: split_summary(records, 1 + int(add_bos))}}
    atomic_write_json(out_dir / MANIFEST, manifest)
    return manifest


def set_names(run_dir: Path) -> list[str]:
    """Names of the complete named sets of a run (those with a manifest), sorted."""
    root = Path(run_dir) / SETS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file() and NAME_RE.match(p.name))


def open_eval_set(run_dir: Path, name: str, *, fingerprint: str | None = None, mmap: bool = True):
    """The TokenDataset of set `name` (validated like any token split)."""
    d = Path(run_dir) / SETS_DIR / name
    if not (d / MANIFEST).is_file():
        raise DataError(f"eval set {name!r}: {d / MANIFEST} is missing; run `lmforge run CONFIG` (it builds "
                        f"eval.sets) or check the name (built: {', '.join(set_names(run_dir)) or 'none'})")
    return open_split(d, SPLIT, fingerprint=fingerprint, mmap=mmap)
