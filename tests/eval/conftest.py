"""Fixtures for eval tests (helpers live in lmf_evalkit.py, shared with tests/export)."""

from __future__ import annotations

import pytest
import torch
from lmf_evalkit import build_tokenizer, tiny_model


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread on this shared 2-core box; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
