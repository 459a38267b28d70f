"""`lmforge` command line: one thin function per subcommand.

Pipeline commands live here; evaluation (`eval`, `generate`, `rate`), export and monitoring
(`dashboard`, `plot`) register their own subcommands through a `register(subparsers)` function in
`lmforge.eval.commands`, `lmforge.export.commands` and `lmforge.monitor.commands`.

User errors (`LmforgeError`) print one message and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
import time
from pathlib import Path

from lmforge import __version__
from lmforge.config import Config, dump_config, load_config
from lmforge.errors import LmforgeError

COMMAND_MODULES = ("lmforge.eval.commands", "lmforge.export.commands", "lmforge.monitor.commands",
                   "lmforge.data.commands")


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    from lmforge.run import with_run_name

    cfg = load_config(args.config, args.overrides)
    run_dir = with_run_name(cfg, args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LmforgeError(f"--run-dir {run_dir} is a file: pass a directory (it is created if missing)")
    return cfg, run_dir


def _dry_run(cfg: Config, run_dir: Path) -> int:
    print(f"# run directory: {run_dir}")
    print(dump_config(cfg), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lmforge.run import cpu_threads_hint, run_all

    cfg, run_dir = _load(args)
    if args.dry_run:
        return _dry_run(cfg, run_dir)
    cpu_threads_hint()
    t0 = time.time()
    result = run_all(cfg, run_dir)
    if result.get("interrupted"):
        print(f"Interrupted after {time.time() - t0:.0f} s; continue with the same command.")
        return 0
    _print_summary(result, time.time() - t0)
    return 0


def _print_summary(result: dict, wall: float) -> None:
    run_dir = Path(result["run_dir"])
    ev = result.get("eval", {})
    print()
    for s in result.get("samples", []):
        print(f"--- sample (prompt {s['prompt']!r}) ---")
        print(s["prompt"] + s["text"])
    print()
    print(f"Finished in {wall:.0f} s.")
    if ev:
        nan = float("nan")
        line = f"Validation: loss {ev.get('val_loss', nan):.4f} nats/token, ppl {ev.get('val_ppl', nan):.2f}"
        if ev.get("val_bpb") is not None:
            line += f", {ev['val_bpb']:.4f} bits/byte"
        print(line)
        for name, st in (ev.get("sets") or {}).items():
            if name != "split":
                print(f"Held-out set {name}: loss {st.get('loss', nan):.4f}, ppl {st.get('perplexity', nan):.2f}, "
                      f"{st.get('bpb') or nan:.4f} bits/byte")
        uni = ev.get("unigram") or {}
        if uni:
            print(f"Unigram baseline (token frequencies only): loss {uni.get('loss', nan):.4f}, "
                  f"{uni.get('bpb', nan):.4f} bits/byte")
    print("Artifacts:")
    for name, what in [("config.yaml", "resolved config"), ("data/report.md", "data report"),
                       ("tokenizer/tokenizer.json", "tokenizer"), ("tokens/manifest.json", "token shards"),
                       ("checkpoints", "checkpoints (latest, best)"), ("metrics.jsonl", "metrics stream"),
                       ("tb", "TensorBoard logs"), ("plots", "PNG curves"), ("eval/report.md", "eval report")]:
        p = run_dir / name
        if p.exists():
            print(f"  {str(p):45s} {what}")


def cmd_stage(args: argparse.Namespace) -> int:
    from lmforge import run

    cfg, run_dir = _load(args)
    if args.dry_run:
        return _dry_run(cfg, run_dir)
    run.cpu_threads_hint()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run.run_lock(run_dir):  # no config.yaml or stage output is written while another process holds the run
        return _stage(args, cfg, run.prepare_run_dir(cfg, run_dir))


def _stage(args: argparse.Namespace, cfg: Config, run_dir: Path) -> int:
    from lmforge import run

    if args.command == "data":
        run.run_data(cfg, run_dir, force=True)
    elif args.command == "tokenizer":
        run.run_tokenizer(cfg, run_dir, force=True)
    elif args.command == "tokenize":
        run.run_tokenize(cfg, run_dir, force=True)
        run.run_eval_sets(cfg, run_dir, force=True)  # the named held-out sets (eval.sets), same tokenizer
    elif args.command == "train":
        summary = run.run_train(cfg, run_dir, resume=args.resume)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary
            print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (dict, list))}, default=str))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    args.config = "configs/quickstart.yaml"  # the shipped one, wherever the command runs
    args.dry_run = getattr(args, "dry_run", False)
    return cmd_run(args)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, or the name of a shipped one: quickstart, shakespeare-char, "
                   "gpt2-124m (configs/NAME.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=50")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/NAME)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="Raw text to a trained, evaluated language model.")
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage in order (complete stages are skipped)")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)
    for name, helptext in [("data", "clean, filter and deduplicate raw text"),
                           ("tokenizer", "train the tokenizer on the clean corpus"),
                           ("tokenize", "encode the clean corpus into token shards"),
                           ("train", "train the model")]:
        p = sub.add_parser(name, help=helptext)
        _add_config_args(p)
        if name == "train":
            p.add_argument("--resume", default=None, metavar="auto|PATH",
                           help="resume from the newest complete checkpoint (auto) or a checkpoint folder")
        p.set_defaults(func=cmd_stage)
    p = sub.add_parser("quickstart", help="train a small model on the corpus every Python carries (no files needed)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/quickstart)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_quickstart)

    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may follow options (`train CFG --run-dir R train.max_steps=5`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"lmforge: error: out of disk space writing {e.filename or 'a file'} ({e.strerror}): free space and "
              f"rerun the same command (complete stages and checkpoints are kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
