"""Shared test settings and fixtures."""

import importlib.util
from pathlib import Path

import pytest
import torch


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
