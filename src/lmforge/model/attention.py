"""Causal self-attention kernels for packed documents, chosen by `model.attention`.

A packed row holds several documents; a token may attend only to earlier tokens of its own
document (block-diagonal causal attention). The paths:

* `flex` (CUDA): compiled `flex_attention` with a `BlockMask` built once per forward from the
  document ids. Mask memory: the (B, T) ids the mask function reads, plus int32 block indices of
  O(B * (T/128)^2) -- at T=1024 that is 8x8 blocks per row, against B*T*T bytes for a dense mask.
  FlexAttention skips fully masked 128x128 tiles, so short documents also save FLOPs. Chosen over
  `torch.nn.attention.varlen` (flash varlen) because it composes with `torch.compile` of the whole
  model, takes grouped-query heads, and runs forward on CPU too, so tests can check it.
  FlexAttention has no backward on CPU in torch 2.13: training on CPU with `flex` is refused.
* `sdpa`: without document ids, SDPA with `is_causal=True` (the flash kernel on CUDA). With document
  ids, variable-length attention by padding: the documents of the batch are cut out, grouped by
  length into power-of-two buckets, and each bucket runs one causal SDPA call of shape
  (documents, heads, bucket length, head size). No T x T mask exists; padding sits at the end of a
  document, where causality keeps real queries from seeing it. Cost per bucket is at most 4x the
  exact sum of squared document lengths, and usually far less than B*T^2. This is the CPU default.
* `dense`: SDPA with a dense (B, 1, T, T) boolean mask: the reference, O(T^2) memory.
* `auto`: `flex` on CUDA and `sdpa` elsewhere when documents are packed; SDPA `is_causal` when not.

    spec = attention_spec(cfg.attention, doc_ids, T, device)   # once per forward, shared by the layers
    y = attend(q, k, v, spec, dropout_p=0.0)                   # q (B, h, T, hd), k/v (B, kv_h, T, hd)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError

FLEX_BLOCK = 128
"""FlexAttention tile size (query and key)."""


@dataclass
class AttentionSpec:
    """How one forward pass attends; built once, shared by every layer."""

    kind: str
    """`causal` (no document boundaries), `dense`, `varlen` or `flex`."""
    mask: torch.Tensor | None = None
    """`dense`: (B, 1, T, T) bool."""
    varlen: Any = None
    """`varlen`: a `VarlenLayout`."""
    block_mask: Any = None
    """`flex`: a FlexAttention `BlockMask`."""


def resolve_kind(attention: str, has_docs: bool, device: torch.device) -> str:
    """The kernel `attention` (auto | sdpa | flex | dense) selects for this input."""
    if attention == "auto":
        if not has_docs:
            return "causal"
        return "flex" if device.type == "cuda" else "varlen"
    if attention == "sdpa":
        return "varlen" if has_docs else "causal"
    if attention == "flex":
        return "flex"
    return "dense" if has_docs else "causal"


def attention_spec(attention: str, doc_ids: torch.Tensor | None, T: int, device: torch.device) -> AttentionSpec:
    kind = resolve_kind(attention, doc_ids is not None, device)
    if kind == "causal":
        return AttentionSpec("causal")
    if doc_ids is None:  # flex forced without packing: plain causal blocks
        doc_ids = torch.zeros(1, T, dtype=torch.long, device=device)
    if kind == "dense":
        return AttentionSpec("dense", mask=dense_document_mask(doc_ids))
    if kind == "varlen":
        layout = VarlenLayout.from_doc_ids(doc_ids)
        # every row one document (a long text cut into windows): plain causal attention, no gathers
        return AttentionSpec("causal") if layout.single_documents else AttentionSpec("varlen", varlen=layout)
    # inside a compiled model the mask builder is traced with it; eager on CUDA, it gets its own compile
    compiled = device.type == "cuda" and not torch.compiler.is_compiling()
    return AttentionSpec("flex", block_mask=document_block_mask(doc_ids, compiled=compiled))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec,
           dropout_p: float = 0.0) -> torch.Tensor:
    """q (B, h, T, hd), k/v (B, kv_h, T, hd) -> (B, h, T, hd), block-diagonal causal per `spec`."""
    gqa = k.size(1) != q.size(1)
    if spec.kind == "causal":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, dropout_p=dropout_p)
    if spec.kind == "dense":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=spec.mask, enable_gqa=gqa, dropout_p=dropout_p)
    if spec.kind == "varlen":
        return spec.varlen.attend(q, k, v, gqa, dropout_p)
    if dropout_p > 0.0:
        raise LmforgeError("config key 'model.attention': flex has no attention dropout; set model.dropout=0 "
                           "or model.attention=sdpa")
    if q.device.type != "cuda":
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            raise LmforgeError("config key 'model.attention': flex cannot train on CPU (FlexAttention has no "
                               "backward on CPU in torch 2.13); use model.attention=auto or sdpa")
        q, k, v = q.detach(), k.detach(), v.detach()  # flex refuses CPU inputs that require grad
    return _flex()(q, k, v, block_mask=spec.block_mask, enable_gqa=gqa)


@functools.cache
def _flex() -> Any:
    """flex_attention compiled once per process (eager flex materialises the scores); dynamo caches
    one kernel per input shape. Inside a compiled model the call is inlined."""
    from torch.nn.attention.flex_attention import flex_attention

    if not torch.cuda.is_available():
        return flex_attention  # CPU: forward only, eager (tests and inference)
    return torch.compile(flex_attention, dynamic=False)


# --------------------------------------------------------------------------- variable length (SDPA)

class VarlenLayout:
    """Where each document of a packed (B, T) batch lives, bucketed by padded length.

    Built on the host from the document ids (one small device->host copy on CUDA)."""

    def __init__(self, B: int, T: int, buckets: list[tuple[torch.Tensor, torch.Tensor]], inverse: torch.Tensor,
                 single_documents: bool = False) -> None:
        self.B, self.T = B, T
        self.single_documents = single_documents
        """No row holds a document boundary (the layout is the rows themselves)."""
        self.buckets = buckets
        """(gather index (n, L) into the B*T flat tokens, valid (n, L) bool) per padded length L."""
        self.inverse = inverse
        """Position of each flat token in the concatenation of the buckets' valid outputs."""

    @classmethod
    def from_doc_ids(cls, doc_ids: torch.Tensor) -> VarlenLayout:
        B, T = doc_ids.shape
        ids = doc_ids.detach().cpu()
        change = torch.ones(B, T, dtype=torch.bool)  # every row starts a document
        change[:, 1:] = ids[:, 1:] != ids[:, :-1]
        starts = change.flatten().nonzero().flatten()  # flat start of every document run
        lengths = torch.cat([starts[1:], torch.tensor([B * T])]) - starts
        padded = (2 ** torch.ceil(torch.log2(lengths.double().clamp_min(16)))).long().clamp_max(T)
        buckets, order = [], []
        for L in padded.unique().tolist():
            sel = padded == L
            s, n = starts[sel], lengths[sel]
            offs = torch.arange(L)
            valid = offs[None, :] < n[:, None]  # (n, L)
            index = torch.where(valid, s[:, None] + offs[None, :], torch.zeros((), dtype=torch.long))
            order.append(index[valid])
            buckets.append((index.to(doc_ids.device), valid.to(doc_ids.device)))
        inverse = torch.argsort(torch.cat(order)).to(doc_ids.device)  # the buckets hold every token once
        return cls(B, T, buckets, inverse, single_documents=len(starts) == B)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gqa: bool, dropout_p: float) -> torch.Tensor:
        B, h, T, hd = q.shape
        flat = [t.transpose(1, 2).reshape(B * T, t.size(1), hd) for t in (q, k, v)]  # (B*T, heads, hd)
        outs = []
        for index, valid in self.buckets:
            qs, ks, vs = (t[index].transpose(1, 2) for t in flat)  # (n, heads, L, hd)
            y = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=gqa, dropout_p=dropout_p)
            outs.append(y.transpose(1, 2)[valid])  # (tokens of these documents, h, hd)
        return torch.cat(outs)[self.inverse].view(B, T, h, hd).transpose(1, 2)


# --------------------------------------------------------------------------- masks

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


def document_block_mask(doc_ids: torch.Tensor, block_size: int = FLEX_BLOCK, *, compiled: bool = False) -> Any:
    """FlexAttention BlockMask (heads broadcast) for `doc_ids` (B, T). `compiled` builds it with a
    compiled kernel (CUDA: milliseconds instead of a dense evaluation of the mask function)."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = doc_ids.shape
    return create_block_mask(document_mask_mod(doc_ids), B, None, T, T, device=doc_ids.device,
                             BLOCK_SIZE=block_size, _compile=compiled)


def block_mask_bytes(block_mask: Any) -> int:
    """Bytes held by a BlockMask's index tensors (what stays in memory during attention)."""
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
             "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")
    tensors = [getattr(block_mask, n, None) for n in names]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def mask_memory_report(doc_ids: torch.Tensor, block_size: int = FLEX_BLOCK, *,
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
