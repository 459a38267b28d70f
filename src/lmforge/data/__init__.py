"""Stage 1: raw files -> clean documents (clean shards, rejects with reasons, report).

    from lmforge.data import run_data_stage
    report = run_data_stage(cfg.data, run_dir / "data")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["merge_data_tasks", "run_data_stage", "run_data_task"]


def __getattr__(name: str) -> Any:  # lazy: importing `lmforge.data.config` must not import the stage's code
    if name in __all__:
        return getattr(importlib.import_module("lmforge.data.executor"), name)
    raise AttributeError(f"module 'lmforge.data' has no attribute {name!r}")
