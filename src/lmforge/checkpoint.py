"""Checkpoints: atomic, checksummed, and loaded without running pickled code.

    checkpoints/step-000500/     full: model.safetensors  optimizer.pt  state.json  manifest.json
    checkpoints/weights-000250/  weights-only ("light"): model.safetensors  state.json  manifest.json
    checkpoints/frozen-<sha16>.safetensors   parameters with requires_grad=False, shared by checkpoints
    checkpoints/latest           text file naming the newest complete FULL checkpoint (resumable)
    checkpoints/newest           the newest complete checkpoint of either kind (eval, generate, export)
    checkpoints/best             the best one by validation loss (either kind)

A checkpoint is written to `<name>.tmp/`, every file fsynced, `manifest.json` (sha256 of each file)
written last, then the directory is renamed; the pointers move only after that. A directory without a
manifest, or whose files do not match it, is never loaded. `optimizer.pt` is read with
`torch.load(weights_only=True)`, which refuses pickles that would run code.

`latest` is the truth for `--resume auto` (a higher step number is not: it may belong to an abandoned
branch). Resuming from a checkpoint older than others on disk starts a new branch: the checkpoints
with higher steps are moved aside into `abandoned-<time>/` (never deleted) and named in the log. A
pointer may only name a `step-N`/`weights-N` directory of checkpoints/; one that names a checkpoint
failing verification is moved to the newest good one (logged). Each manifest records the tokenizer
and token-shard fingerprints (`fingerprints`), which eval, generate and export check.

Kinds: `state.json` and the manifest carry `kind: full | weights`. Only full checkpoints are resumed
from (`find_resume`); weights-only ones hold no optimiser, RNG or loader state and serve inference.
Frozen parameters are stored once in a content-addressed file that each manifest needing it names
with its sha256 (`manifest["frozen"]`); verification checks it, loading reassembles the full state
dict, and pruning deletes such a file only when no remaining manifest names it.
"""

from __future__ import annotations

import errno
import hashlib
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
from safetensors.torch import load_file, save, save_file, save_model

from lmforge.errors import LmforgeError
from lmforge.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    free_bytes,
    fsync_dir,
    human_bytes,
    out_of_space,
    sha256_file,
)

log = logging.getLogger(__name__)
FULL, WEIGHTS = "full", "weights"
_PREFIX = {FULL: "step", WEIGHTS: "weights"}
_DIR_RE = {FULL: re.compile(r"^step-(\d+)$"), WEIGHTS: re.compile(r"^weights-(\d+)$")}
STEP_RE = _DIR_RE[FULL]
POINTER_RE = re.compile(r"^(step|weights)-\d+$")
POINTERS = ("latest", "newest", "best")
FROZEN_RE = re.compile(r"^frozen-[0-9a-f]{16}\.safetensors$")
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


def mirror_model(copy: nn.Module, original: nn.Module) -> nn.Module:
    """Make a detached copy of the GPT look like the original: tied embeddings tied again and the
    same requires_grad flags (the writer stores frozen parameters apart by them)."""
    if original.cfg.tie_embeddings:
        copy.lm_head.weight = copy.wte.weight
    flags = {n: p.requires_grad for n, p in original.named_parameters(remove_duplicate=False)}
    for n, p in copy.named_parameters(remove_duplicate=False):
        p.requires_grad_(flags.get(n, True))
    return copy


def step_dir_name(step: int, kind: str = FULL) -> str:
    return f"{_PREFIX[kind]}-{step:06d}"


# ---------------------------------------------------------------- weights, frozen parameters
def frozen_param_names(module: nn.Module) -> list[str]:
    """State-dict names (aliases of tied parameters included) of parameters with requires_grad=False."""
    return sorted(n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad)


