"""`tokenizer.kind: pretrained`: reuse an existing Hugging Face tokenizer instead of training one.

    tokenizer: {kind: pretrained, path: path/to/hf-model-or-tokenizer-dir}   # or .../tokenizer.json

`tokenizer.json` is copied byte for byte (so its fingerprint, and every check built on it, is the
source's), and `meta.json` records which of its tokens play lmforge's four roles:

* from `tokenizer_config.json` / `special_tokens_map.json` beside it (`bos_token`, `eos_token`, ...);
* else lmforge's own spellings (`<pad> <unk> <bos> <eos>`, an lmforge run's tokenizer), then the usual
  ones (`<s>`, `</s>`, `<|endoftext|>`, `<|begin_of_text|>`, ...), then `config.json`'s ids;
* a role the tokenizer has no token for falls back to its end-of-text token (GPT-2 does exactly this:
  `<|endoftext|>` is its bos, eos and unk), and the fallback is recorded. Padding is never trained on.

The vocabulary size is the tokenizer's (added tokens included). Without an end-of-text token the
tokenizer cannot mark document boundaries and is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import ConfigError, LmforgeError
from lmforge.io import atomic_write_bytes, atomic_write_json

ROLES = ("pad", "unk", "bos", "eos")
_KNOWN = {
    "pad": ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<bos>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]"),
    "eos": ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "[SEP]"),
}


def tokenizer_file(path: str | Path) -> Path:
    """The tokenizer.json of `path` (a file, or a folder holding one), or ConfigError."""
    p = Path(path)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        hint = (" (it holds only a slow tokenizer: save it with transformers' `AutoTokenizer.from_pretrained(dir)"
                ".save_pretrained(dir)` to get a tokenizer.json)") if p.is_dir() and any(
            (p / n).is_file() for n in ("tokenizer.model", "vocab.json", "vocab.txt")) else ""
        raise ConfigError(f"config key 'tokenizer.path': no tokenizer.json at {f}{hint}")
    return f


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{path} is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def _spelling(v: Any) -> str | None:
    if isinstance(v, dict):  # {"content": "<s>", "lstrip": false, ...}
        v = v.get("content")
    return v if isinstance(v, str) and v else None


def find_roles(hf: HFTokenizer, folder: Path) -> tuple[dict[str, str], list[str]]:
    """({role: token spelling}, roles that fell back to the end-of-text token)."""
    declared: dict[str, str] = {}
    lm_meta = _json(folder / "meta.json").get("roles") or {}
    for source in (_json(folder / "special_tokens_map.json"), _json(folder / "tokenizer_config.json"), lm_meta):
        for role in ROLES:
            tok = _spelling(source.get(f"{role}_token", source.get(role)))
            if tok is not None and hf.token_to_id(tok) is not None:
                declared[role] = tok
    model_cfg = _json(folder / "config.json")
    roles: dict[str, str] = {}
    for role in ROLES:
        cands = ([declared[role]] if role in declared else []) + list(_KNOWN[role])
        tok = next((t for t in cands if hf.token_to_id(t) is not None), None)
        if tok is None and isinstance(model_cfg.get(f"{role}_token_id"), int):
            tok = hf.id_to_token(model_cfg[f"{role}_token_id"])
        if tok is not None:
            roles[role] = tok
    if "eos" not in roles:
        raise LmforgeError(f"{folder}: the tokenizer has no end-of-text token (looked for eos_token in "
                           f"tokenizer_config.json / special_tokens_map.json and {', '.join(_KNOWN['eos'])}); "
                           "lmforge needs one to separate documents")
    fallbacks = [r for r in ROLES if r not in roles]
    for r in fallbacks:
        roles[r] = roles["eos"]
    return roles, fallbacks


def install_pretrained(path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Copy the tokenizer at `path` into `out_dir` (tokenizer.json + meta.json); returns the meta."""
    from lmforge.tokenizer.core import META_FILE, TOKENIZER_FILE, Tokenizer, fingerprint_bytes

    src = tokenizer_file(path)
    data = src.read_bytes()
    try:
        hf = HFTokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise LmforgeError(f"{src} is not a valid tokenizer.json ({e})") from None
    roles, fallbacks = find_roles(hf, src.parent)
    tok = Tokenizer(hf, fingerprint=fingerprint_bytes(data), kind="pretrained", path=src, roles=roles)
    meta = {"kind": "pretrained", "source": str(src), "source_sha256": hashlib.sha256(data).hexdigest(),
            "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint, "roles": roles, "role_fallbacks": fallbacks,
            "special_tokens": {roles[r]: getattr(tok, f"{r}_id") for r in ROLES},
            "pad_id": tok.pad_id, "unk_id": tok.unk_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / TOKENIZER_FILE, data)  # byte for byte: the fingerprint is the source's
    atomic_write_json(out / META_FILE, meta)
    return meta


def source_identity(path: str | Path) -> str:
    """sha256 of the source tokenizer.json and its role files: a changed source reruns the stage."""
    src = tokenizer_file(path)
    h = hashlib.sha256(src.read_bytes())
    for name in ("special_tokens_map.json", "tokenizer_config.json", "meta.json"):
        if (src.parent / name).is_file():
            h.update(name.encode() + (src.parent / name).read_bytes())
    return h.hexdigest()[:16]
