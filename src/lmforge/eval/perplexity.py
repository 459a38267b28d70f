"""The eval stage: validation loss, perplexity, bits-per-byte and a unigram baseline for a run.

    report = evaluate_run(Path("runs/quickstart"), checkpoint="best")   # writes eval/report.{json,md}

Definitions (sums over the whole split, as lm-evaluation-harness) live in `lmforge.eval.scoring`.
The unigram baseline is a model that ignores context: token frequencies counted on the train
split (add-one smoothed over the vocabulary), scored on exactly the validation tokens the model is
scored on. A trained model must sit far below it; one that does not has learned nothing but
token frequencies.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import ConfigError, LmforgeError
from lmforge.eval.config import EvalConfig
from lmforge.eval.scoring import evaluate_dataset_docs
from lmforge.eval.stratify import encode_like_tokens_stage, stratified_scores, val_documents
from lmforge.monitor.convergence import overfitting_verdict, run_history

CHUNK = 1 << 22  # tokens per read when counting


def token_counts(dataset, vocab_size: int, end: int | None = None) -> np.ndarray:
    """Occurrences of each token id in tokens [0, end) of a TokenDataset (chunked, memory-flat)."""
    end = dataset.num_tokens if end is None else end
    counts = np.zeros(vocab_size, np.int64)
    for s in range(0, end, CHUNK):
        counts += np.bincount(dataset.read(s, min(end, s + CHUNK)), minlength=vocab_size)[:vocab_size]
    return counts


def unigram_baseline(train_counts: np.ndarray, eval_counts: np.ndarray,
                     nbytes: int | None) -> dict[str, float] | None:
    """Loss (nats/token), perplexity and bpb of the add-one smoothed unigram model fitted on
    `train_counts`, on tokens with histogram `eval_counts`; None when there is no token to score
    (e.g. `max_batches` ended inside the first validation document)."""
    V = len(train_counts)
    logp = np.log(train_counts + 1.0) - math.log(float(train_counts.sum()) + V)
    nll = float(-(eval_counts * logp).sum())
    n = int(eval_counts.sum())
    if n == 0:
        return None
    out = {"loss": nll / n, "perplexity": math.exp(nll / n), "tokens": n}
    if nbytes:
        out["bpb"] = nll / (nbytes * math.log(2))
    return out


def scored_token_counts(dataset, n_docs: int, vocab_size: int, bos_id: int | None) -> np.ndarray:
    """Histogram of the tokens `evaluate_dataset` predicts in the first `n_docs` documents: all of
    them except a document's leading <bos> (it is the prefix, never predicted)."""
    counts = token_counts(dataset, vocab_size, int(dataset.doc_starts[n_docs]))
    if bos_id is not None and 0 <= bos_id < vocab_size and counts[bos_id] > 0:
        starts = dataset.doc_starts[:n_docs]
        starts = starts[np.diff(dataset.doc_starts[:n_docs + 1]) > 0]
        firsts = np.array([dataset.read(int(s), int(s) + 1)[0] for s in starts], dtype=np.int64)
        counts[bos_id] -= int((firsts == bos_id).sum())
    return counts


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_config(run_dir: Path, info: Any = None, warnings: list[str] | None = None):
    """The sections of the run's resolved config that evaluation reads (`.eval`, `.tokens`), from
    config.yaml, else the checkpoint's copy; or None. A config written by another lmforge version
    that no longer validates is not fatal for evaluation: the reason goes to `warnings` and
    defaults are used."""
    import types

    import yaml

    from lmforge.configtools import build_section
    from lmforge.tokens.config import TokensConfig

    def sections(data: Any) -> types.SimpleNamespace:
        if not isinstance(data, dict):
            raise ConfigError("the config must be a mapping of sections")
        return types.SimpleNamespace(eval=build_section(EvalConfig, data.get("eval") or {}, "eval"),
                                     tokens=build_section(TokensConfig, data.get("tokens") or {}, "tokens"))

    sources = []
    path = run_dir / "config.yaml"
    if path.is_file():
        sources.append((str(path), lambda: yaml.safe_load(path.read_text(encoding="utf-8"))))
    if isinstance(info, dict) and isinstance(info.get("config"), dict):
        sources.append(("the checkpoint's config", lambda: info["config"]))
    for name, load in sources:
        try:
            return sections(load())
        except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as e:
            if warnings is not None:
                warnings.append(f"{name} could not be used ({e}); eval defaults apply")
    return None


