"""Standard benchmarks through lm-evaluation-harness (`pip install 'lmforge[lmeval]'`).

    results = run_tasks(model, tokenizer, ["hellaswag", "arc_easy"], limit=100)       # or:
    lmforge eval RUN --tasks hellaswag,arc_easy [--include-path DIR] [--limit N] [--num-fewshot K]

`LmforgeLM` is an `lm_eval.api.model.LM` over lmforge's model and tokenizer, scoring exactly as
lm-eval's own `hf` model does on the HF export of the same checkpoint (tests/eval/test_eval_lmeval.py):

* the context/continuation split of HFLM (trailing spaces of the context move to the
  continuation; context + continuation are encoded together, then split), an empty context
  replaced by the prefix token (`<bos>`, else `<eos>`);
* a request longer than the model's context keeps its last `block_size + 1` tokens (left
  truncation); `loglikelihood_rolling` uses the harness's own disjoint rolling windows;
* requests are batched longest first (right padding; causal attention makes it exact);
* `generate_until` decodes greedily with lmforge's KV-cache generator (sliding window past the
  context), stopping at `<eos>` or any `until` string.

Nothing downloads: `HF_DATASETS_OFFLINE`/`HF_HUB_OFFLINE` are set before lm-eval loads a task, and a
task whose dataset is not in the local cache fails with a message naming it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import LmforgeError

EXTRA = "pip install 'lmforge[lmeval]'"


def _lm_base() -> type:
    try:
        from lm_eval.api.model import LM
    except ImportError as e:
        raise LmforgeError(f"benchmark tasks need lm-evaluation-harness ({e}); install it with {EXTRA}") from None
    return LM


def make_adapter(model, tokenizer, *, batch_size: int = 16, max_gen_toks: int = 256) -> Any:
    """An `lm_eval.api.model.LM` instance over an lmforge model (eval mode) and tokenizer."""
    base = _lm_base()

    class LmforgeLM(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.model, self.tokenizer = model.eval(), tokenizer
            self.batch_size, self.max_gen_toks = batch_size, max_gen_toks
            self._device = next(model.parameters()).device

        @property
        def max_length(self) -> int:
            return int(self.model.cfg.block_size)

        @property
        def prefix_token_id(self) -> int:
            bos = getattr(self.tokenizer, "bos_id", None)
            return self.tokenizer.eos_id if bos is None else bos

        def tok_encode(self, text: str) -> list[int]:
            return list(self.tokenizer.encode(text)) if text else []

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces > 0:
                continuation = context[-n_spaces:] + continuation
                context = context[:-n_spaces]
            whole = self.tok_encode(context + continuation)
            ctx = self.tok_encode(context)
            return ctx, whole[len(ctx):]

        def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            pairs = []
            for context, continuation in (r.args for r in requests):
                if context == "":
                    pairs.append(([self.prefix_token_id], self.tok_encode(continuation)))
                else:
                    pairs.append(self._encode_pair(context, continuation))
            return score_pairs(self.model, pairs, self.max_length, self.batch_size, self._device)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            from lm_eval import utils

            out = []
            for (text,) in (r.args for r in requests):
                windows = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)]
                scores = score_pairs(self.model, windows, self.max_length, self.batch_size, self._device)
                out.append(sum(s for s, _ in scores))
            return out

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from lmforge.infer.generate import generate

            out = []
            for context, kwargs in (r.args for r in requests):
                kwargs = dict(kwargs or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                n = int(kwargs.get("max_gen_toks", self.max_gen_toks))
                sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 0.0)) > 0
                temp = float(kwargs.get("temperature", 1.0)) if sample else 0.0
                text = generate(self.model, self.tokenizer, [context], max_new_tokens=n, temperature=temp,
                                stop=until or None, seed=0)[0]
                out.append(text)
            return out

    return LmforgeLM()


@torch.inference_mode()
def score_pairs(model, pairs: list[tuple[list[int], list[int]]], max_length: int, batch_size: int,
                device: torch.device) -> list[tuple[float, bool]]:
    """(sum of log-probabilities of the continuation, is it the greedy continuation) per
    (context ids, continuation ids) pair, HFLM's way: the last `max_length + 1` tokens, longest first."""
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        inps = [(pairs[i][0] + pairs[i][1])[-(max_length + 1):][:-1] for i in idx]
        width = max(len(x) for x in inps)
        batch = torch.zeros(len(idx), width, dtype=torch.long)
        for row, x in enumerate(inps):
            batch[row, :len(x)] = torch.tensor(x, dtype=torch.long)
        logits = model(batch.to(device)).float()  # (B, T, V); right padding never reaches earlier positions
        for row, i in enumerate(idx):
            cont = pairs[i][1]
            n, L = len(cont), len(inps[row])
            logp = F.log_softmax(logits[row, L - n:L], dim=-1)  # (n, V)
            target = torch.tensor(cont, dtype=torch.long, device=logp.device)
            greedy = bool((logp.argmax(-1) == target).all())
            out[i] = (float(logp.gather(1, target[:, None]).sum()), greedy)
    return out


