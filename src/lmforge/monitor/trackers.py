"""Experiment trackers: `monitor.trackers: [wandb, mlflow, trackio]` next to metrics.jsonl and TensorBoard.

    monitor:
      trackers: [mlflow]              # pip install 'lmforge[mlflow]' (or [wandb], [trackio])
      tracker_project: my-project     # W&B project / MLflow experiment / trackio project
      mlflow_tracking_uri: ""         # "" = $MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db
      wandb_mode: offline             # "" = W&B's default ($WANDB_MODE); offline writes RUN_DIR/wandb/

What each receives (from `RunLogger`, rank 0 only): the resolved config as parameters at the start; the
same scalars as TensorBoard (`train/*`, `val/*` including named eval sets, `system/*`); samples as a
table (W&B, trackio) or text files (MLflow); the final summary. After `lmforge run`'s eval stage
(`log_eval`), the same tracker run gets eval/report.json, report.md and samples.jsonl as artifacts and
the report's numbers as `eval/*`. Run ids live in RUN_DIR/trackers.json, so a resumed run and the
eval stage continue the same tracker run.

Local modes: W&B `offline` (RUN_DIR/wandb/offline-run-*, `wandb sync` later), MLflow file or sqlite
stores (artifacts of a new experiment go to RUN_DIR/mlartifacts), trackio's local sqlite
($TRACKIO_DIR, default ~/.cache/huggingface/trackio). A tracker whose package is missing, whose server
is unreachable or whose call fails is reported with one warning and switched off: training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lmforge.monitor")
TRACKERS = ("wandb", "mlflow", "trackio")
STATE_FILE = "trackers.json"
_EXTRA = {"wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _scalars(kind: str, values: dict[str, Any]) -> dict[str, float]:
    """`kind/key` -> number for the numeric values (booleans and text are left out, like TensorBoard)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[f"{kind}/{k}"] = float(v)
    return out


# ---------------------------------------------------------------- one class per tracker
class _WandB:
    name = "wandb"

    def __init__(self, run_dir: Path, mcfg: Any, run_name: str, params: dict[str, Any], run_id: str | None) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=mcfg.tracker_project, name=run_name, dir=str(run_dir), config=params or None,
                              id=run_id, resume="allow", mode=mcfg.wandb_mode or None, reinit="create_new")
        self.id = self.run.id
        self.samples: list[list[Any]] = []

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def sample(self, step: int, prompt: str, text: str) -> None:
        self.samples.append([step, prompt, text])
        self.run.log({"samples": self.wandb.Table(columns=["step", "prompt", "text"], data=self.samples)}, step=step)

    def artifacts(self, files: list[Path], samples: list[dict[str, Any]], numbers: dict[str, float]) -> None:
        if numbers:
            self.run.summary.update(numbers)
        if samples:
            cols = sorted({k for s in samples for k in s})
            self.run.log({"eval/samples": self.wandb.Table(columns=cols, data=[[s.get(c) for c in cols]
                                                                                for s in samples])})
        art = self.wandb.Artifact(f"eval-{self.id}", type="eval")
        for f in files:
            art.add_file(str(f))
        self.run.log_artifact(art)

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
        self.run.finish(exit_code=0 if status == "finished" else 1)


class _MLflow:
    name = "mlflow"

    def __init__(self, run_dir: Path, mcfg: Any, run_name: str, params: dict[str, Any], run_id: str | None) -> None:
        # a dead server must not stall training for minutes of retries (the user's settings win)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        uri = mcfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir / 'mlflow.db'}"
        if uri.startswith(("http://", "https://")):
            _check_reachable(uri)
        self.client, self.uri = MlflowClient(tracking_uri=uri), uri
        if run_id is None:
            exp = self.client.get_experiment_by_name(mcfg.tracker_project)
            if exp is None:
                local = None if "://" in uri and not uri.startswith(("sqlite:", "file:")) else \
                    (run_dir / "mlartifacts").resolve().as_uri()
                exp_id = self.client.create_experiment(mcfg.tracker_project, artifact_location=local)
            else:
                exp_id = exp.experiment_id
            run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
            from mlflow.entities import Param

            items = [Param(_key(k), str(v)[:6000]) for k, v in _flatten(params).items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=items[i:i + 100])
        self.id = run_id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(_key(k), v, now, step) for k, v in scalars.items()])

    def sample(self, step: int, prompt: str, text: str) -> None:
        self.client.log_text(self.id, f"{prompt}{text}", f"samples/step-{step:07d}.txt")

    def artifacts(self, files: list[Path], samples: list[dict[str, Any]], numbers: dict[str, float]) -> None:
        if numbers:
            self.log(0, numbers)
        for f in files:
            self.client.log_artifact(self.id, str(f), "eval")

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        self.client.set_terminated(self.id, status={"finished": "FINISHED", "interrupted": "KILLED"}.get(status,
                                                                                                        "FAILED"))


