"""Stage 3: token shards (format, writer, validated reader), packing and the resumable loader.

Names are imported lazily so that encoding worker processes (which import `lmforge.tokens.stage`)
do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Batch": "lmforge.tokens.loader", "TokenLoader": "lmforge.tokens.loader",
    "TokenDataset": "lmforge.tokens.shards", "open_split": "lmforge.tokens.shards",
    "run_tokenize_stage": "lmforge.tokens.stage",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmforge.tokens' has no attribute {name!r}")
