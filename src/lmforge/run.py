"""Chains the stages for `lmforge run`, owning the run directory.

Each stage writes into its own folder of the run directory. Before a stage runs, its fingerprint
(its config section plus the fingerprint of the stage before it, and for the data stage the input
files' names, sizes and modification times) is compared with the one in the folder's `_SUCCESS.json`
marker: equal → skipped; different or missing → the folder is emptied and the stage runs; the marker
is written last. So a crashed pipeline resumes where it stopped and a changed config reruns exactly
the stages it affects. Training resumes from its newest complete checkpoint instead of starting
over (see `lmforge.train.trainer`).

Every stage that writes holds the run lock (RUN_DIR/train.lock; `lmforge run` holds it throughout),
so a second process cannot rebuild tokens/ under a training run. On a run that already has
checkpoints, changed inputs or config of data/tokenizer/tokenize are refused before anything is
rebuilt (the checkpoints would no longer match their data). A run stopped by SIGTERM/SIGINT saves its
checkpoint and returns without the evaluation; the next `lmforge run` continues it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from lmforge.config import Config, dump_config, fingerprint, to_dict
from lmforge.errors import LmforgeError
from lmforge.io import (
    atomic_write_text,
    free_bytes,
    human_bytes,
    is_complete,
    out_of_space,
    read_marker,
    reset_dir,
    tree_bytes,
    write_marker,
)


def _say(msg: str) -> None:
    print(f"[lmforge] {msg}", file=sys.stderr, flush=True)


def default_run_dir(cfg: Config) -> Path:
    return Path("runs") / cfg.name


def prepare_run_dir(cfg: Config, run_dir: Path) -> Path:
    """Create the run directory and write the resolved config to RUN_DIR/config.yaml (left alone
    when unchanged: a full disk then cannot stop a resume before it has cleaned up)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LmforgeError(f"run directory {run_dir} is a file: pass a directory (it is created if missing)")
    run_dir.mkdir(parents=True, exist_ok=True)
    from lmforge.checkpoint import clean_partial

    for p in clean_partial(run_dir / "checkpoints"):  # callers hold the run lock: no writer is active
        _say(f"removed incomplete checkpoint {p} (interrupted write)")
    text, path = dump_config(cfg), run_dir / "config.yaml"
    try:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        atomic_write_text(path, text)
    return run_dir


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager:
    """The run's lock for a stage that writes (re-entrant in one process; under torchrun rank 0
    holds it, as training does)."""
    from lmforge.train.lock import RunLock

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return RunLock(run_dir)


def _input_fingerprint(inputs: list[str]) -> list[Any]:
    """Names, sizes and mtimes of the input files: a changed input reruns the data stage."""
    out: list[Any] = []
    for spec in inputs:
        if spec.startswith("builtin:"):
            out.append([spec, sys.version])
            continue
        if spec.startswith("hf:"):  # hf:PATH[@SPLIT]: a local dataset folder or files count like any input
            local = spec[3:].split("#", 1)[0]
            local = local if Path(local).exists() else local.rpartition("@")[0] or local
            if not Path(local).exists():  # a dataset in the HF cache: its name (the cache is not watched)
                out.append([spec, "hf-cache"])
                continue
            spec = local
        paths = [Path(spec)] if Path(spec).exists() else [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        files: list[Path] = []
        for p in paths:
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() or q.is_symlink()) if p.is_dir() else [p])
        for f in files:
            try:
                st = f.stat()
            except OSError as e:  # a broken symlink: the data stage rejects it with the reason
                out.append([str(f), f"unreadable: {e.strerror}"])
                continue
            out.append([str(f), st.st_size, st.st_mtime_ns])
        if not files:
            out.append([spec, None])
    return out


def _reference_fingerprint(cfg: Config) -> Any:
    """The perplexity filter's reference checkpoint, when one is set: a retrained or moved reference
    reruns the data stage and, through the chained fingerprints, every later stage."""
    ppl = cfg.data.perplexity
    if not (ppl.enabled and ppl.model):
        return None
    from lmforge.eval.docscore import reference_identity

    try:
        return reference_identity(ppl.model)
    except LmforgeError:  # missing: the data stage itself names the problem if it has to run
        return {"missing": str(ppl.model)}


