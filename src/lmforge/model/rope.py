"""RoPE inverse frequencies: the default schedule and the scalings of Hugging Face checkpoints.

    inv_freq = rope_inv_freq(head_dim, theta, {"rope_type": "llama3", "factor": 8.0, ...})

`scaling` (`model.rope_scaling`) follows HF's `rope_parameters`: `rope_type` `default`, `linear`
(`factor`: positions / factor) or `llama3` (`factor`, `low_freq_factor`, `high_freq_factor`,
`original_max_position_embeddings`: Llama 3.1's wavelength-dependent scaling). The formulas are
transformers' (`modeling_rope_utils`), so an imported model's logits match. Types whose effect
depends on the sequence length at run time (`dynamic`) or that also rescale cos/sin (`yarn`,
`longrope`) are not supported.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SCALINGS = ("default", "linear", "llama3")
_REQUIRED = {"default": (), "linear": ("factor",),
             "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def scaling_problem(scaling: dict[str, Any] | None) -> str | None:
    """Why `scaling` cannot be used (a sentence), or None when it can."""
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in SCALINGS:
        return f"RoPE scaling type {kind!r} is not supported (supported: {', '.join(SCALINGS)})"
    missing = [k for k in _REQUIRED[kind] if not isinstance(scaling.get(k), (int, float))]
    if missing:
        return f"RoPE scaling {kind!r} needs numeric {', '.join(missing)}"
    return None


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """(head_dim / 2,) float32 inverse frequencies."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        factor, lo, hi = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / hi) * ~(wavelen > old_len / lo)
        return torch.where(medium, smoothed, scaled)
    return inv_freq
