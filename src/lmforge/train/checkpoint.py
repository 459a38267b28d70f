"""Checkpoints: atomic, checksummed, and loaded without running pickled code.

    checkpoints/step-000500/  model.safetensors  optimizer.pt  state.json  manifest.json
    checkpoints/latest        text file naming the newest complete checkpoint
    checkpoints/best          text file naming the best one by validation loss

A checkpoint is written to `step-N.tmp/`, every file fsynced, `manifest.json` (sha256 of each file)
written last, then the directory is renamed; the pointers move only after that. A directory without a
manifest, or whose files do not match it, is never loaded. `optimizer.pt` is read with
`torch.load(weights_only=True)`, which refuses pickles that would run code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_model, save_model

from lmforge.errors import LmforgeError
from lmforge.io import atomic_write_json, atomic_write_text, fsync_dir, sha256_file

log = logging.getLogger(__name__)
STEP_RE = re.compile(r"^step-(\d+)$")
MODEL_FILE, OPTIM_FILE, STATE_FILE, MANIFEST = "model.safetensors", "optimizer.pt", "state.json", "manifest.json"


class CheckpointError(LmforgeError):
    """A checkpoint is missing, incomplete or corrupted."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain GPT under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def write_checkpoint(root: Path, step: int, *, model_state: nn.Module | None, optim_state: dict | None,
                     state: dict[str, Any]) -> Path:
    """Write one complete checkpoint atomically and return its final directory.

    model_state: the unwrapped model (safetensors dedups tied weights); optim_state: what goes in
    optimizer.pt (None = a weights-only checkpoint); state: JSON-serialisable training state.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / (final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = []
    if model_state is not None:
        save_model(model_state, str(tmp / MODEL_FILE), metadata={"format": "pt", "step": str(step)})
        files.append(MODEL_FILE)
    if optim_state is not None:
        torch.save(optim_state, tmp / OPTIM_FILE)
        files.append(OPTIM_FILE)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=_json_default) + "\n")
    files.append(STATE_FILE)
    for name in files:
        _fsync_file(tmp / name)
    manifest = {"step": step, "time": time.time(),
                "files": {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in files}}
    atomic_write_json(tmp / MANIFEST, manifest)  # last: its presence means "complete"
    fsync_dir(tmp)
    if final.exists():  # re-reaching a step after a rollback: replace the old copy
        old = root / (final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    return final


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; return the manifest or raise CheckpointError."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: no {MANIFEST} (interrupted while writing?)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({e})") from None
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: file {name} listed in the manifest is missing")
        if f.stat().st_size != meta["bytes"]:
            raise CheckpointError(f"checkpoint {path}: {name} has {f.stat().st_size} bytes, manifest says "
                                  f"{meta['bytes']} (truncated or corrupted)")
        if sha256_file(f) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} fails its sha256 checksum (corrupted)")
    return manifest


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every finished-looking checkpoint directory, newest first (not yet verified)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return sorted(found, reverse=True)


def clean_partial(root: Path) -> list[Path]:
    """Remove `step-N.tmp/` and `.old` leftovers of an interrupted write; returns what was removed."""
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and (p.name.endswith(".tmp") or p.name.endswith(".old")) and p.name.startswith("step-"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def find_resume(root: Path, resume: str) -> Path | None:
    """`auto`: the newest checkpoint that verifies (corrupted ones are skipped with a warning), or
    None when there is none. Any other value is a checkpoint directory, which must verify."""
    if resume != "auto":
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"resume checkpoint {path} does not exist")
        verify_checkpoint(path)
        return path
    for _, path in list_checkpoints(root):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
    return None


def set_pointer(root: Path, name: str, ckpt: Path) -> None:
    atomic_write_text(root / name, ckpt.name + "\n")


def read_pointer(root: Path, name: str) -> Path | None:
    p = root / name
    if not p.is_file():
        return None
    target = root / p.read_text().strip()
    return target if target.is_dir() else None


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete complete checkpoints beyond the newest `keep_last`, never the one `best` names."""
    best = read_pointer(root, "best")
    removed = []
    for _, path in list_checkpoints(root)[keep_last:]:
        if best is not None and path.resolve() == best.resolve():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def load_optimizer_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """optimizer.pt through the safe unpickler: a file that would run code raises CheckpointError."""
    try:
        return torch.load(Path(path) / OPTIM_FILE, map_location=device, weights_only=True)
    except Exception as e:  # UnpicklingError and friends: never retry with weights_only=False
        raise CheckpointError(f"checkpoint {path}: {OPTIM_FILE} refused by the safe loader "
                              f"(weights_only=True): {str(e).splitlines()[0]}") from None


def load_weights(model: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    missing, unexpected = load_model(unwrap(model), str(Path(path) / MODEL_FILE), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}); was model.* changed?")


def resolve(run_dir: Path, which: str) -> Path:
    """`best` / `latest` pointer of RUN_DIR/checkpoints, or a checkpoint directory path."""
    root = Path(run_dir) / "checkpoints"
    if which in ("best", "latest"):
        path = read_pointer(root, which) or (read_pointer(root, "latest") if which == "best" else None)
        if path is None:
            raise CheckpointError(f"no {which} checkpoint in {root}: train first (`lmforge train`) or pass a "
                                  f"checkpoint directory")
        return path
    path = Path(which)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (expected best, latest or a checkpoint directory)")
    return path


def load_for_inference(run_dir: str | Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, Any, dict]:
    """(model in eval mode, tokenizer, info) from a verified checkpoint of RUN_DIR.

    info: path, step, tokens_seen, val_loss, config (the run's resolved config as a dict).
    """
    from lmforge.config import ModelConfig
    from lmforge.model import GPT
    from lmforge.tokenizer import load_tokenizer

    path = resolve(Path(run_dir), which)
    verify_checkpoint(path)
    state = read_state(path)
    model = GPT(ModelConfig(**state["config"]["model"]))
    load_weights(model, path, device)
    model.to(device).eval()
    tok_dir = Path(run_dir) / "tokenizer"
    tokenizer = load_tokenizer(tok_dir) if tok_dir.exists() else None
    info = {"path": str(path), "step": state["step"], "tokens_seen": state.get("tokens_seen"),
            "val_loss": state.get("val_loss"), "config": state["config"]}
    return model, tokenizer, info
