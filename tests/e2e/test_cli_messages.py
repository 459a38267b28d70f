"""Issue 12: inputs that used to end in a traceback now end with one message naming the value and
the fix (exit 2)."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.errors import ConfigError


def _message(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def test_config_file_not_utf8(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    code, err = _message(capsys, ["run", p, "--dry-run"])
    assert code == 2 and "not UTF-8" in err and "bad.yaml" in err and "byte 0xe9" in err


def test_config_path_is_a_directory(tmp_path, capsys):
    code, err = _message(capsys, ["run", tmp_path, "--dry-run"])
    assert code == 2 and "is a directory" in err and "does not exist" not in err


@pytest.mark.parametrize("override,key", [
    ("train.lr=inf", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.min_lr=-inf", "train.min_lr"),
    ("eval.temperature=inf", "eval.temperature"), ("eval.temperature=.nan", "eval.temperature"),
    ("model.rope_theta=0", "model.rope_theta"), ("model.rope_theta=-5", "model.rope_theta"),
    ("model.init_std=-0.01", "model.init_std"), ("model.norm_eps=inf", "model.norm_eps"),
])
def test_non_finite_and_non_positive_config_values(override, key, capsys):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
    code, err = _message(capsys, ["run", "configs/quickstart.yaml", override, "--dry-run"])
    assert code == 2 and key in err


def test_non_finite_values_refused_when_built_in_python():
    from lmforge.eval.config import EvalConfig
    from lmforge.train.config import TrainConfig

    with pytest.raises(ConfigError, match="train.lr.*finite"):
        TrainConfig(lr=math.inf)
    with pytest.raises(ConfigError, match="eval.temperature.*finite"):
        EvalConfig(temperature=math.inf)


@pytest.mark.parametrize("args,needle", [
    (["--max-new-tokens", "0"], "--max-new-tokens"), (["--max-new-tokens", "-5"], "--max-new-tokens"),
    (["--num-samples", "0"], "--num-samples"), (["--num-samples", "-1"], "--num-samples"),
    (["--device", "banana"], "--device"), (["--temperature", "inf"], "--temperature"),
    (["--temperature", "nan"], "--temperature"), (["--top-p", "nan"], "--top-p"),
])
def test_generate_argument_checks(infer_run, capsys, args, needle):
    with pytest.raises(SystemExit) as e:  # argparse: usage line + message, exit 2
        main(["generate", str(infer_run), "--prompt", "The ", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err


def test_device_cuda_without_cuda(infer_run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _message(capsys, ["generate", infer_run, "--prompt", "The ", "--device", "cuda"])
    assert code == 2 and "CUDA is not available" in err and "--device cpu" in err
    code, err = _message(capsys, ["eval", infer_run, "--device", "cuda:0"])
    assert code == 2 and "CUDA is not available" in err


def test_prompt_that_is_not_utf8(infer_run, capsys):
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such a command-line argument
    code, err = _message(capsys, ["generate", infer_run, "--prompt", bad, "--max-new-tokens", "2", "--device", "cpu"])
    assert code == 2 and "not valid UTF-8" in err and "--prompt" in err


def test_generate_works_with_good_arguments(infer_run, capsys):
    assert main(["generate", str(infer_run), "--prompt", "The ", "--max-new-tokens", "3", "--device", "cpu"]) == 0


def test_run_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "runfile"
    f.write_text("x")
    for cmd in (["run", "configs/quickstart.yaml"], ["data", "configs/quickstart.yaml"]):
        code, err = _message(capsys, [*cmd, "--run-dir", f])
        assert code == 2 and "is a file" in err and str(f) in err
    code, err = _message(capsys, ["eval", f])
    assert code == 2 and "is a file" in err


def test_glob_of_dangling_symlinks_is_a_message(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "in" / "b.txt").symlink_to(tmp_path / "in" / "b.txt")
    code, err = _message(capsys, ["data", "configs/quickstart.yaml", f"data.inputs=[{tmp_path}/in/*.txt]",
                                  "--run-dir", tmp_path / "run"])
    assert code == 2 and "broken_symlink" in err
