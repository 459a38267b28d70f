"""Fixtures for the training tests: a tiny run directory (char tokenizer + token shards of the
Python language reference) built once per session through the real stage functions, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmforge.config import Config, config_from_dict


def corpus_text() -> str:
    """English prose every Python carries (the language reference pages `help()` shows), in a fixed
    order, in paragraphs of at most 300 characters: tests never read files outside the repository."""
    from pydoc_data.topics import topics

    paras = (p.strip() for k in sorted(topics) for p in topics[k].split("\n\n"))
    return "\n\n".join(p for p in paras if p and len(p) <= 300)


def _build_template(root: Path, chars: int = 60_000) -> Path:
    from lmforge.config import TokenizerConfig, TokensConfig
    from lmforge.data.document import Document, ShardWriter
    from lmforge.tokenizer import train_tokenizer
    from lmforge.tokens.stage import run_tokenize_stage

    text = corpus_text()[:chars]
    paras = [p for p in text.split("\n\n") if p.strip()]
    with ShardWriter(root / "data", "clean") as w:
        for i, p in enumerate(paras):
            w.write(Document(f"p{i}", p))
    train_tokenizer(TokenizerConfig(kind="char"), paras, root / "tokenizer")
    run_tokenize_stage(TokensConfig(val_fraction=0.1), root / "data", root / "tokenizer", root / "tokens",
                       progress=False)
    return root


@pytest.fixture(scope="session")
def _template_run(tmp_path_factory) -> Path:
    return _build_template(tmp_path_factory.mktemp("template_run"))


@pytest.fixture
def run_dir(_template_run: Path, tmp_path: Path) -> Path:
    """A fresh run directory holding tokenizer/ and tokens/ (no checkpoints yet)."""
    d = tmp_path / "run"
    d.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(_template_run / sub, d / sub)
    return d


def tiny_config(**train) -> Config:
    """The tiny preset, fp32, a few steps; `train` overrides train.* fields."""
    t = dict(batch_size=4, max_steps=6, warmup_steps=2, lr=3e-3, min_lr=3e-4, eval_every=3, eval_batches=2,
             ckpt_every=3, log_every=1, precision="fp32", device="cpu", progress=False, seed=7)
    t.update(train)
    return config_from_dict({"model": {"preset": "tiny", "block_size": 32}, "train": t,
                             "monitor": {"tensorboard": False, "plots": False, "system_every": 0}})


@pytest.fixture(scope="session")
def tiny_cfg():
    """`tiny_cfg(**train_overrides) -> Config` (a fixture, so test modules never import conftest)."""
    return tiny_config



@pytest.fixture(scope="session")
def stop_at():
    """`stop_at(step) -> Callback` that requests a graceful stop (as SIGTERM does) after that step."""
    from lmforge.train.callbacks.base import Callback

    class StopAt(Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def post_step(self, trainer, result) -> None:
            if trainer.state.step == self.step:
                trainer.stop_requested = "test"

    return StopAt
