"""Named held-out sets in `lmforge eval`: every set of `eval.sets` built in RUN/eval_sets/ is scored
document by document (`lmforge.eval.scoring`: lm-evaluation-harness definitions, the whole set),
next to the run's own validation split, so the report has one table per set:

    report["sets"] = {"split": {...}, "<name>": {"loss", "perplexity", "bpb", "tokens", "docs", ...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.eval.config import SPLIT_SET, EvalConfig
from lmforge.eval.scoring import evaluate_dataset


def set_report_names(run_dir: Path, cfg: EvalConfig, configured: bool) -> tuple[list[str], list[str]]:
    """(names to score, configured names that are not built). With the run's config, its `eval.sets`;
    without it, every set built in RUN/eval_sets/."""
    from lmforge.tokens.evalsets import set_names

    built = set_names(run_dir)
    if not configured:
        return built, []
    return [n for n in cfg.sets if n in built], [n for n in cfg.sets if n not in built]


def score_sets(model, tokenizer, run_dir: Path, cfg: EvalConfig, *, configured: bool = True) -> dict[str, Any]:
    """{"sets": {name: figures}, "sets_missing": [...]} for the named sets (not the split)."""
    from lmforge.tokens.evalsets import open_eval_set

    names, missing = set_report_names(Path(run_dir), cfg, configured)
    out: dict[str, Any] = {}
    for name in names:
        ds = open_eval_set(run_dir, name, fingerprint=tokenizer.fingerprint)
        res = evaluate_dataset(model, ds, tokenizer=tokenizer, batch_size=cfg.batch_size)
        out[name] = {k: res.get(k) for k in ("loss", "perplexity", "bpb", "word_perplexity", "tokens", "bytes",
                                               "docs")}
    result: dict[str, Any] = {"sets": out}
    if missing:
        result["sets_missing"] = missing
    return result


def with_split(report: dict[str, Any], select_by: str) -> None:
    """Add the run's own split to `report["sets"]` (as `split`) and record which set selects `best`."""
    if "val_loss" not in report:
        return
    split = {"loss": report["val_loss"], "perplexity": report.get("val_ppl"), "bpb": report.get("val_bpb"),
             "word_perplexity": report.get("val_word_ppl"), "tokens": report.get("val_tokens"),
             "bytes": report.get("val_bytes"), "docs": report.get("val_docs")}
    report["sets"] = {SPLIT_SET: split, **report.get("sets", {})}
    report["select_by"] = select_by