def _task_manager(tasks: list[str], include_path: str | Path | None):
    """A TaskManager that knows `tasks`: the custom folder alone when it has them all (indexing the
    ~15k built-in tasks takes seconds), else the built-in tasks too."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise LmforgeError(f"--include-path {include_path}: no such directory of task YAML files")
        tm = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in tm.all_tasks for t in tasks):
            return tm
        tm = TaskManager(include_path=str(include_path))
    else:
        tm = TaskManager()
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise LmforgeError(f"unknown lm-eval task(s): {', '.join(unknown)} (see `lm_eval ls tasks`, or pass "
                           "--include-path DIR with your own task YAMLs)")
    return tm


def _offline_message(task: str, err: BaseException) -> str:
    cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "datasets")
    return (f"lm-eval task {task!r}: its dataset is not available locally ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}). lmforge never downloads at run time "
            f"(HF_DATASETS_OFFLINE=1). Make it available by loading it once on a machine with network access "
            f"into the HF datasets cache ({cache}; e.g. `python -c \"import lm_eval.tasks as t; "
            f"t.get_task_dict(['{task}'])\"` with HF_DATASETS_OFFLINE=0), or point --include-path at a task "
            f"YAML whose dataset_path is local files (dataset_path: json + dataset_kwargs.data_files).")


def _load_tasks(tasks: list[str], tm) -> dict:
    from lm_eval.tasks import get_task_dict

    out = {}
    for t in tasks:  # one at a time, so a failure names its task
        try:
            out.update(get_task_dict([t], tm))
        except Exception as e:  # datasets raises ConnectionError, FileNotFoundError, ValueError, ...
            raise LmforgeError(_offline_message(t, e)) from None
    return out


def _summarize(res: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """{task: {metric: {"value", "stderr", "n"}}} from lm-eval's results dict."""
    out: dict[str, dict[str, Any]] = {}
    for task, metrics in (res.get("results") or {}).items():
        n = ((res.get("n-samples") or {}).get(task) or {}).get("effective")
        row: dict[str, Any] = {}
        for key, v in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(v, (int, float)):
                continue
            name, filt = key.split(",", 1)
            label = name if filt == "none" else f"{name} ({filt})"
            err = metrics.get(f"{name}_stderr,{filt}")
            row[label] = {"value": float(v), "stderr": float(err) if isinstance(err, (int, float)) and
                          math.isfinite(err) else None, "n": n}
        out[task] = row
    return out


def run_tasks(model, tokenizer, tasks: list[str], *, include_path: str | Path | None = None, limit: int = 0,
              num_fewshot: int = 0, batch_size: int = 16, log_samples: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run lm-eval `tasks` on an lmforge model; returns {"results": {task: {metric: ...}}, "settings",
    and "samples" (lm-eval's per-example records) when `log_samples`}."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # nothing downloads at run time
    os.environ["HF_HUB_OFFLINE"] = "1"
    tasks = [t.strip() for t in tasks if t.strip()]
    if not tasks:
        raise LmforgeError("--tasks: give at least one lm-eval task name")
    adapter = make_adapter(model, tokenizer, batch_size=batch_size)
    from lm_eval.evaluator import evaluate

    tm = _task_manager(tasks, include_path)
    task_dict = _load_tasks(tasks, tm)
    for obj in task_dict.values():
        for task in (obj.values() if isinstance(obj, dict) else [obj]):
            if num_fewshot and hasattr(task, "set_config"):
                task.set_config(key="num_fewshot", value=num_fewshot)
            if hasattr(task, "set_fewshot_seed"):
                task.set_fewshot_seed(seed=seed)
    was_training = model.training
    try:
        res = evaluate(lm=adapter, task_dict=task_dict, limit=limit or None, log_samples=log_samples,
                       verbosity="ERROR")
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"results": _summarize(res, tasks),
                           "settings": {"tasks": ",".join(tasks), "limit": limit or "all", "num_fewshot": num_fewshot,
                                        "include_path": str(include_path) if include_path else None}}
    if log_samples:
        out["samples"] = res.get("samples", {})
    return out


class TasksCallback:
    """Runs `eval.tasks` every `eval.tasks_every` training steps on rank 0 and logs an `eval` event
    with `tasks/<task>/<metric>` (metrics.jsonl, TensorBoard). Duck-typed to the training callback
    protocol (eval may not import train); `lmforge run` adds it to the loop."""

    name = "TasksCallback"

    def __init__(self, cfg, tokenizer) -> None:
        _lm_base()  # fail at start-up, not at the first evaluation, when lm-eval is missing
        self.cfg, self.tokenizer = cfg, tokenizer

    def pre_train(self, trainer) -> None:
        pass

    def post_step(self, trainer, result) -> None:
        every = self.cfg.tasks_every
        if not every or trainer.state.step % every or trainer.rank != 0:
            return
        model = trainer.raw_model
        res = run_tasks(model, self.tokenizer, self.cfg.tasks, include_path=self.cfg.tasks_include_path,
                        limit=self.cfg.tasks_limit, num_fewshot=self.cfg.num_fewshot, batch_size=self.cfg.batch_size)
        model.train()
        values = {f"tasks/{t}/{m}": v["value"] for t, ms in res["results"].items() for m, v in ms.items()}
        trainer.writer.log("eval", trainer.state.step, **values)

    def post_train(self, trainer) -> None:
        pass

    def close(self) -> None:
        pass

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass
