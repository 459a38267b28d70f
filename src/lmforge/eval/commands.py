"""CLI subcommands of the eval stage: `eval`, `generate`, `rate`.

`lmforge.cli` calls `register(subparsers)`; each handler takes the parsed args and returns an exit
code. Handlers catch nothing: user errors are `LmforgeError`, printed by the CLI (exit 2).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from lmforge.errors import LmforgeError


def _device(arg: str | None) -> str:
    """`auto` (cuda when available, else cpu) or a device torch knows and this machine has."""
    import torch

    if not arg or arg == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise LmforgeError(f"--device {arg}: CUDA is not available on this machine; use --device cpu (or auto)")
    return arg


def _device_arg(text: str) -> str:
    import torch

    if text != "auto":
        try:
            torch.device(text)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N") from None
    return text


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _finite_float(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(f) or f < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return f


def _run_dir(path: Path) -> Path:
    if Path(path).exists() and not Path(path).is_dir():
        raise LmforgeError(f"run directory {path} is a file: pass the run directory (runs/NAME)")
    if not Path(path).is_dir():
        raise LmforgeError(f"run directory {path} does not exist")
    return Path(path)


def _utf8(text: str, what: str) -> str:
    """Command-line text with undecodable bytes (Python keeps them as surrogates) is refused here,
    not deep inside the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise LmforgeError(f"{what} is not valid UTF-8 (byte 0x{ord(text[e.start]) & 0xFF:02x} at character "
                           f"{e.start}): pass UTF-8 text (check your terminal's locale)") from None
    return text


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _load(run_dir: Path, checkpoint: str, device: str | None):
    from lmforge.checkpoint import load_for_inference

    _run_dir(run_dir)
    model, tok, info = load_for_inference(run_dir, checkpoint, _device(device))
    if tok is None:
        raise LmforgeError(f"{run_dir}/tokenizer is missing: this run has no tokenizer to encode prompts with")
    return model, tok, info


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from lmforge.eval.config import EvalConfig
    from lmforge.eval.perplexity import evaluate_run, run_config

    if Path(args.run_dir).exists():
        _run_dir(args.run_dir)
    device = _device(args.device)
    run_cfg = run_config(Path(args.run_dir)) if Path(args.run_dir).is_dir() else None
    cfg = run_cfg.eval if run_cfg is not None else EvalConfig()
    given = (("stratify_by", args.by), ("length_buckets", args.buckets), ("overfit_patience", args.patience),
             ("max_batches", args.max_batches))
    changes = {k: v for k, v in given if v is not None}
    cfg = dataclasses.replace(cfg, **changes)  # re-validated in __post_init__
    tasks = None
    if args.tasks:
        tasks = {"tasks": [t for t in args.tasks.split(",") if t.strip()], "limit": args.limit or 0,
                 "num_fewshot": cfg.num_fewshot if args.num_fewshot is None else args.num_fewshot,
                 "include_path": args.include_path or cfg.tasks_include_path}
    evaluate_run(args.run_dir, checkpoint=args.checkpoint, cfg=cfg, device=device, data=args.data,
                 txt_mode=args.txt_mode, tasks=tasks)
    print((Path(args.run_dir) / "eval" / "report.md").read_text(encoding="utf-8"))
    return 0


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                stop=args.stop or None)


def cmd_generate(args: argparse.Namespace) -> int:
    from lmforge.infer.generate import generate

    if not args.prompt and not args.interactive:
        raise LmforgeError("give at least one --prompt TEXT, or --interactive")
    for p in args.prompt:
        _utf8(p, f"--prompt {p!r}")
    model, tok, _ = _load(args.run_dir, args.checkpoint, args.device)
    kw = _sampling_kwargs(args)
    if args.prompt:
        prompts = [p for p in args.prompt for _ in range(args.num_samples)]
        for p, out in zip(prompts, generate(model, tok, prompts, **kw)):
            print(p + out)
            if len(prompts) > 1:
                print("-" * 40)
    if args.interactive:
        _interactive(model, tok, kw)
    return 0


def _interactive(model, tok, kw: dict) -> None:
    """Read one prompt per line until EOF (or an empty line after a prompt); print each continuation."""
    from lmforge.infer.generate import generate

    print("Type a prompt and press Enter (Ctrl-D to quit).", file=sys.stderr)
    for line in sys.stdin:
        prompt = line.rstrip("\n")
        if not prompt:
            continue
        try:
            _utf8(prompt, "this prompt")
        except LmforgeError as e:
            print(f"lmforge: {e}", file=sys.stderr)
            continue
        print(prompt + generate(model, tok, [prompt], **kw)[0], flush=True)


