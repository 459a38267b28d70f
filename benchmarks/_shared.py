"""Where benchmarks find the shared data set (`../shared/data` beside the checkout), and a clean exit without it.

Only benchmarks read it; tests and shipped configs use what is in the repository."""

from __future__ import annotations

import sys
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require(path: str | Path) -> Path:
    """`path` if it exists; else print why this benchmark cannot run and exit 0."""
    path = Path(path)
    if not path.exists():
        print(f"{Path(sys.argv[0]).name}: {path} is not here; this benchmark needs the shared data set "
              f"(pass its location with the script's data option). Nothing measured.")
        sys.exit(0)
    return path