class _Trackio:
    name = "trackio"

    def __init__(self, run_dir: Path, mcfg: Any, run_name: str, params: dict[str, Any], run_id: str | None) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=mcfg.tracker_project, name=run_id or run_name,
                                config=_flatten(params) if params else None,
                                resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False)
        self.id = self.run.name
        self.samples: list[list[Any]] = []

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def sample(self, step: int, prompt: str, text: str) -> None:
        self.samples.append([step, prompt, text])
        self.run.log({"samples": self.trackio.Table(columns=["step", "prompt", "text"], data=self.samples)}, step=step)

    def artifacts(self, files: list[Path], samples: list[dict[str, Any]], numbers: dict[str, float]) -> None:
        if numbers:
            self.run.log(numbers)
        if samples:
            cols = sorted({k for s in samples for k in s})
            self.run.log({"eval/samples": self.trackio.Table(columns=cols, data=[[s.get(c) for c in cols]
                                                                                 for s in samples])})
        for f in files:
            self.trackio.log_artifact(str(f), name=f"eval-{f.stem}".replace(".", "-"), type="eval")

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        self.run.finish()


_CLASSES = {"wandb": _WandB, "mlflow": _MLflow, "trackio": _Trackio}


def _key(k: str) -> str:
    """MLflow keys allow letters, digits, `_ - . / ` and spaces."""
    return re.sub(r"[^\w\-./ ]", "_", k)


def _check_reachable(uri: str) -> None:
    import socket
    from urllib.parse import urlparse

    u = urlparse(uri)
    port = u.port or (443 if u.scheme == "https" else 80)
    with socket.create_connection((u.hostname, port), timeout=3):
        pass


# ---------------------------------------------------------------- the fan-out
class Trackers:
    """The trackers of one run; every call is guarded: a failure warns once and drops that tracker."""

    def __init__(self, run_dir: str | Path, mcfg: Any, params: dict[str, Any] | None = None,
                 run_name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.active: list[Any] = []
        ids = read_ids(self.run_dir)
        for name in mcfg.trackers:
            try:
                t = _CLASSES[name](self.run_dir, mcfg, run_name or self.run_dir.name, params or {}, ids.get(name))
            except ImportError as e:
                log.warning("monitor.trackers: %s is not installed (%s); install it with pip install 'lmforge[%s]'. "
                            "Training goes on without it.", name, e, _EXTRA[name])
                continue
            except Exception as e:  # an unreachable server, a missing key, a bad store: warn, keep training
                log.warning("monitor.trackers: %s could not start (%s: %s). Training goes on without it.", name,
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                continue
            self.active.append(t)
            ids[name] = t.id
        if self.active:
            from lmforge.io import atomic_write_json

            atomic_write_json(self.run_dir / STATE_FILE, ids)

    def _each(self, what: str, *args: Any) -> None:
        for t in list(self.active):
            try:
                getattr(t, what)(*args)
            except Exception as e:
                log.warning("monitor.trackers: %s failed while logging (%s: %s); it is switched off for this run, "
                            "training goes on.", t.name, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self.active.remove(t)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if kind == "sample":
            self._each("sample", step, str(values.get("prompt", "")), str(values.get("text", "")))
        elif kind in ("train", "val", "system", "eval"):
            scalars = _scalars(kind, values)
            if scalars:
                self._each("log", step, scalars)

    def artifacts(self, files: list[Path], samples: list[dict[str, Any]], numbers: dict[str, float]) -> None:
        self._each("artifacts", files, samples, numbers)

    def finish(self, status: str, summary: dict[str, Any]) -> None:
        self._each("finish", status, summary)
        self.active = []


def read_ids(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def log_eval(run_dir: str | Path, mcfg: Any, params: dict[str, Any] | None = None) -> None:
    """After the eval stage: eval/report.json, report.md, samples.jsonl and the report's numbers to the
    run's trackers (the same tracker runs as training, through RUN_DIR/trackers.json). `params`: the
    resolved config again (trackio replaces a resumed run's config with what it is given)."""
    if not mcfg.trackers:
        return
    run_dir = Path(run_dir)
    ev = run_dir / "eval"
    files = [p for p in (ev / "report.json", ev / "report.md", ev / "samples.jsonl") if p.is_file()]
    if not files:
        return
    numbers: dict[str, float] = {}
    try:
        report = json.loads((ev / "report.json").read_text())
        numbers = _scalars("eval", {k: v for k, v in _flatten(report).items() if "." not in k or k.count(".") < 3})
    except (OSError, ValueError):
        pass
    samples = []
    if (ev / "samples.jsonl").is_file():
        for line in (ev / "samples.jsonl").read_text(encoding="utf-8").splitlines()[:200]:
            try:
                samples.append({k: v for k, v in json.loads(line).items() if isinstance(v, (str, int, float))})
            except ValueError:
                continue
    trackers = Trackers(run_dir, mcfg, params=params)
    trackers.artifacts(files, samples, numbers)
    trackers.finish("finished", {})