def evaluate_model_on_run(model, tokenizer, run_dir: Path, cfg: EvalConfig) -> tuple[dict[str, Any], tuple]:
    """Validation figures and the unigram baseline for an already loaded model; also returns
    (val split, per-document scores) for the strata."""
    from lmforge.tokens.shards import open_split

    tokens_dir = run_dir / "tokens"
    if not tokens_dir.is_dir():
        raise LmforgeError(f"{tokens_dir} does not exist: run `lmforge tokenize` first, or pass --data FILE")
    val = open_split(tokens_dir, "val", fingerprint=tokenizer.fingerprint)
    res, scores = evaluate_dataset_docs(model, val, tokenizer=tokenizer, batch_size=cfg.batch_size,
                                        max_batches=cfg.max_batches)
    report: dict[str, Any] = {
        "val_loss": res["loss"], "val_ppl": res["perplexity"], "val_bpb": res.get("bpb"),
        "val_word_ppl": res.get("word_perplexity"), "val_tokens": res["tokens"], "val_bytes": res.get("bytes"),
        "val_words": res.get("words"), "val_docs": res["docs"], "val_docs_total": res["docs_total"],
    }
    train = open_split(tokens_dir, "train", fingerprint=tokenizer.fingerprint)
    V = model.cfg.vocab_size
    uni = unigram_baseline(token_counts(train, V), scored_token_counts(val, res["docs"], V, tokenizer.bos_id),
                           res.get("bytes"))
    if uni is not None:  # the baseline scores the documents the model scored whole
        report["unigram"] = uni
        report["loss_below_unigram"] = uni["loss"] - res["loss"]
    return report, (val, scores)


def read_documents(path: Path, text_field: str = "text", txt_mode: str = "paragraphs",
                   problems: list[str] | None = None) -> tuple[list[Any], int]:
    """Documents of a plain-text (one per blank-line-separated block by default) or JSONL file,
    with the data stage's readers. Returns (documents, rejected records); the readers' messages
    about bad records go to `problems` instead of the terminal."""
    from lmforge.data.readers import ReadOptions, read_source
    from lmforge.tokens.split import join_continuations

    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"--data {path}: no such file")
    docs, rejected = [], 0
    sink = problems.append if problems is not None else (lambda _msg: None)
    for d in read_source(str(path), ReadOptions(txt_mode=txt_mode, text_field=text_field, warn=sink)):
        if d.meta.get("reject_reason") or not d.text.strip():
            rejected += 1
        else:
            docs.append(d)
    docs = list(join_continuations(docs))  # txt_mode continuous: one document per text
    if not docs:
        raise LmforgeError(f"--data {path}: no readable documents (rejected {rejected}); expected plain text or "
                           f"JSONL with a '{text_field}' field")
    return docs, rejected


def evaluate_file(model, tokenizer, path: Path, cfg: EvalConfig, *, add_bos: bool = False,
                  txt_mode: str = "paragraphs") -> dict[str, Any]:
    """Loss, perplexity, bpb and word perplexity of the documents of one file, with strata."""
    problems: list[str] = []
    docs, rejected = read_documents(path, txt_mode=txt_mode, problems=problems)
    res = stratified_scores(model, tokenizer, docs, fields=cfg.stratify_by, edges=cfg.length_buckets,
                            add_bos=add_bos, batch_size=cfg.batch_size, max_groups=cfg.max_strata)
    return {"path": str(path), "rejected_records": rejected, "reject_examples": problems[:5], **res["overall"],
            "strata": res["strata"]}


