"""An lmforge checkpoint as the data stage's perplexity reference model.

    scorer = load_doc_scorer("runs/ref")              # or runs/ref/checkpoints/step-000500, …/latest
    scorer.perplexity("a document")                   # word-level perplexity
    factory = doc_scorer_factory("runs/ref")          # checked now, loaded later (picklable)
    run_data_stage(cfg.data, out, perplexity_lm=factory)

The data stage may not import later stages (docs/design.md §3), so `lmforge.run` builds the factory and
injects it; every data worker process calls it to load its own copy of the model.

Perplexity is WORD-level, as lm-evaluation-harness's `word_perplexity`: exp(total token NLL of the
document / number of whitespace-separated words). Tokens are scored like `lmforge.eval.scoring`
scores any document (conditioned on an <eos> prefix, long documents in disjoint windows of the
context length); no closing <eos> is appended. Dividing by words instead of tokens makes the number
independent of the tokenizer, so `data.perplexity.max_perplexity` means the same for this model and
for the word n-gram model.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, LmforgeError

KEY = "data.perplexity.model"


def resolve_reference(path: str | Path) -> tuple[Path, Path]:
    """(run directory, verified checkpoint directory) for a run directory (its best checkpoint, else
    latest, else the newest complete one), a checkpoint directory, or a `best`/`latest` pointer file.
    Raises ConfigError naming `data.perplexity.model` when any piece is missing or incomplete."""
    from lmforge.checkpoint import CheckpointError, read_pointer, resolve, verify_checkpoint

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{KEY}: {p} does not exist; give a run directory, RUN/checkpoints/step-N or "
                          "RUN/checkpoints/latest")
    try:
        if p.is_file() and p.parent.name == "checkpoints":  # a best/latest pointer
            run_dir, ckpt = p.parent.parent, read_pointer(p.parent, p.name)
            if ckpt is None:
                raise CheckpointError(f"pointer {p} names no existing checkpoint")
        elif (p / "checkpoints").is_dir():
            run_dir = p
            try:
                ckpt = resolve(p, "best")
            except CheckpointError:  # no pointers (e.g. training crashed before one was written)
                ckpt = _newest_complete(p / "checkpoints")
        elif p.is_dir() and p.parent.name == "checkpoints":
            run_dir, ckpt = p.parent.parent, p
        else:
            raise CheckpointError(f"{p} is neither a run directory (no checkpoints/ inside) nor a checkpoint")
        verify_checkpoint(ckpt)
    except CheckpointError as e:
        raise ConfigError(f"{KEY}: {e}; train the reference model first (`lmforge train`) or point {KEY} at "
                          "a complete checkpoint") from None
    tok = run_dir / "tokenizer" / "tokenizer.json"
    if not tok.is_file():
        raise ConfigError(f"{KEY}: {tok} is missing; the reference run needs its tokenizer "
                          "(run `lmforge tokenizer` for it, or point at another run)")
    return run_dir, ckpt


def _newest_complete(root: Path) -> Path:
    from lmforge.checkpoint import CheckpointError, list_checkpoints, verify_checkpoint

    for _, path in list_checkpoints(root):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError:
            continue
    raise CheckpointError(f"{root} holds no complete checkpoint")


def reference_identity(path: str | Path) -> dict[str, Any]:
    """What the model's scores depend on (checkpoint path and file checksums), for stage fingerprints:
    a moved `latest` pointer or a retrained model reruns the data stage."""
    run_dir, ckpt = resolve_reference(path)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    files = manifest["files"]
    from lmforge.io import sha256_file

    return {"checkpoint": str(ckpt.resolve()), "files": {k: v["sha256"] for k, v in sorted(files.items())},
            "frozen": (manifest.get("frozen") or {}).get("sha256"),  # frozen weights live in a shared file
            "tokenizer": sha256_file(run_dir / "tokenizer" / "tokenizer.json")}


def count_words(text: str) -> int:
    """Whitespace-separated words (lm-evaluation-harness); at least 1, so an empty text is defined."""
    return max(1, len(text.split()))


class CheckpointScorer:
    """Word-level perplexity of documents under an lmforge model (the interface of the n-gram model:
    `perplexity(text)`, plus `perplexities(texts)` that batches windows of several documents)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, threads: int | None = None) -> None:
        self.model, self.tokenizer, self.batch_size, self.threads = model, tokenizer, batch_size, threads

    def nll(self, texts: Sequence[str]) -> list[float]:
        """Total token NLL (nats) of each text, windows packed across texts (same sums as one by one)."""
        import torch

        from lmforge.eval.scoring import score_documents

        tok = self.tokenizer
        docs = tok.encode_batch(list(texts))
        before = torch.get_num_threads()
        if self.threads:  # only while scoring: the rest of the process keeps its setting
            torch.set_num_threads(self.threads)
        try:
            scores, _ = score_documents(self.model, docs, len(docs), prefix_id=tok.eos_id,
                                        bos_id=getattr(tok, "bos_id", None), batch_size=self.batch_size)
        finally:
            torch.set_num_threads(before)
        return scores.nll.tolist()

    def perplexities(self, texts: Sequence[str]) -> list[float]:
        out = []
        for text, nll in zip(texts, self.nll(texts)):
            x = nll / count_words(text)
            out.append(math.exp(x) if x < 700 else math.inf)
        return out

    def perplexity(self, text: str) -> float:
        return self.perplexities([text])[0]


def load_doc_scorer(path: str | Path, *, device: str = "cpu", batch_size: int = 16,
                    threads: int | None = None) -> CheckpointScorer:
    """Load the reference model named by `data.perplexity.model` (see `resolve_reference`).
    `threads`: torch CPU threads while scoring (None: the process's setting)."""
    import torch

    from lmforge.checkpoint import load_for_inference

    run_dir, ckpt = resolve_reference(path)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model, tokenizer, _info = load_for_inference(run_dir, str(ckpt), device)
    except LmforgeError as e:
        raise ConfigError(f"{KEY}: cannot load {ckpt}: {e}") from None
    return CheckpointScorer(model, tokenizer, batch_size=batch_size, threads=threads)


def doc_scorer_factory(path: str | Path, *, device: str = "cpu", batch_size: int = 16,
                       threads: int | None = None) -> Callable[[], CheckpointScorer]:
    """Check the reference now (fail before any worker starts) and return a picklable zero-argument
    factory that loads it, for `run_data_stage(..., perplexity_lm=...)`."""
    resolve_reference(path)
    return functools.partial(load_doc_scorer, str(path), device=device, batch_size=batch_size, threads=threads)
