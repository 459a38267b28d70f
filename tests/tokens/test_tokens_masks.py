"""Document masks: the dense bool form used by the model and the FlexAttention block form."""

import pytest
import torch

from lmforge.tokens.masks import dense_document_mask, document_block_mask, mask_memory_report


def _doc_ids(B=2, T=256):
    lengths = [[40, 100, 116], [256]]
    return torch.stack([torch.repeat_interleave(torch.arange(len(ls)), torch.tensor(ls)) for ls in lengths[:B]])


def test_dense_mask_is_block_diagonal_causal():
    d = torch.tensor([[0, 0, 1, 1, 1, 2]])
    m = dense_document_mask(d)[0, 0]
    want = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0],
                         [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, want)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_block_mask_matches_dense_and_reports_memory():
    from torch.nn.attention.flex_attention import flex_attention

    d = _doc_ids()
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
