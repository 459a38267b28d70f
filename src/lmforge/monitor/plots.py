"""PNG curves from metrics.jsonl (matplotlib, Agg backend: no display needed).

    plot_run(run_dir)                      # RUN/plots/overview.png (six panels) + loss.png
    plot_runs([run_a, run_b], "cmp.png")   # one figure overlaying several runs (`lmforge plot A B --out cmp.png`)

Train loss is drawn raw (faint) and EMA-smoothed; panels without data say so instead of vanishing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.monitor.metrics import finite_number, read_metrics

# panel name -> (title, [(event kind, key, label suffix)], log-scale y)
PANELS: dict[str, tuple[str, list[tuple[str, str, str]], bool]] = {
    "loss": ("train loss", [("train", "loss", "")], False),
    "val_loss": ("validation loss", [("val", "loss", "")], False),
    "lr": ("learning rate", [("train", "lr", "")], False),
    "grad_norm": ("gradient norm", [("train", "grad_norm", "")], True),
    "tokens_per_s": ("tokens / s", [("train", "tokens_per_s", "")], False),
    "memory": ("memory (MiB)", [("system", "rss_mb", " RSS"), ("system", "cuda_allocated_mb", " CUDA alloc"),
                                ("system", "cuda_reserved_mb", " CUDA reserved")], False),
}
X_LABELS = {"step": "step", "tokens": "tokens", "time": "time (min)"}




def load_run(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Events of a run grouped by kind; raises LmforgeError when there is no metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise LmforgeError(f"{path} does not exist: is {run_dir} a run directory (runs/NAME) with training metrics?")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in read_metrics(path):
        by_kind.setdefault(str(e.get("kind")), []).append(e)
    return by_kind


def series(events: dict[str, list[dict[str, Any]]], kind: str, key: str, x: str = "step") -> tuple[list, list]:
    """(xs, ys) of `key` in events of `kind`; x is step, cumulative tokens (taken from the latest train
    event at or before the step) or minutes since the run's first event."""
    all_events = [e for evs in events.values() for e in evs]
    t0 = min((e["time"] for e in all_events if finite_number(e.get("time")) is not None), default=0.0)
    tok_at = sorted((e["step"], finite_number(e.get("tokens")))
                    for e in events.get("train", []) if finite_number(e.get("tokens")))
    xs, ys = [], []
    j, cur_tok = 0, None
    for e in sorted(events.get(kind, []), key=lambda e: e.get("step", 0)):
        y = finite_number(e.get(key, e.get("val_loss") if (kind, key) == ("val", "loss") else None))
        if y is None:
            continue
        if x == "step":
            xv = e.get("step")
        elif x == "time":
            xv = (finite_number(e.get("time")) or t0) / 60.0 - t0 / 60.0
        else:
            while j < len(tok_at) and tok_at[j][0] <= e.get("step", 0):
                cur_tok = tok_at[j][1]
                j += 1
            xv = cur_tok
        if xv is not None:
            xs.append(xv)
            ys.append(y)
    return xs, ys


def ema(ys: list[float], weight: float = 0.9) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing): the first values are not pulled to 0."""
    out, acc = [], 0.0
    for i, y in enumerate(ys, 1):
        acc = weight * acc + (1 - weight) * y
        out.append(acc / (1 - weight**i))
    return out


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise LmforgeError(f"plots need matplotlib ({e}): pip install matplotlib") from e
    return plt


def _draw(ax: Any, panel: str, runs: list[tuple[str, dict]], x: str, smooth: float) -> bool:
    title, keys, logy = PANELS[panel]
    drawn = False
    lo, hi = math.inf, -math.inf
    for i, (name, events) in enumerate(runs):
        color = f"C{i % 10}"
        for kind, key, suffix in keys:
            xs, ys = series(events, kind, key, x)
            if not xs:
                continue
            lo, hi = min(lo, *ys), max(hi, *ys)
            label = (name + suffix) if len(runs) > 1 or suffix else None
            style = "-" if suffix in ("", " RSS") else ("--" if "alloc" in suffix else ":")
            if panel == "loss" and len(ys) > 1 and smooth > 0:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, ema(ys, smooth), color=color, linewidth=1.6, label=label)
            else:
                marker = "o" if panel == "val_loss" or len(xs) == 1 else None
                ax.plot(xs, ys, style, color=color, linewidth=1.4, marker=marker, markersize=3, label=label)
            drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(X_LABELS.get(x, x), fontsize=8)
    if x == "tokens":
        from matplotlib.ticker import EngFormatter

        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1.5M rather than 1500000
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    if drawn and logy and lo > 0 and hi / lo > 20:  # log only helps across decades (and labels worse within one)
        ax.set_yscale("log")
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return drawn


def _save(fig: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)  # callers tight_layout(); bbox "tight" renders twice
    os.replace(tmp, out)  # never leave a half-written PNG under the final name


def _overview(runs: list[tuple[str, dict]], out: Path, x: str, smooth: float, title: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, panel in zip(axes.flat, PANELS):
        _draw(ax, panel, runs, x, smooth)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        _save(fig, out)
    finally:
        plt.close(fig)
    return out


def plot_run(run_dir: str | Path, *, x: str = "step", smooth: float = 0.9, panels: tuple[str, ...] = ("loss",)
             ) -> list[Path]:
    """Write RUN/plots/overview.png (all six panels) plus a large PNG for each of `panels` that has data
    (any of PANELS; default just the loss). Returns the paths written."""
    run_dir = Path(run_dir)
    events = load_run(run_dir)
    runs = [(run_dir.name, events)]
    out_dir = run_dir / "plots"
    written = [_overview(runs, out_dir / "overview.png", x, smooth, run_dir.name)]
    plt = _plt()
    for panel in panels:
        if panel not in PANELS:
            raise LmforgeError(f"unknown plot panel {panel!r}; choose from {', '.join(PANELS)}")
        fig, ax = plt.subplots(figsize=(8, 4.5))
        try:
            if _draw(ax, panel, runs, x, smooth):
                fig.tight_layout()
                _save(fig, out_dir / f"{panel}.png")
                written.append(out_dir / f"{panel}.png")
        finally:
            plt.close(fig)
    return written


def plot_runs(run_dirs: list[str | Path], out_png: str | Path, *, x: str = "step", smooth: float = 0.9) -> Path:
    """One overview figure overlaying several runs (one colour per run)."""
    if x not in X_LABELS:
        raise LmforgeError(f"x axis must be one of {', '.join(X_LABELS)}, got {x!r}")
    if not run_dirs:
        raise LmforgeError("plot needs at least one run directory")
    runs = [(Path(d).name, load_run(d)) for d in run_dirs]
    names = ", ".join(n for n, _ in runs)
    return _overview(runs, Path(out_png), x, smooth, names if len(names) < 100 else f"{len(runs)} runs")