def _tokenizer_source(cfg: Config) -> Any:
    """A pretrained tokenizer's content: an edited source reruns the tokenizer stage and what follows."""
    if cfg.tokenizer.kind != "pretrained" or not cfg.tokenizer.path:
        return None
    from lmforge.tokenizer.pretrained import source_identity

    try:
        return source_identity(cfg.tokenizer.path)
    except LmforgeError:  # missing: the tokenizer stage names the problem if it has to run
        return {"missing": str(cfg.tokenizer.path)}


def _stage_fingerprints(cfg: Config) -> dict[str, str]:
    fps: dict[str, str] = {}
    fps["data"] = fingerprint(cfg.data, _input_fingerprint(cfg.data.inputs), _reference_fingerprint(cfg))
    fps["tokenizer"] = fingerprint(cfg.tokenizer, fps["data"], _tokenizer_source(cfg))
    # tokens.mix only steers the loader: changing the weights retrains, it does not re-tokenize
    fps["tokenize"] = fingerprint(dataclasses.replace(cfg.tokens, mix={}), fps["tokenizer"])
    fps["train"] = fingerprint(cfg.model, cfg.train, cfg.tokens.mix, fps["tokenize"])
    sets = {name: [s, _input_fingerprint(s.inputs)] for name, s in cfg.eval.sets.items()}
    fps["eval_sets"] = fingerprint(sets, _clean_options(cfg), cfg.tokens.add_bos, fps["tokenizer"])
    return fps


def _clean_options(cfg: Config) -> dict[str, bool]:
    """The data stage's cleaning chain, applied to the named eval sets too."""
    d = cfg.data
    return {"fix": d.fix_unicode, "nfc": d.normalize_unicode, "control": d.strip_control,
            "whitespace": d.normalize_whitespace}


def _run_stage(name: str, out_dir: Path, fp: str, fn, force: bool) -> bool:
    with run_lock(out_dir.parent):
        if not force and is_complete(out_dir, fp):
            _say(f"{name}: up to date, skipped ({out_dir})")
            return False
        _say(f"{name}: running → {out_dir}")
        try:
            # _work/ holds rank tasks' outputs with their own fingerprinted markers: a rerun after a
            # crash skips the ranks that finished (a changed config or input redoes them)
            reset_dir(out_dir, keep=("_work",))
            fn()
            write_marker(out_dir, fp, stage=name)
        except OSError as e:
            if not out_of_space(e):
                raise
            written = tree_bytes(out_dir)
            shutil.rmtree(out_dir, ignore_errors=True)  # partial output: removed, and its space freed
            raise LmforgeError(
                f"out of disk space in the {name} stage writing {e.filename or out_dir}: it had written "
                f"{human_bytes(written)} of {out_dir} when the disk filled, so it needs more than that; "
                f"{human_bytes(free_bytes(out_dir.parent))} free now. The partial output was removed: free space "
                f"and rerun") from None
        return True


_STAGE_DIRS = (("data", "data", "data.inputs or data.*"), ("tokenizer", "tokenizer", "tokenizer.*"),
               ("tokenize", "tokens", "tokens.*"))


def refuse_changed_inputs(cfg: Config, run_dir: Path) -> None:
    """On a run that holds checkpoints, a data, tokenizer or tokenize stage whose inputs or config
    changed would be rebuilt and only then would training refuse (its checkpoints were trained on
    the old tokens): refuse first, with nothing touched."""
    from lmforge.checkpoint import list_checkpoints

    existing = list_checkpoints(run_dir / "checkpoints", "any")
    if not existing:
        return
    fps = _stage_fingerprints(cfg)
    for stage, folder, keys in _STAGE_DIRS:
        marker = read_marker(run_dir / folder)
        if marker is not None and marker.get("fingerprint") != fps[stage]:
            raise LmforgeError(
                f"{run_dir} holds a trained model ({existing[0][1].name} in checkpoints/), but the {stage} stage's "
                f"inputs or config ({keys}) changed since it was built: rebuilding {folder}/ would leave checkpoints "
                f"that no longer match their data. To train on the new inputs, start a new run: add --run-dir "
                f"runs/NEW_NAME (or name=NEW_NAME); to continue this run, restore the config and inputs it was "
                f"built with (see {run_dir / 'config.yaml'}). Nothing was changed")