def cmd_rate(args: argparse.Namespace) -> int:
    from lmforge.eval.report import load_report, write_report
    from lmforge.eval.samples import collect_ratings, ratings_summary, read_samples

    eval_dir = Path(args.run_dir) / "eval"
    path = eval_dir / "samples.jsonl"
    if not path.is_file():
        raise LmforgeError(f"{path} does not exist: run `lmforge eval {args.run_dir}` first to generate samples")
    n = collect_ratings(path, sys.stdin, sys.stdout, rater=args.rater, redo=args.redo)
    summary = ratings_summary(read_samples(path))
    report = load_report(eval_dir)
    if report:  # the report summarises the ratings
        report["ratings"] = summary
        write_report(eval_dir, report)
    print(f"rated {n} sample(s) now; {summary['rated']} of {summary['samples']} rated in all")
    for key in ("fluency", "coherence", "creativity"):
        if key in summary:
            s = summary[key]
            print(f"  {key:10s} mean {s['mean']:.2f} (sd {s['stdev']:.2f}, n={s['n']})")
    return 0


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=_positive_int, default=100,
                   help="tokens to generate per prompt (default 100)")
    p.add_argument("--temperature", type=_finite_float, default=0.8,
                   help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=0, help="keep the K most likely tokens (0 = off)")
    p.add_argument("--top-p", type=_finite_float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--min-p", type=_finite_float, default=0.0,
                   help="drop tokens below P x the top probability (0 = off)")
    p.add_argument("--repetition-penalty", type=_finite_float, default=1.0,
                   help="CTRL penalty on seen tokens (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")


def register(subparsers) -> None:
    """Add the eval-stage subcommands to the `lmforge` parser."""
    p = subparsers.add_parser("eval", help="validation loss, perplexity, bits/byte and a report (eval/report.md)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|newest|PATH", help="checkpoint (default best)")
    p.add_argument("--data", type=Path, default=None, metavar="FILE",
                   help="also evaluate this plain-text or JSONL file (documents as --txt-mode says)")
    p.add_argument("--tasks", default=None, metavar="TASK,TASK,...",
                   help="also run lm-evaluation-harness tasks (hellaswag,arc_easy,...; datasets must be in the "
                        "local HF cache: nothing downloads)")
    p.add_argument("--include-path", default=None, metavar="DIR", help="folder of custom lm-eval task YAMLs")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="examples per task (default all)")
    p.add_argument("--num-fewshot", type=int, default=None, metavar="K",
                   help="few-shot examples per prompt (default eval.num_fewshot: 0)")
    p.add_argument("--txt-mode", default="paragraphs", choices=["file", "paragraphs", "lines", "continuous"],
                   help="how a .txt --data file becomes documents (default: blank-line-separated paragraphs)")
    p.add_argument("--by", action="append", default=None, metavar="FIELD",
                   help="stratify by this document meta field (repeatable; default eval.stratify_by: source, lang)")
    p.add_argument("--buckets", type=_int_list, default=None, metavar="N,N,...",
                   help="document-length bucket edges in tokens (default eval.length_buckets: 64,256,1024)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="overfitting verdict: validation loss rising N evaluations in a row (default 3)")
    p.add_argument("--max-batches", type=int, default=None, metavar="N", help="validation batches (0 = all)")
    p.add_argument("--device", type=_device_arg, default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("generate", help="generate text from a prompt with a trained run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="prompt (repeatable)")
    p.add_argument("--num-samples", type=_positive_int, default=1, help="continuations per prompt (default 1)")
    p.add_argument("--interactive", action="store_true", help="read prompts from the terminal, one per line")
    p.add_argument("--checkpoint", default="best", metavar="best|latest|newest|PATH")
    p.add_argument("--device", type=_device_arg, default="auto", help="auto, cpu, cuda or cuda:N")
    _add_sampling_args(p)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("rate", help="rate eval/samples.jsonl 1-5 for fluency, coherence, creativity")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--rater", default=None, help="your name or initials, stored with the ratings")
    p.add_argument("--redo", action="store_true", help="also ask for samples already rated")
    p.set_defaults(func=cmd_rate)
