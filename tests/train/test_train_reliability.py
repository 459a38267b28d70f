"""Issue 12, checkpoints: `latest` is the truth for --resume auto, a resume from an older checkpoint
starts a new branch (the old branch's later checkpoints are moved aside, not deleted), pointers that
name a corrupt checkpoint are repaired, pointers never lead outside checkpoints/, and torch's
"weights_only=False" hint never reaches a user."""

from __future__ import annotations

import json
import os

import pytest

from lmforge import checkpoint as ck
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _names(root):
    return sorted(p.name for p in root.iterdir() if ck.STEP_RE.match(p.name))


def test_resume_from_an_older_checkpoint_starts_a_new_branch(run_dir, tiny_cfg, caplog):
    """Defect 2: after rolling back to step 3 and training on, --resume auto jumped back to the
    stale step 6, and pruning deleted the new branch's checkpoint instead of the stale one."""
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=6, ckpt_every=3, keep_last=2), run_dir)
    assert _names(root) == ["step-000003", "step-000006"]
    with caplog.at_level("WARNING"):
        s = train(tiny_cfg(max_steps=5, ckpt_every=0, keep_last=1), run_dir, resume=str(root / "step-000003"))
    assert s["step"] == 5
    assert ck.read_pointer(root, "latest").name == "step-000005" and _names(root) == ["step-000005"]
    [aside] = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("abandoned-")]
    assert (aside / "step-000006").is_dir() and ck.verify_checkpoint(aside / "step-000006")["step"] == 6
    assert "step-000006" in caplog.text and str(aside) in caplog.text
    [ev] = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("event") == "branch"]
    assert ev["moved"] == ["step-000006"] and ev["from_checkpoint"].endswith("step-000003")
    assert ck.find_resume(root, "auto").name == "step-000005"
    s = train(tiny_cfg(max_steps=7, ckpt_every=0, keep_last=1), run_dir, resume="auto")
    [res] = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("what") == "resume"][-1:]
    assert res["checkpoint"].endswith("step-000005") and s["step"] == 7


def test_resume_auto_trusts_latest_over_a_higher_step(run_dir, tiny_cfg):
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=6, ckpt_every=3, keep_last=2), run_dir)
    ck.set_pointer(root, "latest", root / "step-000003")  # e.g. a run rolled back by an older lmforge
    assert ck.find_resume(root, "auto").name == "step-000003"


def test_pointers_naming_a_corrupt_checkpoint_are_repaired(run_dir, tiny_cfg, caplog):
    """Defect 10: `best` kept naming a corrupt checkpoint after resume skipped it."""
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=6, ckpt_every=3, keep_last=2), run_dir)
    for name in ("best", "latest", "newest"):
        ck.set_pointer(root, name, root / "step-000006")
    _flip_byte(root / "step-000006" / "model.safetensors")
    with caplog.at_level("WARNING"):
        assert ck.find_resume(root, "auto").name == "step-000003"
    for name in ("best", "latest", "newest"):
        assert ck.read_pointer(root, name).name == "step-000003", name
    assert "best" in caplog.text and "step-000003" in caplog.text
    model, tok, info = ck.load_for_inference(run_dir, "best")
    assert info["step"] == 3


@pytest.mark.parametrize("text", ["../../etc", "/etc", "step-000003/../../tokens", "../run2/checkpoints/step-3"])
def test_pointer_leading_outside_checkpoints_is_refused(run_dir, tiny_cfg, text, capsys):
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=3, ckpt_every=3), run_dir)
    (root / "best").write_text(text + "\n")
    with pytest.raises(ck.CheckpointError) as e:
        ck.resolve(run_dir, "best")
    msg = str(e.value)
    assert "outside" in msg and "interrupted while writing" not in msg and text in msg
    from lmforge.cli import main

    assert main(["generate", str(run_dir), "--prompt", "a", "--device", "cpu", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "outside" in err and "Traceback" not in err
    (root / "latest").write_text(text + "\n")  # --resume auto: warned, and the newest good one is used
    assert ck.find_resume(root, "auto").name == "step-000003"
    assert ck.read_pointer(root, "latest").name == "step-000003"


def test_unsafe_pickle_message_has_no_weights_only_false_hint(run_dir, tiny_cfg):
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=3, ckpt_every=3), run_dir)
    path = root / "step-000003"

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    import torch

    torch.save({"optimizer": Evil()}, path / "optimizer.pt")
    man = json.loads((path / "manifest.json").read_text())  # an attacker can fix the checksums too
    man["files"]["optimizer.pt"] = {"sha256": ck.sha256_file(path / "optimizer.pt"),
                                    "bytes": (path / "optimizer.pt").stat().st_size}
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_optimizer_file(path)
    msg = str(e.value)
    assert "refused" in msg and "system" in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg and "Re-running" not in msg


def _swap_two_tokens(tok_dir):
    """Same vocabulary size, two ids exchanged: the model would silently print other characters."""
    path = tok_dir / "tokenizer.json"
    d = json.loads(path.read_text())
    vocab = d["model"]["vocab"]
    a, b = [k for k, v in vocab.items() if v >= 4][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    path.write_text(json.dumps(d))


def test_consumers_refuse_a_tokenizer_the_checkpoint_was_not_trained_with(run_dir, tiny_cfg, tmp_path, capsys):
    """Defect 4: generate printed gibberish (exit 0) and export wrote a mismatched folder."""
    from lmforge.cli import main

    train(tiny_cfg(max_steps=3, ckpt_every=3, eval_every=0), run_dir)
    man = ck.verify_checkpoint(ck.resolve(run_dir, "latest"))
    assert set(man["fingerprints"]) == {"tokenizer", "tokens"}
    _swap_two_tokens(run_dir / "tokenizer")
    out = tmp_path / "hf"
    for argv in (["generate", run_dir, "--prompt", "a", "--device", "cpu", "--max-new-tokens", "2"],
                 ["export", run_dir, "--out", out], ["eval", run_dir, "--device", "cpu"]):
        assert main([str(a) for a in argv]) == 2, argv
        err = capsys.readouterr().err
        assert "another tokenizer" in err and "Traceback" not in err, argv
    assert not out.exists()


def test_eval_refuses_token_shards_the_checkpoint_was_not_trained_on(run_dir, tiny_cfg, _template_run):
    """Defect 5 (second half): after a re-tokenize the validation split may hold training documents."""
    import shutil

    from lmforge.config import EvalConfig, TokensConfig
    from lmforge.eval.perplexity import evaluate_run
    from lmforge.tokens.stage import run_tokenize_stage

    train(tiny_cfg(max_steps=3, ckpt_every=3, eval_every=0), run_dir)
    shutil.rmtree(run_dir / "tokens")
    run_tokenize_stage(TokensConfig(val_fraction=0.3), _template_run / "data", run_dir / "tokenizer",
                       run_dir / "tokens", progress=False)
    with pytest.raises(ck.CheckpointError, match="other token shards"):
        evaluate_run(run_dir, checkpoint="latest", cfg=EvalConfig(max_batches=1, report_samples=0), device="cpu")
