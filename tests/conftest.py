"""Shared test settings and fixtures."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

TEXTS = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be: that is the question."] * 5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared; restore afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="session")
def web_samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small WARC crawl and its WET extract (`warc`, `wet`, `wet_gz`), written with warcio by
    tests/assets/web/make_web_samples.py around the HTML pages in tests/assets/web."""
    spec = importlib.util.spec_from_file_location("make_web_samples", ASSETS / "web" / "make_web_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_samples(tmp_path_factory.mktemp("web_samples"))


def make_infer_run(root: Path) -> Path:
    """A run directory with a char tokenizer and one checkpoint of a tiny untrained model."""
    from lmforge import checkpoint as ck
    from lmforge.config import TokenizerConfig, config_from_dict
    from lmforge.model import GPT
    from lmforge.tokenizer import train_tokenizer

    tok = train_tokenizer(TokenizerConfig(kind="char"), TEXTS, root / "tokenizer")
    cfg = config_from_dict({"model": {"preset": "tiny", "block_size": 32, "vocab_size": tok.vocab_size}})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    state = {"step": 1, "config": {"model": dataclasses.asdict(cfg.model)}, "tokenizer_fingerprint": tok.fingerprint}
    path = ck.write_checkpoint(root / "checkpoints", 1, model_state=model, optim_state={"optimizer": {}}, state=state)
    for name in ("latest", "best", "newest"):
        ck.set_pointer(root / "checkpoints", name, path)
    return root


@pytest.fixture
def infer_run(tmp_path):
    return make_infer_run(tmp_path / "run")
