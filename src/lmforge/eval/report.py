"""eval/report.json and a report.md a person reads in a minute.

Sections appear only when their data is in the report: validation, unigram baseline, an external
file (`--data`), strata, overfitting verdict, sample diversity, human ratings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmforge.io import atomic_write_json, atomic_write_text


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.{digits}f}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return out


def _validation(r: dict[str, Any]) -> list[str]:
    lines = ["## Validation split", ""]
    rows = [["loss (nats/token)", r["val_loss"]], ["perplexity", r["val_ppl"]], ["bits per byte", r.get("val_bpb")],
            ["word perplexity", r.get("val_word_ppl")], ["tokens scored", r.get("val_tokens")],
            ["documents", f"{r.get('val_docs', 0):,} of {r.get('val_docs_total', 0):,}"]]
    lines += _table(["metric", "value"], rows)
    uni = r.get("unigram")
    if uni:
        lines += ["", "### Unigram baseline (token frequencies of the train split, no context)", ""]
        lines += _table(["", "loss", "perplexity", "bits per byte"],
                        [["model", r["val_loss"], r["val_ppl"], r.get("val_bpb")],
                         ["unigram", uni["loss"], uni["perplexity"], uni.get("bpb")]])
        gap = r.get("loss_below_unigram", 0.0)
        where = f"{_f(gap, 3)} nats/token below" if gap >= 0 else f"{_f(-gap, 3)} nats/token ABOVE"
        verdict = ("the model uses context" if gap > 0.1 else
                   "WARNING: the model is not clearly better than token frequencies (train longer?)")
        lines += ["", f"The model is {where} the unigram baseline: {verdict}."]
    return lines + [""]


def _sets_section(r: dict[str, Any]) -> list[str]:
    """One table per held-out set (`split` = the run's own validation split), then a summary row each."""
    sets, select = r.get("sets") or {}, r.get("select_by")
    lines = ["## Held-out sets", ""]
    if select:
        lines += [f"The best checkpoint and early stopping follow `{select}` (eval.select_by).", ""]
    for name, s in sets.items():
        lines += [f"### {name}" + (" (the run's own validation split)" if name == "split" else ""), ""]
        lines += _table(["metric", "value"], [["loss (nats/token)", s.get("loss")], ["perplexity", s.get("perplexity")],
                                              ["bits per byte", s.get("bpb")], ["tokens", s.get("tokens")],
                                              ["documents", s.get("docs")]])
        lines.append("")
    if len(sets) > 1:
        lines += ["### All sets", ""]
        lines += _table(["set", "loss", "perplexity", "bits per byte", "tokens"],
                        [[n, s.get("loss"), s.get("perplexity"), s.get("bpb"), s.get("tokens")]
                         for n, s in sets.items()])
        lines.append("")
    for n in r.get("sets_missing", []):
        lines += [f"> Set `{n}` is configured but not built: run `lmforge run` (or `lmforge tokenize`) again.", ""]
    return lines


def _data_section(d: dict[str, Any]) -> list[str]:
    lines = [f"## File `{d.get('path')}`", ""]
    rows = [["loss", d.get("loss")], ["perplexity", d.get("perplexity")], ["bits per byte", d.get("bpb")],
            ["word perplexity", d.get("word_perplexity")], ["documents", d.get("docs")], ["tokens", d.get("tokens")]]
    lines += _table(["metric", "value"], rows)
    if d.get("rejected_records"):
        lines += ["", f"{d['rejected_records']} record(s) could not be read and were skipped, e.g.:"]
        lines += [f"- {m}" for m in d.get("reject_examples", [])[:3]]
    return lines + [""]


def _tasks_section(t: dict[str, Any]) -> list[str]:
    """lm-evaluation-harness results: one row per task and metric."""
    lines = ["## Benchmarks (lm-evaluation-harness)", ""]
    rows = [[task, metric, v.get("value"), v.get("stderr"), v.get("n")]
            for task, metrics in (t.get("results") or {}).items() for metric, v in metrics.items()]
    lines += _table(["task", "metric", "value", "stderr", "examples"], rows)
    settings = ", ".join(f"{k}={v}" for k, v in (t.get("settings") or {}).items())
    if settings:
        lines += ["", f"Settings: {settings}."]
    return lines + [""]


def _strata(strata: dict[str, list[dict[str, Any]]], title: str) -> list[str]:
    lines = [f"## {title}", ""]
    for field_name, groups in strata.items():
        lines += [f"### By {field_name}", ""]
        lines += _table([field_name, "docs", "tokens", "loss", "perplexity", "bits per byte"],
                        [[g["value"], g["docs"], g["tokens"], g["loss"], g["perplexity"], g.get("bpb")]
                         for g in groups])
        lines.append("")
    return lines


def _dict_section(title: str, d: dict[str, Any]) -> list[str]:
    lines = [f"## {title}", ""]
    if "verdict" in d:
        lines += [f"**{d['verdict']}**", ""]
    rows = [[k.replace("_", " "), v] for k, v in d.items() if k != "verdict" and not isinstance(v, (dict, list))]
    if rows:
        lines += _table(["", "value"], rows)
    for k, v in d.items():
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()):
            lines += ["", f"{k}:", ""] + _table(["", "value"], [[a, b] for a, b in v.items()])
    return lines + [""]


def render_markdown(r: dict[str, Any]) -> str:
    ck = r.get("checkpoint", {})
    head = f"# Evaluation of `{r.get('run_dir', '?')}`"
    sub = f"Checkpoint: {ck.get('which', '?')}" + (f" (step {ck['step']})" if "step" in ck else "")
    model = r.get("model", {})
    if model:
        sub += f" · {model.get('params', 0):,} parameters · context {model.get('block_size')}"
    lines = [head, "", sub, ""]
    for w in r.get("warnings", []):
        lines += [f"> Warning: {w}", ""]
    if r.get("strata_note"):
        lines += [f"> Note: {r['strata_note']}", ""]
    if "val_loss" in r:
        lines += _validation(r)
    if r.get("sets") and (len(r["sets"]) > 1 or r.get("select_by") not in (None, "split")):
        lines += _sets_section(r)
    if r.get("tasks"):
        lines += _tasks_section(r["tasks"])
    if "data" in r:
        lines += _data_section(r["data"])
    if r.get("strata"):
        lines += _strata(r["strata"], "Validation documents by stratum")
    if r.get("data", {}).get("strata"):
        lines += _strata(r["data"]["strata"], f"`{r['data'].get('path')}` by stratum")
    for key, title in (("overfitting", "Overfitting check"), ("diversity", "Sample diversity"),
                       ("ratings", "Human ratings")):
        if r.get(key):
            lines += _dict_section(title, r[key])
    if r.get("ratings") and r["ratings"].get("rated", 0) < r["ratings"].get("samples", 0):
        lines += [f"Rate the samples in eval/samples.jsonl with `lmforge rate {r.get('run_dir', 'RUN_DIR')}`.", ""]
    lines += ["Definitions: loss = sum of NLL / tokens; perplexity = exp(loss); bits per byte = sum of NLL /",
              "(UTF-8 bytes × ln 2); word perplexity = exp(sum of NLL / whitespace words) — sums over the whole",
              "split, each document scored on its own after an <eos> prefix (lm-evaluation-harness).", ""]
    return "\n".join(lines)


def write_report(eval_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json and report.md atomically (temp file + rename)."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_dir / "report.json", report)
    atomic_write_text(eval_dir / "report.md", render_markdown(report))


def load_report(eval_dir: Path) -> dict[str, Any]:
    p = Path(eval_dir) / "report.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
