"""Fixtures for eval tests (helpers live in lmf_evalkit.py, shared with tests/export)."""

from __future__ import annotations

import pytest
from lmf_evalkit import build_tokenizer, tiny_model


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def model(tokenizer):
    return tiny_model(tokenizer.vocab_size)