def _val_strata(model, tokenizer, run_dir: Path, run_cfg, cfg: EvalConfig, report: dict[str, Any],
                split_scores: tuple) -> None:
    """Strata of the validation documents, re-read from the clean data (skipped without it)."""
    from lmforge.data.document import clean_shards

    data_dir = run_dir / "data"
    if run_cfg is None:
        report["strata_note"] = "the run's config (tokens.val_fraction, split_seed) is unavailable: strata skipped"
        return
    if not data_dir.is_dir() or not clean_shards(data_dir):
        report["strata_note"] = "no clean data in the run directory: strata skipped"
        return
    t = run_cfg.tokens
    docs = val_documents(data_dir, val_fraction=t.val_fraction, split_seed=t.split_seed,
                          val_split=t.val_split)
    if report.get("val_docs") is not None:
        docs = docs[:report["val_docs"]]  # the documents the split figures cover (eval.max_batches)
    encoded = encode_like_tokens_stage(tokenizer, docs, t.add_bos)
    val, scores = split_scores
    # The split's per-document scores are reused when the clean documents are, token for token,
    # the split's documents in the same order (the usual case); otherwise they are scored again.
    same = len(encoded) == report.get("val_docs") and all(
        np.array_equal(np.asarray(e), val.doc(i)) for i, e in enumerate(encoded))
    res = stratified_scores(model, tokenizer, docs, fields=cfg.stratify_by, edges=cfg.length_buckets,
                            add_bos=t.add_bos, batch_size=cfg.batch_size, max_groups=cfg.max_strata,
                            encoded=encoded, scores=scores if same else None)
    report["strata"] = res["strata"]
    report["strata_scores"] = "reused from the split" if same else "re-scored from the clean data"
    total = res["overall"]
    # Same documents, same encoding: the strata add up to the split figures (a cross-check).
    report["strata_match_val_split"] = bool(total["tokens"] == report.get("val_tokens") and math.isclose(
        total["nll_sum"], report.get("val_loss", math.nan) * total["tokens"], rel_tol=1e-4))


def _reference_model(spec: str | None, device: str):
    """(model, tokenizer) of the fluency reference `RUN_DIR[:checkpoint]`, or None (= self)."""
    if not spec:
        return None
    from lmforge.checkpoint import load_for_inference

    path, _, which = spec.rpartition(":") if ":" in spec and not Path(spec).is_dir() else (spec, "", "")
    if not Path(path).is_dir():
        raise LmforgeError(f"eval.fluency_reference: run directory {path} does not exist")
    model, tok, _ = load_for_inference(Path(path), which or "best", device)
    if tok is None:
        raise LmforgeError(f"eval.fluency_reference: {path} has no tokenizer")
    return model, tok


def _samples_and_diversity(model, tokenizer, run_dir: Path, cfg: EvalConfig, step, device: str) -> dict[str, Any]:
    """Generate cfg.report_samples samples into eval/samples.jsonl; diversity and rating figures."""
    from lmforge.eval.diversity import diversity_metrics
    from lmforge.eval.samples import make_samples, ratings_summary, write_samples

    reference = _reference_model(cfg.fluency_reference, device)
    samples = make_samples(model, tokenizer, cfg, cfg.report_samples, reference=reference, step=step)
    path = run_dir / "eval" / "samples.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_samples(path, samples)  # keeps earlier ratings of unchanged samples
    div = diversity_metrics([s["text"] for s in samples], [s["tokens"] for s in samples],
                            [s["fluency_ppl"] for s in samples])
    div["fluency_reference"] = cfg.fluency_reference or "the evaluated model itself"
    div["sampling"] = ", ".join(f"{k}={v}" for k, v in samples[0]["settings"].items()) if samples else ""
    return {"diversity": div, "ratings": ratings_summary(samples)}