def _unique(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One name per shared tensor (safetensors refuses aliases), contiguous, in name order."""
    out, seen = {}, set()
    for name in sorted(sd):
        t = sd[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def save_frozen(root: Path, module: nn.Module, names: list[str]) -> tuple[dict[str, Any], bool]:
    """Store the tensors `names` of `module` in `root/frozen-<sha16>.safetensors` unless a file with
    that content is already there; returns (manifest reference, whether the file was written)."""
    params = dict(module.named_parameters(remove_duplicate=False))
    # no step or time in the metadata: equal tensors give equal bytes, hence the same file
    data = save(_unique({n: params[n].detach().cpu() for n in names}), metadata={"format": "pt"})
    digest = hashlib.sha256(data).hexdigest()
    ref = {"file": f"frozen-{digest[:16]}.safetensors", "sha256": digest, "bytes": len(data), "tensors": list(names)}
    f = Path(root) / ref["file"]
    if f.is_file() and f.stat().st_size == len(data) and sha256_file(f) == digest:
        return ref, False
    atomic_write_bytes(f, data)  # also repairs a damaged copy
    return ref, True


def _save_weights(module: nn.Module, path: Path, step: int, frozen: dict[str, Any] | None) -> None:
    meta = {"format": "pt", "step": str(step)}
    if not frozen:
        save_model(module, str(path), metadata=meta)  # dedups tied weights
        return
    skip = set(frozen["tensors"])
    save_file(_unique({k: v for k, v in module.state_dict().items() if k not in skip}), str(path), metadata=meta)


def write_checkpoint(root: Path, step: int, *, model_state: nn.Module | None, optim_state: dict | None,
                     state: dict[str, Any], frozen: dict[str, Any] | None = None) -> Path:
    """Write one complete checkpoint atomically and return its final directory.

    model_state: the unwrapped model (safetensors dedups tied weights); optim_state: what goes in
    optimizer.pt (None = a weights-only checkpoint, written to `weights-N/`); state: JSON-serialisable
    training state; frozen: a `save_frozen` reference whose tensors are left out of model.safetensors.
    """
    kind = FULL if optim_state is not None else WEIGHTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step, kind)
    tmp = root / (final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _write_tmp(tmp, step, kind, model_state, optim_state, state, frozen)
    except OSError as e:  # the partial copy is removed: it must neither fill the disk nor block a resume
        shutil.rmtree(tmp, ignore_errors=True)
        if out_of_space(e):
            need = _state_bytes(model_state) + _state_bytes(optim_state)
            raise CheckpointError(
                f"out of disk space writing checkpoint {final.name} in {root}: it needs about {human_bytes(need)}, "
                f"{human_bytes(free_bytes(root))} free. The partial copy was removed and the last complete "
                f"checkpoint is intact: free space (or lower train.keep_last), then resume with --resume auto "
                f"(`lmforge run` resumes by itself)") from None
        raise
    if final.exists():  # re-reaching a step after a rollback or resume: replace the old copy
        old = root / (final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    return final


def _torch_save(obj: Any, path: Path) -> None:
    """torch.save, whose full-disk failure (a RuntimeError from its zip writer) becomes the OSError
    (ENOSPC) it is, so callers handle it as such."""
    try:
        torch.save(obj, path)
    except RuntimeError as e:
        free = free_bytes(path.parent)
        if free is not None and free < max(_state_bytes(obj), 1 << 20):
            raise OSError(errno.ENOSPC, f"No space left on device ({str(e).splitlines()[0][:120]})", str(path)) from e
        raise


def _state_bytes(obj: Any) -> int:
    """Bytes of the tensors in a module or a nested state (an estimate of what a checkpoint writes)."""
    if isinstance(obj, nn.Module):
        return sum(t.numel() * t.element_size() for t in _unique(obj.state_dict()).values())
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def _write_tmp(tmp: Path, step: int, kind: str, model_state: nn.Module | None, optim_state: dict | None,
               state: dict[str, Any], frozen: dict[str, Any] | None) -> None:
    files = []
    if model_state is not None:
        _save_weights(model_state, tmp / MODEL_FILE, step, frozen)
        files.append(MODEL_FILE)
    if optim_state is not None:
        _torch_save(optim_state, tmp / OPTIM_FILE)
        files.append(OPTIM_FILE)
    state = {**state, "kind": kind}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=_json_default) + "\n")
    files.append(STATE_FILE)
    for name in files:
        _fsync_file(tmp / name)
    manifest: dict[str, Any] = {
        "step": step, "kind": kind, "time": time.time(),
        "files": {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in files}}
    if frozen:
        manifest["frozen"] = frozen
    prints = {"tokenizer": state.get("tokenizer_fingerprint"), "tokens": state.get("data_fingerprint")}
    if any(prints.values()):
        manifest["fingerprints"] = prints
    if state.get("init_from"):  # train.init_from: the weights this run started from
        manifest["init_from"] = state["init_from"]
    atomic_write_json(tmp / MANIFEST, manifest)  # last: its presence means "complete"
    fsync_dir(tmp)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------- verification and discovery
def _check_file(ckpt: Path, f: Path, meta: dict[str, Any], what: str) -> None:
    if not f.is_file():
        raise CheckpointError(f"checkpoint {ckpt}: {what} {f.name} listed in the manifest is missing")
    if f.stat().st_size != meta["bytes"]:
        raise CheckpointError(f"checkpoint {ckpt}: {what} {f.name} has {f.stat().st_size} bytes, manifest says "
                              f"{meta['bytes']} (truncated or corrupted)")
    if sha256_file(f) != meta["sha256"]:
        raise CheckpointError(f"checkpoint {ckpt}: {what} {f.name} fails its sha256 checksum (corrupted)")


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256 (the shared frozen-parameter file
    included); return the manifest or raise CheckpointError."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: no {MANIFEST} (interrupted while writing?)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        frozen = manifest.get("frozen")
        shared = None if frozen is None else (str(frozen["file"]), frozen)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({e})") from None
    for name, meta in files.items():
        _check_file(path, path / name, meta, "file")
    if shared is not None:
        if not FROZEN_RE.match(shared[0]):
            raise CheckpointError(f"checkpoint {path}: {MANIFEST} names an invalid frozen file {shared[0]!r}")
        try:
            _check_file(path, path.parent / shared[0], shared[1], "shared frozen-parameter file")
        except CheckpointError as e:
            raise CheckpointError(f"{e}; it must sit next to the checkpoint directory, in {path.parent}") from None
    return manifest


def checkpoint_kind(manifest: dict[str, Any]) -> str:
    """`full` or `weights` (manifests written before kinds existed are full ones)."""
    return manifest.get("kind", FULL)


def list_checkpoints(root: Path, kind: str = FULL) -> list[tuple[int, Path]]:
    """(step, dir) of every finished-looking checkpoint directory of `kind` (`full`, `weights` or
    `any`), newest first, a full one before a weights-only one of the same step (not yet verified)."""
    if not Path(root).is_dir():
        return []
    kinds = (FULL, WEIGHTS) if kind == "any" else (kind,)
    found = []
    for p in Path(root).iterdir():
        for k in kinds:
            if p.is_dir() and (m := _DIR_RE[k].match(p.name)):
                found.append((int(m.group(1)), k == FULL, p))
    return [(s, p) for s, _, p in sorted(found, key=lambda x: (x[0], x[1]), reverse=True)]


def clean_partial(root: Path) -> list[Path]:
    """Remove `<name>.tmp/` and `.old` leftovers of an interrupted write (and half-written frozen
    files); returns what was removed."""
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.endswith((".tmp", ".old")) and p.name.startswith(("step-", "weights-")):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.is_file() and p.name.startswith(".frozen-") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def find_resume(root: Path, resume: str) -> Path | None:
    """`auto`: the checkpoint `latest` names when it verifies; else (no pointer, or it names a
    corrupt checkpoint) the newest FULL checkpoint that verifies (corrupted ones are skipped with a
    warning, and pointers naming them are moved to the one found), or None when there is none.
    Weights-only checkpoints are never resumed from (a newer one is reported in the log). Any other
    value is a full checkpoint directory, which must verify."""
    if resume != "auto":
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"resume checkpoint {path} does not exist")
        if checkpoint_kind(verify_checkpoint(path)) != FULL:
            raise CheckpointError(f"checkpoint {path} is weights-only (kind: weights): it holds no optimizer, RNG or "
                                  f"data-loader state, so training cannot resume from it; resume from a step-N "
                                  f"checkpoint (--resume auto picks the newest), or load it with eval/generate/export")
        return path
    bad: list[str] = []
    found = _good_full(root, _pointer_name(root, "latest"), bad)
    if found is None:
        for _, path in list_checkpoints(root):
            if path.name not in bad and (found := _good_full(root, path.name, bad)) is not None:
                break
    repair_pointers(root, found, bad)
    _report_newer_light(root, found)
    return found


def _good_full(root: Path, name: str | None, bad: list[str]) -> Path | None:
    """root/name when it is a full checkpoint that verifies; a failing one is added to `bad`."""
    if name is None or not (root / name).is_dir():
        return None
    try:
        if checkpoint_kind(verify_checkpoint(root / name)) == FULL:
            return root / name
    except CheckpointError as e:
        log.warning("skipping checkpoint: %s", e)
        bad.append(name)
    return None


def repair_pointers(root: Path, good: Path | None, bad: list[str]) -> None:
    """Move every pointer that cannot be used to `good` (remove it when there is none): one naming a
    checkpoint in `bad`, a missing directory or something invalid; `latest` naming anything but the
    resumable `good`; `best`/`newest` naming a checkpoint that fails verification."""
    root = Path(root)
    for name in POINTERS:
        if not (root / name).is_file():
            continue
        target = _pointer_name(root, name)
        if good is not None and target == good.name:
            continue
        if target is not None and target not in bad and name != "latest":
            try:
                verify_checkpoint(root / target)
                continue
            except CheckpointError as e:
                log.warning("checkpoint named by %s fails verification: %s", name, e)
        if good is not None:
            set_pointer(root, name, good)
            log.warning("pointer %s named %s, which cannot be used; it now names %s", name, target, good.name)
        else:
            (root / name).unlink(missing_ok=True)
            log.warning("pointer %s named %s, which cannot be used, and no complete checkpoint is left: removed it",
                        name, target)


def _pointer_name(root: Path, name: str) -> str | None:
    """The checkpoint directory name a pointer holds, or None when the pointer is absent or invalid
    (logged: `--resume auto` then falls back to the newest checkpoint that verifies)."""
    try:
        p = read_pointer(root, name)
    except CheckpointError as e:
        log.warning("%s", e)
        return None
    return None if p is None else p.name


def start_branch(root: Path, ckpt: Path) -> tuple[Path | None, list[str]]:
    """Resuming from `ckpt` while checkpoints with higher steps exist: move those (full and
    weights-only) into `root/abandoned-<time>/`, with a copy of the frozen file each needs, so the
    old branch is kept whole and nothing of it is resumed or pruned by mistake. Pointers that named
    a moved checkpoint now name `ckpt`. Returns (the folder, the names moved)."""
    root, step = Path(root), int(re.search(r"(\d+)$", Path(ckpt).name).group(1))
    later = [p for s, p in list_checkpoints(root, "any") if s > step]
    if not later:
        return None, []
    aside = root / time.strftime("abandoned-%Y%m%d-%H%M%S")
    n = 0
    while aside.exists():
        n += 1
        aside = root / f"{aside.name.split('.')[0]}.{n}"
    aside.mkdir()
    moved = []
    for p in sorted(later):
        ref = _frozen_ref(p)
        if ref and FROZEN_RE.match(str(ref.get("file"))) and (root / ref["file"]).is_file() \
                and not (aside / ref["file"]).exists():
            shutil.copy2(root / ref["file"], aside / ref["file"])
        os.replace(p, aside / p.name)
        moved.append(p.name)
    fsync_dir(root)
    for name in POINTERS:
        if _pointer_name(root, name) in moved:
            set_pointer(root, name, Path(ckpt))
    log.warning("resuming from %s, an older checkpoint than %s: a new branch starts here; the old branch's later "
                "checkpoints were moved (not deleted) to %s", Path(ckpt).name, ", ".join(moved), aside)
    return aside, moved


def _report_newer_light(root: Path, full: Path | None) -> None:
    full_step = -1 if full is None else int(STEP_RE.match(full.name).group(1))
    newer = [p.name for s, p in list_checkpoints(root, WEIGHTS) if s > full_step]
    if newer:
        log.warning("resume=auto: %s; the newer weights-only checkpoint(s) %s hold no optimizer, RNG or loader "
                    "state and are not resumed from (steps after %d are trained again)",
                    f"resuming from the full checkpoint {full.name}" if full else "no full checkpoint, starting fresh",
                    ", ".join(sorted(newer)), max(full_step, 0))


# ---------------------------------------------------------------- pointers and retention
def set_pointer(root: Path, name: str, ckpt: Path) -> None:
    atomic_write_text(root / name, ckpt.name + "\n")


def read_pointer(root: Path, name: str) -> Path | None:
    """The checkpoint directory pointer `name` names (None when the pointer or its directory is
    absent). A pointer must hold a `step-N` or `weights-N` name of this checkpoints/ directory:
    anything else (a path, `..`) is refused, never followed."""
    p = Path(root) / name
    if not p.is_file():
        return None
    try:
        text = p.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as e:
        raise CheckpointError(f"pointer {p} cannot be read ({e.strerror})") from None
    if not POINTER_RE.match(text) or p.is_symlink():
        shown = text if len(text) <= 120 else text[:120] + "..."
        raise CheckpointError(f"pointer {p} names {shown!r}, which is outside {root} or not a checkpoint name: a "
                              f"pointer holds one name like step-000500 or weights-000250 of that directory. Fix or "
                              f"delete the file ({name}); --resume auto then uses the newest complete checkpoint")
    target = Path(root) / text
    return target if target.is_dir() else None


def _safe_pointer(root: Path, name: str) -> Path | None:
    try:
        return read_pointer(root, name)
    except CheckpointError:
        return None


def _prune(root: Path, victims: list[tuple[int, Path]]) -> list[Path]:
    best = _safe_pointer(root, "best")
    removed = []
    for _, path in victims:
        if best is not None and path.resolve() == best.resolve():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed + prune_frozen(root)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete full checkpoints beyond the newest `keep_last`, never the one `best` names (weights-only
    checkpoints are not counted and not touched), then frozen files no manifest names any more."""
    return _prune(root, list_checkpoints(root)[keep_last:])


def prune_light(root: Path, keep_last: int, step: int) -> list[Path]:
    """Delete weights-only checkpoints beyond the newest `keep_last`, and any newer than `step` (left
    by an abandoned trajectory: a crash, a rollback or an earlier run); never `best`, never a full one."""
    light = list_checkpoints(root, WEIGHTS)
    return _prune(root, [x for x in light if x[0] > step] + [x for x in light if x[0] <= step][keep_last:])


def prune_frozen(root: Path) -> list[Path]:
    """Delete `frozen-*.safetensors` files that no checkpoint manifest names; keeps them all when a
    manifest exists but cannot be read (its references are unknown)."""
    root = Path(root)
    frozen = [p for p in root.iterdir() if FROZEN_RE.match(p.name)] if root.is_dir() else []
    if not frozen:
        return []
    used = set()
    for _, path in list_checkpoints(root, "any"):
        if not (path / MANIFEST).exists():
            continue  # incomplete: never loaded, so its references do not matter
        try:
            ref = json.loads((path / MANIFEST).read_text()).get("frozen")
        except (OSError, ValueError, AttributeError):
            return []
        if ref:
            used.add(ref.get("file"))
    removed = [p for p in frozen if p.name not in used]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------- loading
def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def load_optimizer_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """optimizer.pt through the safe unpickler: a file that would run code raises CheckpointError."""
    try:
        return torch.load(Path(path) / OPTIM_FILE, map_location=device, weights_only=True)
    except Exception as e:  # UnpicklingError and friends: never retry with weights_only=False
        raise CheckpointError(f"checkpoint {path}: {OPTIM_FILE} refused by the safe loader, which never runs code "
                              f"from a checkpoint: {_why_refused(e)}. Use a checkpoint lmforge wrote, or resume from "
                              f"another one") from None


def _why_refused(e: BaseException) -> str:
    """The reason in torch's message without its advice to reload with weights_only=False (which
    would run whatever code the file holds)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not re.search(r"weights_only|Re-running|trusted source|documentation of torch", ln)]
    return (keep[0] if keep else type(e).__name__)[:300]


def _frozen_ref(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("frozen")
    except (OSError, ValueError):
        return None


def read_weights(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name: model.safetensors plus the shared frozen file it names."""
    sd = load_file(str(Path(path) / MODEL_FILE), device=str(device))
    if (ref := _frozen_ref(path)) is not None:
        sd.update(load_file(str(Path(path).parent / ref["file"]), device=str(device)))
    return sd


def load_weights(model: nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    """Load the checkpoint's weights (frozen file included) into `model`; a tied twin of a loaded
    tensor (wte/lm_head) counts as loaded, anything else missing or unexpected raises."""
    raw = unwrap(model)
    sd = read_weights(path, device)
    try:
        missing, unexpected = raw.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"checkpoint {path}: weights do not fit the model ({str(e).splitlines()[-1].strip()}); "
                              f"was model.* changed?") from None
    aliases: dict[int, list[str]] = {}
    for name, t in raw.state_dict(keep_vars=True).items():
        aliases.setdefault(id(t), []).append(name)
    twins = {n: group for group in aliases.values() for n in group}
    missing = [m for m in missing if not any(a in sd for a in twins.get(m, [m]))]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}); was model.* changed?")


