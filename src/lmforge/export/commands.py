"""CLI subcommand `lmforge export`."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    from lmforge.export.hf import export_run

    summary = export_run(args.run_dir, args.out, checkpoint=args.checkpoint, fmt=args.format, force=args.force)
    print(f"Exported {summary['architecture']} ({summary['params']:,} parameters) to {summary['out']}")
    print(f"  files: {', '.join(summary['files'])}")
    print(f"  load with: AutoModelForCausalLM.from_pretrained({summary['out']!r}); "
          f"AutoTokenizer.from_pretrained({summary['out']!r})")
    return 0


def register(subparsers) -> None:
    """Add `export` to the `lmforge` parser."""
    p = subparsers.add_parser("export", help="write a Hugging Face transformers folder (config, weights, tokenizer)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", default="hf", choices=["hf"], help="export format (hf = transformers)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default RUN_DIR/export/hf)")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|newest|PATH")
    p.add_argument("--force", action="store_true",
                   help="replace the contents of a non-empty --out folder (never the run directory)")
    p.set_defaults(func=cmd_export)
