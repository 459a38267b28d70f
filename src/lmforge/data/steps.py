"""Your own data steps, without editing lmforge.

    class MyFilter(Filter):            # from lmforge.data import Filter
        name = "my_filter"             # rejects carry it (reason and reject_step)
        def filter(self, doc):
            return "lorem" not in doc.text

    run_data_stage(cfg, out, extra_steps=[MyFilter()])
    # or in YAML: data.extra_steps: ["my_pkg.filters:MyFilter", {step: "my_pkg.filters:Other", k: 1}]

Extra steps run after the built-in filters and before the dedup, in every rank task (so they must
pickle, and each rank gets its own copy). Their counts and rejects are in the report like any step's.
"""

from __future__ import annotations

import importlib
from typing import Any

from lmforge.data.filters.base import Filter, Step
from lmforge.errors import ConfigError

_GENERIC_NAMES = (Step.name, Filter.name)


def load_extra_steps(specs: list[str | dict[str, Any]]) -> list[Step]:
    """Instantiate `data.extra_steps`: "module:Class" or {step: "module:Class", **keywords}."""
    steps = []
    for i, spec in enumerate(specs):
        key = f"data.extra_steps[{i}]"
        kwargs = dict(spec) if isinstance(spec, dict) else {}
        target = kwargs.pop("step", None) if isinstance(spec, dict) else spec
        cls = _import(str(target), key)
        try:
            step = cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{key}: {target}({', '.join(f'{k}=...' for k in kwargs)}) failed: {e}") from e
        steps.append(check_step(step, key))
    return steps


def check_step(step: Any, where: str) -> Step:
    """A usable step: a `Step` whose base __init__ ran; a class without its own `name` gets the class name."""
    if not isinstance(step, Step):
        raise ConfigError(f"{where}: {type(step).__name__} is not a data step: subclass "
                          "lmforge.data.Filter (override filter) or lmforge.data.Step (override process)")
    if not hasattr(step, "stats"):
        raise ConfigError(f"{where}: {type(step).__name__}.__init__ must call super().__init__()")
    if step.name in _GENERIC_NAMES:
        step.name = step.stats.name = type(step).__name__
    return step


def _import(target: str, key: str) -> type:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{key}: cannot import {module!r} ({e}); is the package installed or on PYTHONPATH?") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj
