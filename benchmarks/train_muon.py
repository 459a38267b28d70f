"""Muon against AdamW at equal wall time, each at its own tuned learning rate, on two corpora:

* Tiny Shakespeare (char level, configs/shakespeare-char.yaml): trained on the first 90% of the
  file, scored on nanoGPT's split -- the last 10%, as one continuous token stream cut into
  consecutive windows of the context length (every token predicted once);
* the quickstart corpus (`builtin:stdlib`, configs/quickstart.yaml): lmforge's own validation split,
  scored whole.

Every run gets the same time budget (`train.max_time`, no step budget: the schedule decays over the
budget). Runs take turns AdamW / Muon, so load from other processes falls on both alike. AdamW sweeps
`train.lr`; Muon sweeps `train.muon_lr` (its AdamW part keeps the config's `train.lr`).

    python benchmarks/train_muon.py              # Shakespeare 60 s, quickstart 90 s per run, 3 rates each
    python benchmarks/train_muon.py --seconds 30 --corpus shakespeare

Both corpora use `train.warmup_steps=10` for both optimisers (the configs' 50 would fill a short budget).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from lmforge.config import load_config
from lmforge.data.builtin import builtin_text_path
from lmforge.train.build import train

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = Path(builtin_text_path("builtin:shakespeare"))  # shipped with lmforge
COMMON = ["train.progress=false", "train.warmup_steps=10",
          "monitor.tensorboard=false", "monitor.plots=false", "monitor.system_every=0",
          "train.max_steps=0", "train.eval_every=0", "train.ckpt_every=0", "eval.num_samples=0"]
SWEEP = {"adamw": ("train.lr", [1e-3, 2e-3, 4e-3]), "muon": ("train.muon_lr", [0.01, 0.02, 0.04])}


def prepare(config: Path, overrides: list[str], run_dir: Path):
    from lmforge.run import prepare_run_dir, run_data, run_tokenize, run_tokenizer

    cfg = load_config(config, COMMON + overrides + ["train.max_time=1"])  # a budget, for the config check
    prepare_run_dir(cfg, run_dir)
    run_data(cfg, run_dir)
    run_tokenizer(cfg, run_dir)
    run_tokenize(cfg, run_dir)
    return cfg


def stream_loss(run_dir: Path, text: str) -> float:
    """Mean cross-entropy of `text` as one stream, in consecutive windows of the context length."""
    from lmforge.checkpoint import load_for_inference

    model, tok, _ = load_for_inference(run_dir, "latest")
    ids = torch.tensor(tok.encode(text))
    T = model.cfg.block_size
    n = (ids.numel() - 1) // T
    x, y = ids[:n * T].view(n, T), ids[1:n * T + 1].view(n, T)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 64):
            logits = model(x[i:i + 64])
            total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i:i + 64].flatten(),
                                                       reduction="sum").item()
    return total / (n * T)


def one_run(config: Path, base: Path, work: Path, name: str, overrides: list[str], score) -> dict:
    run_dir = work / name
    run_dir.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(base / sub, run_dir / sub)
    cfg = load_config(config, COMMON + overrides)
    summary = train(cfg, run_dir)
    return {"steps": summary["step"], "score": score(run_dir, summary)}


def corpus_table(name: str, config: Path, overrides: list[str], score, seconds: float, work: Path) -> list[dict]:
    base = work / f"{name}-base"
    prepare(config, overrides, base)
    rows = []
    n = len(SWEEP["adamw"][1])
    for i in range(n):  # interleaved: adamw lr_i, muon lr_i, ...
        for opt, (key, rates) in SWEEP.items():
            tag = f"{name}-{opt}-{i}"
            ovr = overrides + [f"train.optimizer={opt}", f"{key}={rates[i]}", f"train.max_time={seconds}"]
            r = one_run(config, base, work, tag, ovr, score)
            rows.append({"corpus": name, "optimizer": opt, "key": key, "rate": rates[i], **r})
            print(f"{name:<12} {opt:<6} {key}={rates[i]:<7g} steps {r['steps']:>5}  score {r['score']:.4f}",
                  flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="training wall time per Shakespeare run")
    p.add_argument("--quickstart-seconds", type=float, default=90.0, help="training wall time per quickstart run")
    p.add_argument("--corpus", choices=["both", "shakespeare", "quickstart"], default="both")
    a = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(ROOT)
        if a.corpus in ("both", "shakespeare"):
            if not SHAKESPEARE.is_file():
                print(f"train_muon: {SHAKESPEARE} not found: Shakespeare skipped")
            else:
                text = SHAKESPEARE.read_text(encoding="utf-8")
                cut = int(len(text) * 0.9)  # nanoGPT's prepare.py: first 90% train, last 10% val
                (work / "train90.txt").write_text(text[:cut], encoding="utf-8")
                val = text[cut:]
                rows += corpus_table("shakespeare", ROOT / "configs" / "shakespeare-char.yaml",
                                     [f"data.inputs=[{work / 'train90.txt'}]", "tokens.val_fraction=0.02"],
                                     lambda d, s: stream_loss(d, val), a.seconds, work)
        if a.corpus in ("both", "quickstart"):
            rows += corpus_table("quickstart", ROOT / "configs" / "quickstart.yaml",
                                 ["train.eval_batches=0"],
                                 lambda d, s: s["val_loss"], a.quickstart_seconds, work)
    print(f"\nMuon vs AdamW at equal training wall time per run (Shakespeare {a.seconds:g} s, quickstart "
          f"{a.quickstart_seconds:g} s); val loss, lower is better")
    print(f"{'corpus':<12} {'optimizer':<9} {'rate':<20} {'steps':>6} {'val loss':>9}")
    for r in rows:
        print(f"{r['corpus']:<12} {r['optimizer']:<9} {r['key'] + '=' + format(r['rate'], 'g'):<20} {r['steps']:>6} "
              f"{r['score']:>9.4f}")
    print(f"\n{'corpus':<12} {'best adamw':>22} {'best muon':>22} {'muon - adamw':>13}")
    for corpus in dict.fromkeys(r["corpus"] for r in rows):
        best = {o: min((r for r in rows if r["corpus"] == corpus and r["optimizer"] == o), key=lambda r: r["score"])
                for o in SWEEP}
        d = best["muon"]["score"] - best["adamw"]["score"]
        print(f"{corpus:<12} {best['adamw']['score']:>9.4f} (lr {best['adamw']['rate']:g}) "
              f"{best['muon']['score']:>9.4f} (lr {best['muon']['rate']:g}) {d:>+13.4f}"
              + ("" if math.isfinite(d) else " (not finite)"))


if __name__ == "__main__":
    main()
