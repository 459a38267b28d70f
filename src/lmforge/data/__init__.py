"""Stage 1: raw files -> clean documents (clean shards, rejects with reasons, report).

    from lmforge.data import run_data_stage
    report = run_data_stage(cfg.data, run_dir / "data")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"merge_data_tasks": "lmforge.data.executor", "run_data_stage": "lmforge.data.executor",
            "run_data_task": "lmforge.data.executor", "Filter": "lmforge.data.filters.base",
            "Step": "lmforge.data.filters.base", "Document": "lmforge.data.document"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: importing `lmforge.data.config` must not import the stage's code
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmforge.data' has no attribute {name!r}")
