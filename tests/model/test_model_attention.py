"""Attention paths for packed documents (model.attention): dense reference, variable-length SDPA,
FlexAttention (forward on CPU), `auto`'s choice, and the block mask's memory."""

import pytest
import torch

from lmforge.config import ModelConfig, config_from_dict
from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import GPT
from lmforge.model.attention import (
    VarlenLayout,
    attend,
    attention_spec,
    dense_document_mask,
    document_block_mask,
    mask_memory_report,
    resolve_kind,
)

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


def _doc_ids(lengths_per_row):
    return torch.stack([torch.repeat_interleave(torch.arange(len(ls)), torch.tensor(ls)) for ls in lengths_per_row])


# rows mixing documents of 1 token, bucket edges (16, 17, 32, 33) and a full row
LAYOUTS = [[[40, 100, 116], [256]], [[1, 7, 128, 100, 20], [16, 17, 32, 33, 158]]]


def _cfg(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=64, vocab_size=50)
    base.update(kw)
    return ModelConfig(**base)


def test_dense_mask_is_block_diagonal_causal():
    d = torch.tensor([[0, 0, 1, 1, 1, 2]])
    m = dense_document_mask(d)[0, 0]
    want = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0],
                         [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, want)


@pytest.mark.parametrize("lengths", LAYOUTS)
def test_varlen_sdpa_equals_dense_forward_and_gradients(lengths):
    d = _doc_ids(lengths)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 256, 16, requires_grad=True)
    k, v = (torch.randn(2, 2, 256, 16, requires_grad=True) for _ in range(2))  # grouped-query heads
    outs = {}
    for kind in ("dense", "sdpa"):
        spec = attention_spec(kind, d, 256, CPU)
        y = attend(q, k, v, spec)
        outs[kind] = (y, torch.autograd.grad((y * torch.linspace(-1, 1, 16)).sum(), (q, k, v)))
    assert attention_spec("sdpa", d, 256, CPU).mask is None  # no T x T tensor on this path
    torch.testing.assert_close(outs["sdpa"][0], outs["dense"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(outs["sdpa"][1], outs["dense"][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_varlen_buckets_cover_every_token_once():
    d = _doc_ids(LAYOUTS[1])
    lay = VarlenLayout.from_doc_ids(d)
    seen = torch.cat([index[valid] for index, valid in lay.buckets])
    assert torch.equal(seen.sort().values, torch.arange(2 * 256))
    assert sorted(index.size(1) for index, _ in lay.buckets) == [16, 32, 64, 128, 256]


@pytest.mark.parametrize("lengths", LAYOUTS)
def test_flex_forward_on_cpu_equals_dense(lengths):
    d = _doc_ids(lengths)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 256, 16)
    k, v = torch.randn(2, 2, 256, 16), torch.randn(2, 2, 256, 16)
    ref = attend(q, k, v, attention_spec("dense", d, 256, CPU))
    got = attend(q, k, v, attention_spec("flex", d, 256, CPU))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["auto", "sdpa", "dense", "flex"])
def test_every_path_gives_the_same_model_logits_and_isolates_documents(attention):
    torch.manual_seed(0)
    ref = GPT(_cfg(attention="dense")).eval()
    m = GPT(_cfg(attention=attention)).eval()
    m.load_state_dict(ref.state_dict())
    docs = [torch.randint(0, 50, (1, n)) for n in (10, 1, 21, 32)]
    packed = torch.cat(docs, dim=1)  # (1, 64)
    doc = torch.repeat_interleave(torch.arange(4), torch.tensor([10, 1, 21, 32]))[None]
    with torch.no_grad():
        out = m(packed, doc_ids=doc)
        torch.testing.assert_close(out, ref(packed, doc_ids=doc), atol=1e-5, rtol=1e-5)
        start = 0
        for x in docs:  # each document in the pack = the document alone (positions restart)
            torch.testing.assert_close(out[:, start:start + x.size(1)], m(x), atol=1e-5, rtol=1e-5)
            start += x.size(1)
        torch.testing.assert_close(m(packed), ref(packed), atol=1e-5, rtol=1e-5)  # no packing: plain causal


def test_sdpa_path_trains_like_dense():
    torch.manual_seed(0)
    x = torch.randint(0, 50, (3, 64))
    doc = _doc_ids([[5, 59], [64], [30, 2, 32]])
    grads = []
    for attention in ("dense", "sdpa"):
        torch.manual_seed(0)
        m = GPT(_cfg(attention=attention))
        m(x, doc_ids=doc).logsumexp(-1).mean().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_flex_refuses_to_train_on_cpu_with_a_clear_error():
    m = GPT(_cfg(attention="flex"))
    x = torch.randint(0, 50, (1, 64))
    with pytest.raises(LmforgeError, match="model.attention.*flex cannot train on CPU"):
        m(x, doc_ids=torch.zeros(1, 64, dtype=torch.long))


def test_auto_chooses_as_documented():
    assert resolve_kind("auto", True, CUDA) == "flex"
    assert resolve_kind("auto", False, CUDA) == "causal"  # SDPA is_causal: flash
    assert resolve_kind("auto", True, CPU) == "varlen"
    assert resolve_kind("auto", False, CPU) == "causal"
    assert resolve_kind("sdpa", True, CUDA) == "varlen"
    assert resolve_kind("dense", True, CPU) == "dense"
    assert resolve_kind("dense", False, CPU) == "causal"
    assert resolve_kind("flex", False, CPU) == "flex"


def test_config_names_a_bad_attention_value():
    with pytest.raises(ConfigError, match="model.attention"):
        config_from_dict({"model": {"attention": "flash"}})


def test_flex_block_mask_matches_dense_and_reports_memory():
    from torch.nn.attention.flex_attention import flex_attention

    d = _doc_ids(LAYOUTS[0])
    bm = document_block_mask(d, block_size=128)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 256, 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense_document_mask(d))
    got = flex_attention(q, k, v, block_mask=bm)  # forward runs on CPU (no backward there)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    rep = mask_memory_report(d, 128)
    assert rep["dense_bool_bytes"] == 2 * 256 * 256
    assert rep["flex_block_mask_bytes"] == 4 * 2 * 2 * 4 + 4 * 2 * 2 * 2 * 4  # the layout formula, built for real
    assert rep["flex_block_mask_bytes"] == mask_memory_report(d, 128, build_block_mask=False)["flex_block_mask_bytes"]
    assert rep["dense_over_flex"] > 100


@pytest.mark.parametrize("T", [1024, 8192])
def test_block_mask_memory_grows_slower_than_dense(T):
    d = torch.zeros(1, T, dtype=torch.long)
    rep = mask_memory_report(d, 128, build_block_mask=False)
    assert rep["dense_bool_bytes"] == T * T
    assert rep["flex_block_mask_bytes"] == 4 * (T // 128) * 4 + 4 * (T // 128) ** 2 * 4


def test_rows_without_a_document_boundary_take_plain_causal_attention():
    """A long text cut into windows: every row is one document, so `sdpa` needs no gathers and runs SDPA
    `is_causal` directly, with the same output as the dense mask; one boundary brings varlen back."""
    d = torch.tensor([[3] * 64, [4] * 64, [9] * 64])
    assert attention_spec("sdpa", d, 64, CPU).kind == "causal"
    assert attention_spec("auto", d, 64, CPU).kind == "causal"
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 64, 8) for _ in range(3))
    torch.testing.assert_close(attend(q, k, v, attention_spec("sdpa", d, 64, CPU)),
                               attend(q, k, v, attention_spec("dense", d, 64, CPU)), atol=1e-6, rtol=1e-6)
    d[1, 40:] = 5
    assert attention_spec("sdpa", d, 64, CPU).kind == "varlen"
