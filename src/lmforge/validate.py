"""Small checks shared by the config dataclasses: each error names the dotted key."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lmforge.errors import ConfigError


def check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def finite(obj: Any, section: str) -> None:
    """Every float field of the config dataclass `obj` is a finite number (inf/nan never make sense
    as a rate, a temperature or a threshold, and pass `>= 0` style checks unnoticed)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{section}.{f.name}': must be a finite number, got {v}")


def frac(value: float, key: str) -> None:
    check(0.0 <= value <= 1.0, key, f"must be a fraction in [0, 1], got {value}")