def _require(run_dir: Path, stage: str, folder: str) -> None:
    if read_marker(run_dir / folder) is None:
        raise LmforgeError(f"{run_dir / folder} is missing or incomplete: run `lmforge {stage}` "
                           f"(or `lmforge run CONFIG`) with --run-dir {run_dir} first")


def run_data(cfg: Config, run_dir: Path, *, force: bool = False) -> bool:
    from lmforge.data.executor import run_data_stage

    out = run_dir / "data"
    fp = _stage_fingerprints(cfg)["data"]
    lm = None
    ppl = cfg.data.perplexity
    if ppl.enabled and ppl.model:  # the data stage may not import the model: inject a loader (checked now)
        from lmforge.eval.docscore import doc_scorer_factory

        workers = cfg.data.workers  # worker processes share the cores
        threads = ppl.threads or (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None)
        lm = doc_scorer_factory(ppl.model, device=ppl.device, batch_size=ppl.batch_size, threads=threads)
    return _run_stage("data", out, fp, lambda: run_data_stage(cfg.data, out, progress=cfg.train.progress,
                                                              perplexity_lm=lm), force)


def run_tokenizer(cfg: Config, run_dir: Path, *, force: bool = False) -> bool:
    from lmforge.data.document import iter_clean_documents
    from lmforge.tokenizer import train_tokenizer

    _require(run_dir, "data", "data")
    out = run_dir / "tokenizer"
    texts = (d.text for d in iter_clean_documents(run_dir / "data"))
    fp = _stage_fingerprints(cfg)["tokenizer"]
    return _run_stage("tokenizer", out, fp, lambda: train_tokenizer(cfg.tokenizer, texts, out), force)


def run_tokenize(cfg: Config, run_dir: Path, *, force: bool = False) -> bool:
    from lmforge.tokens.stage import run_tokenize_stage

    _require(run_dir, "data", "data")
    _require(run_dir, "tokenizer", "tokenizer")
    out = run_dir / "tokens"
    fp = _stage_fingerprints(cfg)["tokenize"]
    return _run_stage("tokenize", out, fp, lambda: run_tokenize_stage(
        cfg.tokens, run_dir / "data", run_dir / "tokenizer", out, progress=cfg.train.progress), force)


def run_eval_sets(cfg: Config, run_dir: Path, *, force: bool = False) -> bool:
    """Tokenize `eval.sets` into RUN/eval_sets/<name>/ (skipped when none are set or unchanged)."""
    if not cfg.eval.sets:
        return False
    from lmforge.tokenizer import load_tokenizer
    from lmforge.tokens.evalsets import SETS_DIR, build_eval_set

    _require(run_dir, "tokenizer", "tokenizer")
    out = run_dir / SETS_DIR

    def build() -> None:
        tok = load_tokenizer(run_dir / "tokenizer")
        for name, s in cfg.eval.sets.items():
            man = build_eval_set(name, s.inputs, tok, out / name, txt_mode=s.txt_mode, text_field=s.text_field,
                                 clean=_clean_options(cfg), add_bos=cfg.tokens.add_bos)
            v = man["splits"]["val"]
            _say(f"eval set {name}: {v['docs']} docs, {v['tokens']} tokens"
                 + (f", {man['rejected']} unreadable record(s) skipped" if man["rejected"] else ""))

    return _run_stage("eval sets", out, _stage_fingerprints(cfg)["eval_sets"], build, force)