def resolve(run_dir: Path, which: str) -> Path:
    """`best` / `latest` / `newest` pointer of RUN_DIR/checkpoints, or a checkpoint directory path.
    `best` falls back to `latest`, then `newest`; `newest` (absent in older runs) to `latest`."""
    root = Path(run_dir) / "checkpoints"
    chains = {"best": ("best", "latest", "newest"), "latest": ("latest",), "newest": ("newest", "latest")}
    if which in chains:
        path = next((p for name in chains[which] if (p := read_pointer(root, name)) is not None), None)
        if path is None:
            raise CheckpointError(f"no {which} checkpoint in {root}: train first (`lmforge train`) or pass a "
                                  f"checkpoint directory")
        return path
    path = Path(which)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (expected best, latest, newest or a checkpoint "
                              f"directory)")
    return path


def tokens_fingerprint(tokens_dir: Path) -> str:
    """Identity of a tokens/ directory, as recorded in checkpoints: its manifest.json without the
    timing `stats` (so an identical rebuild has the same identity; the manifest holds every shard's
    sha256, the tokenizer fingerprint and the tokens config)."""
    man = Path(tokens_dir) / "manifest.json"
    if not man.is_file():
        return "none"
    try:
        data = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return hashlib.sha256(man.read_bytes()).hexdigest()[:16]
    if isinstance(data, dict):
        data.pop("stats", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def legacy_tokens_fingerprint(tokens_dir: Path) -> str:
    """The fingerprint checkpoints written before `tokens_fingerprint` held (the manifest's bytes)."""
    man = Path(tokens_dir) / "manifest.json"
    return hashlib.sha256(man.read_bytes()).hexdigest()[:16] if man.is_file() else "none"


def same_tokens(want: str | None, tokens_dir: Path) -> bool:
    return want in (tokens_fingerprint(tokens_dir), legacy_tokens_fingerprint(tokens_dir))


def _fingerprints(manifest: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    prints = dict(manifest.get("fingerprints") or {})
    prints.setdefault("tokenizer", state.get("tokenizer_fingerprint"))
    prints.setdefault("tokens", state.get("data_fingerprint"))
    return prints


def check_tokenizer(path: Path, prints: dict[str, Any], tokenizer: Any, vocab_size: int) -> None:
    """Refuse a tokenizer other than the one checkpoint `path` was trained with (checkpoints written
    before fingerprints were recorded get the vocabulary-size check only)."""
    want = prints.get("tokenizer")
    if tokenizer is not None:
        if want and want != tokenizer.fingerprint:
            raise CheckpointError(
                f"checkpoint {path} was trained with another tokenizer (fingerprint {want}; "
                f"{getattr(tokenizer, 'path', None) or 'the tokenizer given'} has {tokenizer.fingerprint}): its "
                f"token ids would mean other text. Restore the run's original tokenizer/, or retrain (a new run "
                f"directory) with this one")
        if tokenizer.vocab_size > vocab_size:
            raise CheckpointError(
                f"checkpoint {path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                f"{vocab_size} (model.vocab_size): they do not belong together; use the run's own tokenizer/")


def check_tokens(info: dict[str, Any], tokens_dir: Path) -> None:
    """Refuse token shards other than those the checkpoint of `info` (from `load_for_inference`)
    was trained on: its validation split could hold training documents."""
    path, want = info.get("path"), (info.get("fingerprints") or {}).get("tokens")
    if want and want != "none" and Path(tokens_dir).is_dir() and not same_tokens(want, tokens_dir):
        have = tokens_fingerprint(tokens_dir)
        if have != want:
            raise CheckpointError(
                f"checkpoint {path} was trained on other token shards than {tokens_dir} (fingerprint {want}, now "
                f"{have}): the validation split may hold training documents. Restore the original tokens/ (rerun "
                f"`lmforge tokenize` with the run's config) or evaluate the matching checkpoint")


def load_for_inference(run_dir: str | Path, which: str = "best", device: str = "cpu") -> tuple[nn.Module, Any, dict]:
    """(model in eval mode, tokenizer, info) from a verified checkpoint of RUN_DIR, full or weights-only.

    The run's tokenizer must be the one the checkpoint was trained with (its fingerprint), else
    CheckpointError. info: path, kind, step, tokens_seen, val_loss, config (the run's resolved config
    as a dict), fingerprints (tokenizer, tokens: see `check_tokens`).
    """
    from lmforge.model import GPT
    from lmforge.model.config import ModelConfig
    from lmforge.tokenizer import load_tokenizer

    path = resolve(Path(run_dir), which)
    manifest = verify_checkpoint(path)
    state = read_state(path)
    model = GPT(ModelConfig(**state["config"]["model"]))
    load_weights(model, path, device)
    model.to(device).eval()
    tok_dir = Path(run_dir) / "tokenizer"
    tokenizer = load_tokenizer(tok_dir) if tok_dir.exists() else None
    prints = _fingerprints(manifest, state)
    check_tokenizer(path, prints, tokenizer, model.cfg.vocab_size)
    info = {"fingerprints": prints, "path": str(path), "kind": checkpoint_kind(manifest), "step": state["step"],
            "tokens_seen": state.get("tokens_seen"), "val_loss": state.get("val_loss"), "config": state["config"]}
    return model, tokenizer, info
