"""The whole run's config: composes each stage's own config dataclass and loads YAML.

Only `cli` and `run` import this module; each stage imports its own `<stage>/config.py`.

    cfg = load_config("configs/quickstart.yaml", ["train.max_steps=50", "model.preset=tiny"])

* Unknown keys, wrong types and invalid values raise `ConfigError` naming the dotted key.
* Overrides are `section.key=value`; the value is parsed as YAML (`3e-4`, `true`, `[a, b]`).
* `model.preset` fills every model field the user did not set (see `lmforge.model.presets`).
* `to_dict(cfg)` / `dump_config(cfg, path)` give the resolved config written to RUN_DIR/config.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmforge.configtools import (  # noqa: F401  (re-exported)
    build_section,
    fingerprint,
    merge_dicts,
    parse_overrides,
    to_dict,
)
from lmforge.data.config import (  # noqa: F401  (re-exported)
    C4Config,
    DataConfig,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    NearDedupConfig,
    PerplexityConfig,
)
from lmforge.errors import ConfigError
from lmforge.eval.config import EvalConfig
from lmforge.model.config import ModelConfig
from lmforge.monitor.config import MonitorConfig
from lmforge.tokenizer.config import TokenizerConfig
from lmforge.tokens.config import TokensConfig
from lmforge.train.config import TrainConfig

__all__ = ["Config", "DataConfig", "EvalConfig", "ModelConfig", "MonitorConfig", "TokenizerConfig", "TokensConfig",
           "TrainConfig", "config_from_dict", "dump_config", "fingerprint", "load_config", "to_dict"]


@dataclass(kw_only=True)
class Config:
    name: str = "run"
    """Run name; the default run directory is runs/NAME."""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """Metrics stream, TensorBoard, anomaly detection, plots and progress bars."""


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict, applying the model preset."""
    data = dict(data or {})
    train = data.get("train")
    if isinstance(train, dict) and train.get("init_from"):  # the model section comes from the source
        from lmforge.train.init_from import apply_init_from

        data = apply_init_from(data)
    model = data.get("model")
    if isinstance(model, dict) and model.get("preset"):
        from lmforge.model.presets import get_preset

        try:
            preset = get_preset(model["preset"])
        except KeyError as e:
            raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None
        data["model"] = {**preset, **model}
    return build_section(Config, data, "")


def shipped_config(path: str | Path) -> Path | None:
    """The config shipped in the package that `path` names when no such file exists here:
    `configs/NAME.yaml`, `NAME.yaml` or `NAME` (so `lmforge run configs/quickstart.yaml` works from
    any directory after `pip install lmforge`)."""
    from importlib import resources

    p = Path(path)
    if p.exists() or len(p.parts) > 2 or (len(p.parts) == 2 and p.parts[0] != "configs"):
        return None
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    shipped = resources.files("lmforge") / "configs" / name
    return Path(str(shipped)) if shipped.is_file() else None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load YAML at `path` (None = defaults only) and apply dotted overrides. A path that does not
    exist but names a shipped config (`configs/shakespeare-char.yaml`) loads the shipped one."""
    data: dict[str, Any] = {}
    if path is not None:
        p = shipped_config(path) or Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {p} is a directory: pass a YAML file (e.g. {p / 'config.yaml'})")
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                              f"{e.start}): save it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections (data, model, train, ...)")
    if overrides:
        data = merge_dicts(data, parse_overrides(overrides))
    return config_from_dict(data)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
