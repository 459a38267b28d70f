"""Document filters. Each overrides only `filter(doc) -> bool | tuple[bool, str]` (see `base.Filter`)."""

from lmforge.data.filters.base import Filter, Step, StepStats
from lmforge.data.filters.heuristic import LengthFilter

__all__ = ["Filter", "LengthFilter", "Step", "StepStats"]