def run_train(cfg: Config, run_dir: Path, *, resume: str | None = None) -> dict[str, Any]:
    _require(run_dir, "tokenize", "tokens")
    from lmforge.train.build import train
    from lmforge.train.distributed import destroy

    extra = []
    if cfg.eval.tasks and cfg.eval.tasks_every:  # lm-eval benchmarks in the loop (train may not import eval)
        from lmforge.eval.lmeval import TasksCallback
        from lmforge.tokenizer import load_tokenizer

        extra.append(TasksCallback(cfg.eval, load_tokenizer(run_dir / "tokenizer")))
    try:
        return train(cfg, run_dir, resume=resume, extra_callbacks=extra)
    finally:
        destroy()  # under torchrun: release the process group train() leaves for its callers


def run_all(cfg: Config, run_dir: Path, *, samples: bool = True) -> dict[str, Any]:
    """All stages in order; complete ones are skipped, training resumes from its last checkpoint."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise LmforgeError(f"run directory {run_dir} is a file: pass a directory (it is created if missing)")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with run_lock(Path(run_dir)):
        refuse_changed_inputs(cfg, Path(run_dir))
        return _run_all(cfg, prepare_run_dir(cfg, run_dir), samples=samples)


def _run_all(cfg: Config, run_dir: Path, *, samples: bool) -> dict[str, Any]:
    run_data(cfg, run_dir)
    run_tokenizer(cfg, run_dir)
    run_tokenize(cfg, run_dir)
    run_eval_sets(cfg, run_dir)

    train_dir = run_dir / "checkpoints"
    fp = _stage_fingerprints(cfg)["train"]
    summary: dict[str, Any]
    if is_complete(train_dir, fp):
        _say(f"train: up to date, skipped ({train_dir})")
        summary = {"skipped": True}
    else:
        resume = "auto" if (train_dir / "latest").exists() else None
        if resume:
            _say("train: resuming from the newest complete checkpoint")
        _say(f"train: running → {train_dir}")
        summary = run_train(cfg, run_dir, resume=resume)
        if summary.get("completed", True):
            write_marker(train_dir, fp, stage="train")
        else:  # SIGTERM/SIGINT: the checkpoint is written; the evaluation would not be asked for now
            _say(f"train: interrupted ({summary.get('stopped_by')}) at step {summary.get('step')}; checkpoint "
                 f"{summary.get('checkpoint')} saved. Evaluation skipped; rerun the same command to continue")
            return {"run_dir": str(run_dir), "train": summary, "interrupted": True}

    from lmforge.eval.perplexity import evaluate_run

    _say("eval: running → " + str(run_dir / "eval"))
    report = evaluate_run(run_dir, checkpoint="best", cfg=cfg.eval)
    if cfg.monitor.trackers:  # the eval report and samples join the training run in W&B / MLflow / trackio
        from lmforge.monitor.trackers import log_eval

        log_eval(run_dir, cfg.monitor, to_dict(cfg))
    result: dict[str, Any] = {"run_dir": str(run_dir), "train": summary, "eval": report}
    if samples:
        result["samples"] = sample_texts(cfg, run_dir)
    return result


def sample_texts(cfg: Config, run_dir: Path) -> list[dict[str, str]]:
    from lmforge.checkpoint import load_for_inference
    from lmforge.infer.generate import generate

    model, tok, _ = load_for_inference(run_dir, "best")
    e = cfg.eval
    prompts = [e.prompts[i % len(e.prompts)] for i in range(e.num_samples)]
    outs = generate(model, tok, prompts, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                    top_k=e.top_k, top_p=e.top_p, min_p=e.min_p, repetition_penalty=e.repetition_penalty,
                    seed=e.seed)
    return [{"prompt": p, "text": o} for p, o in zip(prompts, outs)]


def with_run_name(cfg: Config, run_dir: Path | None) -> Path:
    return Path(run_dir) if run_dir is not None else default_run_dir(cfg)


def cpu_threads_hint() -> None:
    """A single process should use every core (torchrun sets OMP_NUM_THREADS=1 per process)."""
    if "OMP_NUM_THREADS" not in os.environ and "LOCAL_RANK" not in os.environ:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)


__all__ = ["prepare_run_dir", "run_all", "run_data", "run_eval_sets", "run_tokenizer", "run_tokenize", "run_train",
           "sample_texts", "with_run_name"]