def _overfitting(run_dir: Path, cfg: EvalConfig) -> dict[str, Any] | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    val, train = run_history(path)
    return overfitting_verdict(val, train, cfg.overfit_patience)


def evaluate_run(run_dir: Path, *, checkpoint: str = "best", cfg: EvalConfig | None = None,
                 device: str | None = None, data: Path | None = None, txt_mode: str = "paragraphs",
                 tasks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a run's checkpoint on its validation split (and on the file `data`, if given);
    writes eval/report.json and report.md.

    Returns the report dict (`val_loss`, `val_ppl`, `val_bpb`, `unigram`, `sets`, `data`, `tasks`, ...).
    Prints nothing. Without token shards but with `data` or `tasks`, only those are evaluated.
    `tasks`: keyword arguments of `lmforge.eval.lmeval.run_tasks` (`tasks`, `include_path`, `limit`,
    `num_fewshot`): lm-evaluation-harness benchmarks, in `report["tasks"]`."""
    from lmforge.checkpoint import check_tokens, load_for_inference
    from lmforge.eval.report import write_report

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmforgeError(f"run directory {run_dir} does not exist")
    model, tokenizer, info = load_for_inference(run_dir, checkpoint, device or _default_device())
    check_tokens(info, run_dir / "tokens")  # trained on these shards, or the val split may hold train docs
    warnings: list[str] = []
    run_cfg = run_config(run_dir, info, warnings)
    cfg = cfg or (run_cfg.eval if run_cfg is not None else EvalConfig())
    if tokenizer is None:
        raise LmforgeError(f"{run_dir}/tokenizer is missing: cannot evaluate without the run's tokenizer")
    report: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": _info_summary(checkpoint, info),
                              "model": {"params": model.num_params(), "block_size": model.cfg.block_size,
                                        "vocab_size": model.cfg.vocab_size}}
    if warnings:
        report["warnings"] = warnings
    if (run_dir / "tokens").is_dir() or (data is None and not tasks):
        figures, split_scores = evaluate_model_on_run(model, tokenizer, run_dir, cfg)
        report.update(figures)
        if cfg.stratify:
            _val_strata(model, tokenizer, run_dir, run_cfg, cfg, report, split_scores)
    _named_sets(model, tokenizer, run_dir, cfg, run_cfg is not None, report)
    if tasks:
        from lmforge.eval.lmeval import run_tasks

        report["tasks"] = run_tasks(model, tokenizer, batch_size=cfg.batch_size, **tasks)
    if data is not None:
        add_bos = bool(run_cfg is not None and run_cfg.tokens.add_bos)
        report["data"] = evaluate_file(model, tokenizer, Path(data), cfg, add_bos=add_bos, txt_mode=txt_mode)
    overfit = _overfitting(run_dir, cfg)
    if overfit is not None:
        report["overfitting"] = overfit
    if cfg.report_samples > 0:
        step = info.get("step") if isinstance(info, dict) else None
        report.update(_samples_and_diversity(model, tokenizer, run_dir, cfg, step, device or _default_device()))
    write_report(run_dir / "eval", report)
    return report


def _named_sets(model, tokenizer, run_dir: Path, cfg: EvalConfig, configured: bool, report: dict[str, Any]) -> None:
    """`report["sets"]`: the run's split and every named set (`eval.sets`), one table each."""
    from lmforge.eval.sets import score_sets, with_split

    report.update(score_sets(model, tokenizer, run_dir, cfg, configured=configured))
    with_split(report, cfg.select_by)
    if not report["sets"]:
        report.pop("sets")


def _info_summary(which: str, info: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"which": str(which)}
    if isinstance(info, dict):
        for k in ("step", "path", "val_loss", "tokens_seen"):
            if k in info:
                out[k] = info[k] if isinstance(info[k], (int, float, str)) or info[k] is None else str(info[k])
    return out
