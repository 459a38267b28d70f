"""Small checks shared by the config dataclasses: each error names the dotted key."""

from __future__ import annotations

from lmforge.errors import ConfigError


def check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def frac(value: float, key: str) -> None:
    check(0.0 <= value <= 1.0, key, f"must be a fraction in [0, 1], got {value}")
