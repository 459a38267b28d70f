"""eval/samples.jsonl: generated samples with room for human ratings, and `lmforge rate`.

Each line: {"id", "prompt", "text", "tokens", "fluency_ppl", "settings", "step",
"rating": {"fluency": 1-5|null, "coherence": 1-5|null, "creativity": 1-5|null}, "rater"}.
Rewriting the file (a new `lmforge eval`) keeps the ratings of samples whose prompt and text are
unchanged, so a person's work is never thrown away by a re-run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lmforge.errors import LmforgeError
from lmforge.io import atomic_write_text

RATING_KEYS = ("fluency", "coherence", "creativity")


def make_samples(model, tokenizer, cfg, n: int, *, reference=None, step: int | None = None) -> list[dict[str, Any]]:
    """Generate `n` samples cycling through `cfg.prompts` with cfg's sampling settings; the
    fluency proxy is each sample's perplexity (prompt + continuation) under `reference`
    (a (model, tokenizer) pair; default the generating model)."""
    from lmforge.eval.diversity import fluency_perplexities
    from lmforge.infer.generate import encode_prompts, generate_tokens

    settings = {k: getattr(cfg, k) for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                             "max_new_tokens", "seed")}
    prompts = [cfg.prompts[i % len(cfg.prompts)] for i in range(n)]
    ids = generate_tokens(model, encode_prompts(tokenizer, prompts), eos_id=tokenizer.eos_id, **settings)
    texts = [tokenizer.decode(t) for t in ids]
    ref_model, ref_tok = reference or (model, tokenizer)
    flu = fluency_perplexities(ref_model, ref_tok, [p + t for p, t in zip(prompts, texts)])
    return [{"id": i, "prompt": p, "text": t, "tokens": len(toks), "fluency_ppl": f,
             "settings": settings, "step": step, "rating": dict.fromkeys(RATING_KEYS), "rater": None}
            for i, (p, t, toks, f) in enumerate(zip(prompts, texts, ids, flu))]


def read_samples(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{path}:{n}: not valid JSON ({e.msg}); fix or delete the line") from None
    return out


def write_samples(path: Path, samples: list[dict[str, Any]], *, keep_ratings: bool = True) -> None:
    """Write atomically; carry over ratings from the existing file for identical samples."""
    if keep_ratings:
        old = {(s.get("prompt"), s.get("text")): s for s in read_samples(path) if _is_rated(s)}
        for s in samples:
            prev = old.get((s["prompt"], s["text"]))
            if prev is not None and not _is_rated(s):
                s["rating"], s["rater"] = prev["rating"], prev.get("rater")
    atomic_write_text(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))


def _is_rated(s: dict[str, Any]) -> bool:
    return any(v is not None for v in (s.get("rating") or {}).values())


def ratings_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and count of each rating dimension over the rated samples."""
    out: dict[str, Any] = {"samples": len(samples), "rated": sum(_is_rated(s) for s in samples)}
    for key in RATING_KEYS:
        vals = [s["rating"][key] for s in samples if (s.get("rating") or {}).get(key) is not None]
        if vals:
            out[key] = {"mean": sum(vals) / len(vals), "stdev": statistics.pstdev(vals), "n": len(vals)}
    raters = sorted({s["rater"] for s in samples if s.get("rater")})
    if raters:
        out["raters"] = ", ".join(raters)
    return out


class _Quit(Exception):
    pass


def _ask(key: str, read: Callable[[], str], out: IO[str]) -> int | None:
    """One rating 1-5; Enter = skip (None), q = quit; anything else asks again."""
    while True:
        out.write(f"  {key} 1-5 (Enter = skip, q = quit): ")
        out.flush()
        line = read()
        if line == "":  # EOF
            raise _Quit
        ans = line.strip().lower()
        if ans in ("q", "quit"):
            raise _Quit
        if ans == "":
            return None
        if ans in {"1", "2", "3", "4", "5"}:
            return int(ans)
        out.write("  please type a number from 1 to 5\n")


def collect_ratings(path: Path, inp: IO[str], out: IO[str], *, rater: str | None = None,
                    redo: bool = False) -> int:
    """Ask for ratings of each unrated sample (all samples with `redo`); the file is saved after
    every sample, so quitting (q, Ctrl-D) keeps what was rated. Returns the samples rated now."""
    samples = read_samples(path)
    if not samples:
        raise LmforgeError(f"{path} has no samples: run `lmforge eval RUN_DIR` first (eval.report_samples > 0)")
    todo = [s for s in samples if redo or not _is_rated(s)]
    out.write(f"{len(todo)} of {len(samples)} samples to rate.\n")
    rated = 0
    try:
        for k, s in enumerate(todo, 1):
            out.write(f"\n--- sample {k} of {len(todo)} (prompt {s['prompt']!r}) ---\n{s['prompt']}{s['text']}\n---\n")
            rating = {key: _ask(key, inp.readline, out) for key in RATING_KEYS}
            if any(v is not None for v in rating.values()):
                s["rating"], s["rater"] = rating, rater
                rated += 1
                write_samples(path, samples, keep_ratings=False)
    except _Quit:
        out.write("\nstopped; ratings so far are saved.\n")
    return rated
