"""CLI subcommands of the monitor: `lmforge dashboard` and `lmforge plot`.

cli.py calls `register(subparsers)`; each parser sets `func(args) -> int` as its default.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from lmforge.errors import LmforgeError


def cmd_dashboard(args: argparse.Namespace) -> int:
    from lmforge.monitor.dashboard.server import default_allowed_hosts, serve

    if not 0 < args.port < 65536:
        raise LmforgeError(f"--port must be in 1..65535, got {args.port}")
    if not _loopback(args.host):
        what = (f"--host {args.host} makes the dashboard reachable from other machines, and it has no "
                f"authentication: anyone who can reach port {args.port} can read your runs' metrics, configs "
                f"and samples")
        if not getattr(args, "allow_remote", False):
            raise LmforgeError(f"{what}. Pass --allow-remote if that is what you want (or use an SSH tunnel to "
                               f"127.0.0.1)")
        print(f"lmforge dashboard: warning: {what}", file=sys.stderr, flush=True)
    allowed = default_allowed_hosts(args.host) + list(args.allow_host or [])
    serve(Path(args.runs_dir), host=args.host, port=args.port, allowed_hosts=allowed)
    return 0


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def cmd_plot(args: argparse.Namespace) -> int:
    from lmforge.monitor.plots import plot_run, plot_runs

    runs = [Path(r) for r in args.runs]
    for r in runs:
        if not (r / "metrics.jsonl").is_file():
            raise LmforgeError(f"{r} has no metrics.jsonl: pass run directories (runs/NAME) that have trained")
    if args.out is None and len(runs) == 1:
        for p in plot_run(runs[0], x=args.x, smooth=args.smooth):
            print(p)
        return 0
    out = Path(args.out) if args.out else Path("compare.png")
    print(plot_runs(runs, out, x=args.x, smooth=args.smooth))
    return 0


def _smooth(v: str) -> float:
    f = float(v)
    if not 0.0 <= f < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return f


def register(subparsers: argparse._SubParsersAction) -> None:
    d = subparsers.add_parser(
        "dashboard", help="serve a live web dashboard of the runs in RUNS_DIR",
        description="Serve a local, read-only web page that lists the runs in RUNS_DIR (status, key figures) "
                    "and overlays their curves, updating live. Open the printed URL in a browser.")
    d.add_argument("runs_dir", nargs="?", default="runs",
                   help="folder holding run directories, or one run (default: runs)")
    d.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to your network)")
    d.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (the dashboard has no authentication)")
    d.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    d.add_argument("--allow-host", action="append", metavar="NAME",
                   help="extra Host header to accept (e.g. a name you reach the machine by); repeatable")
    d.set_defaults(func=cmd_dashboard)

    p = subparsers.add_parser(
        "plot", help="PNG curves of one run, or several runs compared in one figure",
        description="With one RUN and no --out: write RUN/plots/*.png. Otherwise: one figure overlaying the runs.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (runs/NAME)")
    p.add_argument("--out", default=None, help="output PNG (default: RUN/plots/ for one run, compare.png for several)")
    p.add_argument("--x", choices=("step", "tokens", "time"), default="step", help="x axis (default: step)")
    p.add_argument("--smooth", type=_smooth, default=0.9, help="EMA weight for the train loss, 0 = raw (default 0.9)")
    p.set_defaults(func=cmd_plot)
