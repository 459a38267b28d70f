"""`lmforge eval` and `lmforge generate` through the argparse subcommands of lmforge.eval.commands."""

from __future__ import annotations

import argparse
import io

import pytest
from lmf_evalkit import ScriptedModel, tiny_model

from lmforge.errors import LmforgeError
from lmforge.eval import commands
from lmforge.export import commands as export_commands


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lmforge")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.register(sub)
    export_commands.register(sub)
    return parser.parse_args(argv)


@pytest.fixture
def patched(tmp_path, tokenizer, monkeypatch):
    import lmforge.checkpoint as ckpt

    state = {"model": tiny_model(tokenizer.vocab_size)}
    monkeypatch.setattr(ckpt, "load_for_inference", lambda run_dir, which, device="cpu": (
        state["model"], tokenizer, {"step": 1}))
    return tmp_path, state


def test_generate_prints_prompt_and_continuation(patched, tokenizer, capsys):
    run_dir, state = patched
    prompt = tokenizer.encode("The")
    cont = tokenizer.encode(" king is dead.")
    state["model"] = ScriptedModel(tokenizer.vocab_size, script=prompt[1:] + cont + [tokenizer.eos_id])
    args = _parse(["generate", str(run_dir), "--prompt", "The", "--temperature", "0", "--device", "cpu"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "The king is dead.\n"
    args = _parse(["generate", str(run_dir), "--prompt", "The", "--temperature", "0", "--stop", " is"])
    args.func(args)
    assert capsys.readouterr().out == "The king\n"


def test_generate_interactive_reads_stdin(patched, tokenizer, capsys, monkeypatch):
    run_dir, _ = patched
    monkeypatch.setattr("sys.stdin", io.StringIO("The king\n\nNow\n"))
    args = _parse(["generate", str(run_dir), "--interactive", "--max-new-tokens", "3", "--seed", "0"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("The king") and lines[1].startswith("Now")


def test_generate_user_errors(patched):
    run_dir, _ = patched
    with pytest.raises(LmforgeError, match="--prompt"):
        args = _parse(["generate", str(run_dir)])
        args.func(args)
    with pytest.raises(LmforgeError, match="top_p"):
        args = _parse(["generate", str(run_dir), "--prompt", "x", "--top-p", "2"])
        args.func(args)
    with pytest.raises(LmforgeError, match="does not exist"):
        args = _parse(["generate", str(run_dir / "missing"), "--prompt", "x"])
        args.func(args)


def test_eval_prints_report_for_a_data_file(patched, capsys):
    run_dir, _ = patched
    data = run_dir / "t.txt"
    data.write_text("The king is dead.\n\nLong live the king!\n")
    args = _parse(["eval", str(run_dir), "--data", str(data), "--device", "cpu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"`{data}`" in out and "perplexity" in out
    assert (run_dir / "eval" / "report.json").is_file()


def test_export_cli_writes_folder_and_refuses_unmappable(patched, tokenizer, capsys):
    run_dir, state = patched
    args = _parse(["export", str(run_dir), "--format", "hf"])
    assert args.func(args) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    files = {p.name for p in (run_dir / "export" / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    from lmf_evalkit import tiny_model

    state["model"] = tiny_model(tokenizer.vocab_size, norm="rmsnorm", mlp="gelu")
    args = _parse(["export", str(run_dir), "--out", str(run_dir / "x")])
    with pytest.raises(LmforgeError, match="no Hugging Face architecture"):
        args.func(args)
    assert not (run_dir / "x").exists()


def test_eval_flags_reach_the_report(patched, capsys):
    run_dir, _ = patched
    data = run_dir / "t.jsonl"
    data.write_text('{"text": "The king is dead.", "lang": "en"}\n{"text": "Der König ist tot.", "lang": "de"}\n')
    args = _parse(["eval", str(run_dir), "--data", str(data), "--by", "lang", "--buckets", "4,8", "--device", "cpu"])
    assert args.func(args) == 0
    import json

    strata = json.loads((run_dir / "eval" / "report.json").read_text())["data"]["strata"]
    assert {r["value"] for r in strata["lang"]} == {"en", "de"}
    assert {r["value"] for r in strata["length (tokens)"]} <= {"<4", "4-7", ">=8"}
    with pytest.raises(SystemExit):
        _parse(["eval", str(run_dir), "--buckets", "a,b"])
    capsys.readouterr()
