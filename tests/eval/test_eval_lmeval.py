"""lm-evaluation-harness through lmforge's adapter: the same results as lm-eval's own `hf` model on the
HF export of the same weights, on three local tasks the test writes (multiple_choice,
loglikelihood_rolling, generate_until); `lmforge eval --tasks`; nothing downloads."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from lmeval_tasks import write_tasks
from lmf_evalkit import TEXT, tiny_model, train_on

from lmforge.errors import LmforgeError

pytest.importorskip("lm_eval")
TASKS = ["lmf_mc", "lmf_rolling", "lmf_gen"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


@pytest.fixture(scope="module")
def trained(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    return train_on(model, torch.tensor(tokenizer.encode(TEXT)), 40)


def _hf_results(export_dir, tasks_dir):
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    hf = HFLM(pretrained=str(export_dir), device="cpu", batch_size=4, dtype="float32")
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    return evaluate(lm=hf, task_dict=get_task_dict(TASKS, tm), log_samples=True, verbosity="ERROR")


def test_adapter_matches_hf_model_on_its_export(trained, tokenizer, tmp_path):
    from lmforge.eval.lmeval import run_tasks
    from lmforge.export.hf import export_model

    tasks_dir = write_tasks(tmp_path)
    ours = run_tasks(trained, tokenizer, TASKS, include_path=tasks_dir, log_samples=True)
    export_model(trained, tokenizer, tmp_path / "hf")
    ref = _hf_results(tmp_path / "hf", tasks_dir)
    # the same accuracies / perplexities / exact matches
    for task, metrics in ours["results"].items():
        for metric, v in metrics.items():
            expected = ref["results"][task][f"{metric},none"]
            assert v["value"] == pytest.approx(float(expected), rel=1e-5, abs=1e-6), (task, metric)
    assert set(ours["results"]["lmf_mc"]) >= {"acc", "acc_norm"}
    assert 0.0 < ours["results"]["lmf_mc"]["acc"]["value"]  # the trained model gets some right
    # per example: log-likelihoods within 1e-4, the same greedy flags and the same generations
    for task in TASKS:
        a = sorted(ours["samples"][task], key=lambda s: s["doc_id"])
        b = sorted(ref["samples"][task], key=lambda s: s["doc_id"])
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            for rx, ry in zip(x["resps"], y["resps"]):
                if task == "lmf_gen":
                    assert rx == ry
                elif task == "lmf_mc":
                    assert rx[0][0] == pytest.approx(ry[0][0], abs=1e-4) and rx[0][1] == ry[0][1]
                else:
                    assert rx[0] == pytest.approx(ry[0], abs=1e-4)
    # a rolling document longer than the context (32 tokens) was cut into several windows
    assert max(len(tokenizer.encode(s["doc"]["text"])) for s in ours["samples"]["lmf_rolling"]) > 32


def _cli(argv):
    from lmforge.eval import commands

    parser = argparse.ArgumentParser(prog="lmforge")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_cli_tasks_writes_report(trained, tokenizer, tmp_path, monkeypatch, capsys):
    import lmforge.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "load_for_inference", lambda run_dir, which, device="cpu": (trained, tokenizer,
                                                                                          {"step": 7}))
    tasks_dir = write_tasks(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert _cli(["eval", str(run_dir), "--tasks", "lmf_mc,lmf_gen", "--include-path", str(tasks_dir),
                 "--limit", "3", "--device", "cpu"]) == 0
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    res = report["tasks"]["results"]
    assert set(res) == {"lmf_mc", "lmf_gen"}
    assert res["lmf_mc"]["acc"]["n"] == 3 and 0 <= res["lmf_mc"]["acc"]["value"] <= 1
    assert report["tasks"]["settings"]["limit"] == 3
    md = (run_dir / "eval" / "report.md").read_text()
    assert "## Benchmarks (lm-evaluation-harness)" in md and "| lmf_mc | acc |" in md
    assert "lmf_gen" in capsys.readouterr().out


def test_task_without_local_data_fails_with_a_clear_message(trained, tokenizer, tmp_path):
    from lmforge.eval.lmeval import run_tasks

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "remote.yaml").write_text("task: lmf_remote\ndataset_path: lmforge-test/not-in-the-cache\n"
                                       "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\n"
                                       "doc_to_choice: [a, b]\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n")
    with pytest.raises(LmforgeError, match=r"lmf_remote.*not available locally.*HF_DATASETS_OFFLINE") as e:
        run_tasks(trained, tokenizer, ["lmf_remote"], include_path=tasks)
    assert "include-path" in str(e.value)


@pytest.mark.slow
def test_unknown_task_is_named(trained, tokenizer, tmp_path):
    from lmforge.eval.lmeval import run_tasks

    with pytest.raises(LmforgeError, match="unknown lm-eval task.*lmf_nope"):  # indexes the built-in tasks too
        run_tasks(trained, tokenizer, ["lmf_nope"], include_path=write_tasks(tmp_path))


def test_tasks_callback_logs_an_eval_event_every_n_steps(trained, tokenizer, tmp_path):
    from types import SimpleNamespace

    from lmforge.config import load_config
    from lmforge.eval.lmeval import TasksCallback

    tasks_dir = write_tasks(tmp_path)
    cfg = load_config(None, ["eval.tasks=[lmf_mc]", "eval.tasks_every=5", "eval.tasks_limit=2",
                             f"eval.tasks_include_path={tasks_dir}"]).eval
    logged = []
    trainer = SimpleNamespace(state=SimpleNamespace(step=3), rank=0, raw_model=trained,
                              writer=SimpleNamespace(log=lambda kind, step, **v: logged.append((kind, step, v))))
    cb = TasksCallback(cfg, tokenizer)
    cb.post_step(trainer, None)
    assert logged == []  # not a multiple of tasks_every
    trainer.state.step = 5
    cb.post_step(trainer, None)
    assert [(k, s) for k, s, _ in logged] == [("eval", 5)]
    assert set(logged[0][2]) == {"tasks/lmf_mc/acc", "tasks/lmf_mc/acc_norm"} and trained.training
