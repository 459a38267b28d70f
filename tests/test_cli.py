"""CLI surface: dry-run, error messages and exit codes (no traceback for user errors)."""

import subprocess
import sys

import pytest
import yaml

from lmforge.cli import main


def test_dry_run_prints_resolved_config(capsys):
    assert main(["run", "configs/quickstart.yaml", "train.max_steps=5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["train"]["max_steps"] == 5 and cfg["name"] == "quickstart"
    assert cfg["model"]["n_layer"] == 4  # preset + explicit fields resolved


def test_quickstart_dry_run_uses_packaged_config(capsys):
    assert main(["quickstart", "--dry-run"]) == 0
    assert "builtin:stdlib" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["run", "configs/quickstart.yaml", "train.lr=-1"], "train.lr"),
    (["run", "configs/quickstart.yaml", "nope.x=1"], "unknown config key 'nope'"),
    (["run", "missing.yaml"], "missing.yaml"),
    (["train", "configs/quickstart.yaml", "--run-dir", "{tmp}/run"], "lmforge tokenize"),
])
def test_user_errors_exit_2_with_one_message(argv, needle, capsys, tmp_path, monkeypatch):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "lmforge.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "lmforge" in out.stdout
