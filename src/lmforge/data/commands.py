"""CLI for the data side: `lmforge classifier train`, and the sbatch scripts that `lmforge data|tokenize
--dry-run` print when the stage's executor is `slurm`."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import yaml


def cmd_classifier_train(args: argparse.Namespace) -> int:
    from lmforge.data.classifier import train_classifier

    r = train_classifier(args.positive, args.negative, args.out, label=args.label, negative_label=args.negative_label,
                         text_field=args.text_field, val_fraction=args.val_fraction, epoch=args.epoch, lr=args.lr,
                         seed=args.seed)
    acc = "n/a (nothing held out)" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
    print(f"classifier: {r['positive']} positive / {r['negative']} negative documents; trained on {r['train']}, "
          f"held out {r['held_out']}: accuracy {acc}, precision {r['precision']}, recall {r['recall']}")
    print(f"  model: {r['model']} (use: data.classifier.model={r['model']} data.classifier.label={args.label})")
    if args.json:
        print(json.dumps(r))
    return 0


def slurm_scripts(resolved: dict, run_dir: Path, stage: str) -> str | None:
    """The sbatch scripts of `stage` (`data` or `tokenize`) when its executor is slurm, else None.
    `resolved`: the run's resolved config as a dict (what --dry-run prints)."""
    from lmforge.configtools import build_section
    from lmforge.data.config import SlurmConfig
    from lmforge.data.executors.slurm import sbatch_scripts

    section = resolved.get("data" if stage == "data" else "tokens") or {}
    if section.get("executor") != "slurm":
        return None
    world = section.get("workers" if stage == "data" else "ranks", 1)
    slurm = build_section(SlurmConfig, section.get("slurm") or {}, f"{stage}.slurm")
    out = run_dir / ("data" if stage == "data" else "tokens")
    return sbatch_scripts(stage, world, out / "_slurm", slurm)


def _with_sbatch_dry_run(func):
    """Wraps the `data`/`tokenize` command: with --dry-run and executor slurm, also print the sbatch scripts
    (read back from the resolved config the dry run prints, so this module needs no upper layer)."""

    def cmd(args: argparse.Namespace) -> int:
        if not getattr(args, "dry_run", False):
            return func(args)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = func(args)
        text = buf.getvalue()
        print(text, end="")
        first, _, body = text.partition("\n")
        if first.startswith("# run directory: "):
            scripts = slurm_scripts(yaml.safe_load(body) or {}, Path(first.removeprefix("# run directory: ")),
                                    args.command)
            if scripts:
                print(scripts, end="")
        return rc

    return cmd


def register(subparsers) -> None:
    """Add `classifier train`; teach `data`/`tokenize --dry-run` to print the sbatch scripts."""
    p = subparsers.add_parser("classifier", help="train a fastText content classifier for data.classifier")
    sub = p.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    t = sub.add_parser("train", help="train on positive and negative example files; prints held-out accuracy")
    t.add_argument("--positive", nargs="+", required=True, metavar="FILES", help="files/dirs/globs of wanted text")
    t.add_argument("--negative", nargs="+", required=True, metavar="FILES", help="files/dirs/globs of unwanted text")
    t.add_argument("--out", type=Path, required=True, metavar="MODEL", help="where to write the fastText model")
    t.add_argument("--label", default="hq", help="label of the positive class (default hq)")
    t.add_argument("--negative-label", default="lq", help="label of the negative class (default lq)")
    t.add_argument("--text-field", default="text", help="JSONL/parquet field holding the text")
    t.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (by text hash)")
    t.add_argument("--epoch", type=int, default=25)
    t.add_argument("--lr", type=float, default=0.1, help="learning rate (higher can diverge to NaN on small data)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="also print the result as JSON")
    t.set_defaults(func=cmd_classifier_train)
    for name in ("data", "tokenize"):
        stage = subparsers.choices.get(name)
        if stage is not None:
            stage.set_defaults(func=_with_sbatch_dry_run(stage.get_default("func")))
