"""Stage 4: the training engine (loop, step, optimiser, loss, checkpoints, distributed).

    from lmforge.train import train
    summary = train(cfg, run_dir, resume="auto")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:  # lazy: importing `lmforge.train.config` must not import the stage's code
    if name in __all__:
        return getattr(importlib.import_module("lmforge.train.build"), name)
    raise AttributeError(f"module 'lmforge.train' has no attribute {name!r}")
