"""Config system: YAML + dotted overrides, presets, validation messages naming the key."""

from pathlib import Path

import pytest

from lmforge.config import Config, config_from_dict, dump_config, load_config, parse_overrides
from lmforge.errors import ConfigError
from lmforge.model.presets import PRESETS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_shipped_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "shakespeare-char.yaml", "gpt2-124m.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_parses_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # the resolved config round-trips through YAML
    again = config_from_dict(__import__("yaml").safe_load(dump_config(cfg)))
    assert again == cfg


def test_overrides_are_parsed_as_yaml():
    tree = parse_overrides(["train.lr=3e-4", "train.max_steps=50", "data.inputs=[a.txt, b.jsonl]",
                            "train.compile=true", "data.id_field=null"])
    assert tree == {"train": {"lr": "3e-4", "max_steps": 50, "compile": True},
                    "data": {"inputs": ["a.txt", "b.jsonl"], "id_field": None}}


def test_override_beats_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.01\n  max_steps: 7\n")
    cfg = load_config(p, ["train.max_steps=9", "train.min_lr=1e-4"])
    assert cfg.train.lr == 0.01 and cfg.train.max_steps == 9
    assert cfg.train.min_lr == 1e-4  # YAML 1.1 reads 1e-4 as a string; float fields accept it


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.max_steps"):
        config_from_dict({"train": {"max_steps": 1.5}})


def test_preset_fills_unset_fields_and_user_fields_win():
    cfg = config_from_dict({"model": {"preset": "small", "n_layer": 3}})
    assert cfg.model.n_layer == 3
    assert cfg.model.n_embd == PRESETS["small"]["n_embd"]
    with pytest.raises(ConfigError, match="model.preset"):
        config_from_dict({"model": {"preset": "nope"}})


@pytest.mark.parametrize("data,key", [
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"lrr": 1.0}}, "train.lrr"),
    ({"bogus": {}}, "bogus"),
    ({"model": {"n_embd": 100, "n_head": 3}}, "model.n_embd"),
    ({"data": {"txt_mode": "words"}}, "data.txt_mode"),
    ({"train": {"max_steps": 0}}, "train.max_steps"),
    ({"tokenizer": {"special_tokens": ["<pad>"]}}, "tokenizer.special_tokens"),
    ({"train": "fast"}, "train"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(data)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])
