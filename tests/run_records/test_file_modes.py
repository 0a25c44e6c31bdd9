"""Run folders a team can share (issue 22): every file a run writes gets the user's umask mode,
as ``open`` would give it, not the 0600 of a temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deblur.files import file_mode, write_bytes_atomic
from entry_runs import run


@pytest.fixture
def umask():
    """Set a umask for one test; the old one comes back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() else ""): stat.S_IMODE(p.lstat().st_mode)
        for p in root.rglob("*")
        if not p.is_symlink()
    }


@pytest.mark.parametrize("mask, fmode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_write_bytes_atomic_follows_umask(tmp_path, umask, mask, fmode):
    umask(mask)
    assert file_mode() == fmode
    target = tmp_path / "sub" / "x.json"
    write_bytes_atomic(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) == fmode
    write_bytes_atomic(target, b"{}\n")  # the replacement too
    assert stat.S_IMODE(target.stat().st_mode) == fmode and target.read_bytes() == b"{}\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


@pytest.mark.parametrize("mask, fmode, dmode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_every_file_of_a_run_gets_the_umask_mode(tmp_path, cache_dir, umask, mask, fmode, dmode):
    umask(mask)
    run_dir = tmp_path / "run"
    rec = run("train", [], run_dir)
    assert rec.status == "finished", rec.error
    modes = _modes(run_dir)
    names = set(modes)
    for want in ("metrics.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert want in names, sorted(names)
    assert any(n.startswith(".hydra/") and n.endswith(".yaml") for n in names), sorted(names)
    wrong = {n: oct(m) for n, m in modes.items() if m != (dmode if n.endswith("/") else fmode)}
    assert not wrong, wrong
