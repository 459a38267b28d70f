"""Fixtures for export tests; the tiny tokenizer and model helpers come from tests/eval/lmf_evalkit.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

from lmf_evalkit import build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread on this shared 2-core box; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
