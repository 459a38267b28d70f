"""`train.init_from`: start a new run from existing weights (nanoGPT `init_from`, litgpt
`initial_checkpoint_dir`). Not a resume: the optimiser, schedule, data position and step start fresh,
and the data may be new.

    train: {init_from: path/to/hf-model}          # a local Llama / Qwen2 / Qwen3 / GPT-2 folder
    train: {init_from: runs/base}                 # an lmforge run (its best checkpoint) ...
    train: {init_from: runs/base/checkpoints/step-001000}   # ... or one checkpoint
    tokenizer: {kind: pretrained}                 # optional: the source's tokenizer (path left empty)

At config time (`apply_init_from`, called by `lmforge.config`) the model section is taken from the
source; keys the user also set must agree, except `block_size` (the training context; at most the
source's for learned positions) and `dropout`. At build time (`load_init_weights`) the weights are
mapped (`lmforge.model.hf_map`) and loaded, the tokenizer's vocabulary is checked against the
source's, and the source (path, kind, architecture, sha256 of its weight files) goes into every
checkpoint's manifest and a `init_from` event in metrics.jsonl.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmforge import checkpoint as ck
from lmforge.errors import ConfigError, LmforgeError

log = logging.getLogger(__name__)
FREE_KEYS = ("block_size", "dropout", "init_std")  # training choices, not part of the weights


def describe_source(init_from: str) -> dict[str, Any]:
    """{kind: hf | lmforge, path, model (ModelConfig kwargs), tokenizer (path or None), arch?, checkpoint?}."""
    p = Path(init_from)
    if not p.exists():
        raise ConfigError(f"config key 'train.init_from': {p} does not exist (expected a Hugging Face model folder, "
                          "an lmforge run directory or a checkpoint directory)")
    if (p / "config.json").is_file() and not (p / ck.STATE_FILE).is_file():
        from lmforge.model.hf_map import model_config_from_hf

        where = str(p / "config.json")
        try:
            hf = json.loads((p / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"config key 'train.init_from': {where} is not valid JSON ({e})") from None
        arch, model = model_config_from_hf(hf, where)
        return {"kind": "hf", "path": str(p.resolve()), "arch": arch, "model": model, "hf_config": hf,
                "tokenizer": str(p) if (p / "tokenizer.json").is_file() else None}
    if (p / ck.STATE_FILE).is_file():  # a checkpoint directory: RUN/checkpoints/step-N
        path, run_dir = p, p.parent.parent
    elif (p / "checkpoints").is_dir():
        path, run_dir = ck.resolve(p, "best"), p
    else:
        raise ConfigError(f"config key 'train.init_from': {p} is neither a Hugging Face model folder (config.json), "
                          "an lmforge run directory (checkpoints/) nor a checkpoint directory (state.json)")
    model = dict(ck.read_state(path)["config"]["model"])
    tok = run_dir / "tokenizer"
    return {"kind": "lmforge", "path": str(path.resolve()), "model": model,
            "tokenizer": str(tok) if (tok / "tokenizer.json").is_file() else None}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _normalise(key: str, value: Any, model: dict[str, Any]) -> Any:
    """User values that mean the same thing as the source's (n_kv_head null = n_head, ...)."""
    if key == "n_kv_head" and value in (None, model.get("n_head")):
        return model.get("n_kv_head")
    if key == "mlp_hidden" and value == 0:
        return model.get("mlp_hidden")
    return value


def apply_init_from(data: dict[str, Any]) -> dict[str, Any]:
    """The raw config dict with `model` taken from `train.init_from` (and `tokenizer.path` filled for a
    pretrained tokenizer). ConfigError names every user key that disagrees with the source."""
    src_path = data["train"]["init_from"]
    src = describe_source(src_path)
    user = dict(data.get("model") or {})
    if user.get("preset"):
        raise ConfigError("config key 'model.preset': cannot be combined with train.init_from (the source defines "
                          "the model); remove the preset")
    model = {k: v for k, v in src["model"].items() if k != "preset"}
    problems = []
    for key, value in user.items():
        if key in FREE_KEYS or key not in model or (key == "vocab_size" and value == 0):
            continue
        if not _same(_normalise(key, value, model), model[key]):
            problems.append(f"model.{key}={value!r} (the source has {model[key]!r})")
    if problems:
        raise ConfigError(f"config key 'train.init_from': {src_path} defines the model, and these keys disagree with "
                          f"it: {'; '.join(problems)}. Remove them (or set them to the source's values)")
    for key in FREE_KEYS:
        if key in user:
            model[key] = user[key]
    if model["pos_emb"] == "learned" and model["block_size"] > src["model"]["block_size"]:
        raise ConfigError(f"config key 'model.block_size': {model['block_size']} exceeds the "
                          f"{src['model']['block_size']} learned positions of train.init_from ({src_path})")
    out = {**data, "model": model}
    tok = dict(data.get("tokenizer") or {})
    if tok.get("kind") == "pretrained" and not tok.get("path"):
        if src["tokenizer"] is None:
            raise ConfigError(f"config key 'tokenizer.path': train.init_from ({src_path}) holds no tokenizer.json; set "
                              "tokenizer.path to the tokenizer the model was trained with")
        out["tokenizer"] = {**tok, "path": src["tokenizer"]}
    return out


