"""Progress bars for long stages: tqdm with rate and ETA, silenced in quiet mode.

    for doc in progress(docs, desc="clean", unit="doc", total=n):   # an iterable
    bar = progress(total_steps, desc="train", unit="step")            # or a total; bar.update(k)

Quiet mode (no bar at all) is on when `quiet=True` is passed (e.g. `cfg.monitor.quiet`) or the
environment has LMFORGE_QUIET=1 — use it when stderr goes to a log file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
BAR_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def is_quiet(quiet: bool | None = None) -> bool:
    """True when `quiet` is True, or it is None and the env LMFORGE_QUIET is 1/true/yes."""
    if quiet is not None:
        return bool(quiet)
    return os.environ.get("LMFORGE_QUIET", "").strip().lower() in ("1", "true", "yes", "on")


def progress(iterable_or_total: Iterable[Any] | int | None = None, desc: str = "", unit: str = "it",
             quiet: bool | None = None, *, total: int | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over an iterable, or a manual bar when given an int total (call `.update(n)`).

    `quiet=None` follows LMFORGE_QUIET; a quiet bar iterates (and accepts `.update`) but prints nothing.
    Extra keyword arguments go to tqdm (e.g. `unit_scale=True`, `leave=False`, `position`).
    """
    iterable: Iterable[Any] | None = None
    if isinstance(iterable_or_total, int) and not isinstance(iterable_or_total, bool):
        total = iterable_or_total
    else:
        iterable = iterable_or_total
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
    kwargs.setdefault("bar_format", BAR_FORMAT if total else BAR_FORMAT_NO_TOTAL)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("smoothing", 0.1)  # rate/ETA from a moving average, not the whole history
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=is_quiet(quiet), **kwargs)
