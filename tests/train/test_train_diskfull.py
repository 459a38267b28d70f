"""Issue 12, defect 9: out of disk space. A one-line message naming the path and the bytes, the
partial output removed, the last good checkpoint intact, and the run resumes once space is freed.
Uses a small tmpfs (needs root and mount; skipped with the reason otherwise)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from lmforge import checkpoint as ck
from lmforge.cli import main
from lmforge.config import dump_config
from lmforge.io import write_marker


@pytest.fixture
def tmpfs():
    """`mount(size_kb) -> Path` of a fresh tmpfs; `remount(path, size_kb)` grows it."""
    mounted = []
    base = Path("/tmp") / f"lmforge-tmpfs-{uuid.uuid4().hex[:8]}"

    def mount(size_kb: int) -> Path:
        base.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(base)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            base.rmdir()
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(base)
        return base

    def remount(path: Path, size_kb: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True)

    mount.remount = remount
    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)
        shutil.rmtree(m, ignore_errors=True)


def _cli_run(src: Path, dst: Path, cfg) -> Path:
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)
    write_marker(dst / "tokens", "test")  # `lmforge train` requires a finished tokens stage
    path = dst.parent / f"{dst.name}.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_checkpoint_out_of_space_then_resume(run_dir, tiny_cfg, tmpfs, capsys, tmp_path):
    cfg = tiny_cfg(max_steps=6, ckpt_every=3, eval_every=0, keep_last=2)
    # measure one checkpoint on the normal disk, then give the tmpfs room for the inputs and ~1.5 of them
    probe = tmp_path / "probe"
    _cli_run(run_dir, probe, tiny_cfg(max_steps=1, ckpt_every=1, eval_every=0))
    assert main(["train", str(probe.parent / "probe.yaml"), "--run-dir", str(probe)]) == 0
    one = sum(f.stat().st_size for f in (probe / "checkpoints" / "step-000001").iterdir())
    inputs = sum(f.stat().st_size for d in ("tokenizer", "tokens") for f in (run_dir / d).rglob("*") if f.is_file())
    mnt = tmpfs((inputs + int(one * 1.5) + 96 * 1024) // 1024)
    run = mnt / "run"
    cfg_path = _cli_run(run_dir, run, cfg)
    capsys.readouterr()
    assert main(["train", str(cfg_path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lmforge: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "out of disk space" in lines[0] and "step-000006" in lines[0] and str(run / "checkpoints") in lines[0]
    assert "needs about" in lines[0] and "free" in lines[0]
    root = run / "checkpoints"
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    assert ck.read_pointer(root, "latest").name == "step-000003"
    assert ck.verify_checkpoint(root / "step-000003")["step"] == 3
    # with the disk still full, a resume fails the same clean way (no stale .tmp blocks it)
    assert main(["train", str(cfg_path), "--run-dir", str(run), "--resume", "auto"]) == 2
    assert "out of disk space" in capsys.readouterr().err
    tmpfs.remount(mnt, 16 * 1024)  # space freed
    assert main(["train", str(cfg_path), "--run-dir", str(run), "--resume", "auto"]) == 0
    assert ck.read_pointer(root, "latest").name == "step-000006"


def test_stage_out_of_space_removes_partial_output(tmpfs, capsys, tmp_path, _template_run, tiny_cfg):
    mnt = tmpfs(1024)
    run = mnt / "run"
    for sub in ("data", "tokenizer"):
        shutil.copytree(_template_run / sub, run / sub)
        write_marker(run / sub, "test")
    cfg = tiny_cfg()
    path = tmp_path / "cfg.yaml"
    d = yaml.safe_load(dump_config(cfg))
    path.write_text(yaml.safe_dump(d))
    free = shutil.disk_usage(mnt).free
    (mnt / "filler").write_bytes(b"\0" * (free - 40 * 1024))  # leave 40 KB: tokens need ~130 KB
    assert main(["tokenize", str(path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "out of disk space in the tokenize stage" in err and "needs more than" in err
    assert not (run / "tokens").exists()
    (mnt / "filler").unlink()
    assert main(["tokenize", str(path), "--run-dir", str(run)]) == 0
    assert (run / "tokens" / "manifest.json").is_file()