# ---------------------------------------------------------------- build time
def _weights_identity(src: dict[str, Any]) -> dict[str, str]:
    from lmforge.io import sha256_file

    p = Path(src["path"])
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file())
    return {f.name: sha256_file(f) for f in files}


def check_vocab(src: dict[str, Any], tokenizer: Any, vocab_rows: int) -> None:
    """The run's tokenizer must fit the source's embedding and, where the source has a tokenizer, agree
    with its vocabulary (else every token id would mean another word)."""
    if tokenizer.vocab_size > vocab_rows:
        raise LmforgeError(f"train.init_from: the run's tokenizer has {tokenizer.vocab_size} tokens but the source "
                           f"model ({src['path']}) has {vocab_rows} embedding rows; use the model's tokenizer "
                           "(tokenizer.kind: pretrained, tokenizer.path empty)")
    if src.get("tokenizer") is None:
        return
    from tokenizers import Tokenizer as HFTokenizer

    from lmforge.tokenizer.core import fingerprint_bytes
    from lmforge.tokenizer.pretrained import tokenizer_file

    data = tokenizer_file(src["tokenizer"]).read_bytes()
    if fingerprint_bytes(data) == tokenizer.fingerprint:
        return
    theirs = HFTokenizer.from_str(data.decode("utf-8"))
    mine_v, their_v = tokenizer.hf.get_vocab(with_added_tokens=True), theirs.get_vocab(with_added_tokens=True)
    diff = sorted((t for t in set(mine_v) | set(their_v) if mine_v.get(t) != their_v.get(t)),
                  key=lambda t: min(mine_v.get(t, 1 << 62), their_v.get(t, 1 << 62)))
    if diff:
        t = diff[0]
        raise LmforgeError(f"train.init_from: the run's tokenizer disagrees with the source's ({src['tokenizer']}): "
                           f"{len(diff)} token(s) differ, e.g. {t!r} is id {mine_v.get(t)} here and {their_v.get(t)} "
                           "there; use the model's tokenizer (tokenizer.kind: pretrained, tokenizer.path empty)")


def _source_state_dict(src: dict[str, Any], cfg: Any) -> dict[str, torch.Tensor]:
    from lmforge.model.config import ModelConfig

    if src["kind"] == "lmforge":
        return ck.read_weights(Path(src["path"]))
    from lmforge.model.hf_map import from_hf, read_hf_weights

    hf_sd = read_hf_weights(Path(src["path"]), allow_pickle=cfg.train.init_from_allow_pickle)
    src_cfg = ModelConfig(**{k: v for k, v in src["model"].items() if k != "preset"})
    return from_hf(hf_sd, src_cfg, src["arch"], src["hf_config"], str(src["path"]))


def load_init_weights(model: nn.Module, cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
    """Load `cfg.train.init_from` into `model` (the plain GPT, before any wrapper); returns the record
    that checkpoints and metrics keep."""
    src = describe_source(cfg.train.init_from)
    if tokenizer is not None:
        check_vocab(src, tokenizer, int(src["model"]["vocab_size"]))
    if src["kind"] == "lmforge":
        ck.verify_checkpoint(Path(src["path"]))
    sd = _source_state_dict(src, cfg)
    if cfg.model.tie_embeddings and "lm_head.weight" in sd:  # one tensor under either name (safetensors dedup)
        sd.setdefault("wte.weight", sd["lm_head.weight"])
        sd.pop("lm_head.weight")
    if "wpe.weight" in sd and sd["wpe.weight"].shape[0] > cfg.model.block_size:  # a shorter training context
        sd["wpe.weight"] = sd["wpe.weight"][: cfg.model.block_size]
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise LmforgeError(f"train.init_from ({src['path']}): tensors do not fit the model: {', '.join(bad[:5])}")
    missing, unexpected = model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items() if k in own},
                                                strict=False)
    if cfg.model.tie_embeddings:
        missing = [m for m in missing if m != "lm_head.weight"]
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise LmforgeError(f"train.init_from ({src['path']}): missing {sorted(missing)[:5]}, unexpected "
                           f"{unexpected[:5]} tensors for this model")
    record = {"path": src["path"], "kind": src["kind"], "architecture": src.get("arch", "lmforge"),
              "weights_sha256": _weights_identity(src) if src["kind"] == "hf" else
              {ck.MODEL_FILE: json.loads((Path(src["path"]) / ck.MANIFEST).read_text())["files"][ck.MODEL_FILE]
               ["sha256"]}}
    log.info("initialised from %s (%s)", src["path"], record["architecture"])
    return record
