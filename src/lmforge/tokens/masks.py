"""Document (block-diagonal causal) attention masks in the two forms lmforge uses, and their memory.

* Dense boolean (B, 1, T, T): what `lmforge.model.GPT` passes to SDPA; the CPU path, because
  FlexAttention has no backward on CPU in torch 2.13. B*T*T bytes.
* FlexAttention `BlockMask`: per (batch, query block) the list of key blocks that are fully or
  partly visible, int32 -- O(B * (T/block)^2) bytes; the CUDA path. `create_block_mask` runs
  the mask function block by block on CUDA; on CPU it is slow (seconds at T=1024) and only for tests.

    report = mask_memory_report(batch.doc_ids)   # {"dense_bool_bytes": ..., "flex_block_mask_bytes": ..., ...}
"""

from __future__ import annotations

from typing import Any

import torch


def dense_document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) doc ids -> (B, 1, T, T) bool, True where query i may attend key j (same doc, j <= i)."""
    T = doc_ids.size(1)
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (same & causal)[:, None]


def document_mask_mod(doc_ids: torch.Tensor):
    """FlexAttention mask_mod for block-diagonal causal attention over `doc_ids` (B, T)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (q_idx >= kv_idx)

    return mask_mod


def document_block_mask(doc_ids: torch.Tensor, block_size: int = 128):
    """FlexAttention BlockMask (heads broadcast) for `doc_ids`; T must be a multiple of block_size
    for the sparse form to be exact at the edges (FlexAttention pads otherwise)."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = doc_ids.shape
    return create_block_mask(document_mask_mod(doc_ids), B, None, T, T, device=doc_ids.device, BLOCK_SIZE=block_size)


def block_mask_bytes(block_mask: Any) -> int:
    """Bytes held by a BlockMask's index tensors (what stays in memory during attention)."""
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
             "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
    tensors = [getattr(block_mask, n, None) for n in names]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def mask_memory_report(doc_ids: torch.Tensor, block_size: int = 128, *,
                       build_block_mask: bool = True) -> dict[str, Any]:
    """Memory of the dense bool mask vs the FlexAttention block mask for one batch of doc ids.

    With `build_block_mask=False` the block-mask size is computed from its layout
    (8 int32 tensors: 4 of (B, nblocks) and 4 of (B, nblocks, nblocks)), without building it.
    """
    B, T = doc_ids.shape
    dense = B * T * T  # torch.bool is one byte per element
    nb = -(-T // block_size)
    layout = 4 * (B * nb * 4) + 4 * (B * nb * nb * 4)
    out: dict[str, Any] = {"batch": B, "seq_len": T, "block_size": block_size, "dense_bool_bytes": dense,
                           "flex_block_mask_bytes": layout}
    if build_block_mask:
        bm = document_block_mask(doc_ids, block_size)
        out["flex_block_mask_bytes"] = block_mask_bytes(bm)
        out["block_sparsity_pct"] = round(float(bm.sparsity()), 2)
    out["dense_over_flex"] = round(dense / out["flex_block_mask_bytes"], 1)
    return out
