"""Atomic files on the run's own filesystem (issue 12, item 4): a full disk while a checkpoint
is written leaves no partial file at a final name, keeps the previous good checkpoints and
records the failure with the path and the cause."""

from __future__ import annotations

import errno
import json
import os

import pytest
import pytorch_lightning as pl

import deblur.files as ckpts
from deblur.checkpoints import read_checkpoint
from deblur.files import CheckpointWriteError
from deblur.runs import write_json_atomic
from entry_runs import run


class _DiskFullFromEpoch(pl.Callback):
    """From the start of epoch ``epoch`` on, every checkpoint write fails half-way (ENOSPC)."""

    def __init__(self, monkeypatch, epoch: int) -> None:
        self.epoch, self.armed, self.partial = epoch, False, []
        real = ckpts._write_chunk

        def write(fd, chunk, path):
            if self.armed and path.suffix == ".ckpt":
                os.write(fd, chunk[: len(chunk) // 2])
                self.partial.append(path)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, chunk, path)

        monkeypatch.setattr(ckpts, "_write_chunk", write)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.armed = trainer.current_epoch >= self.epoch


def test_disk_full_while_checkpointing(tmp_path, cache_dir, monkeypatch):
    fault = _DiskFullFromEpoch(monkeypatch, epoch=1)
    run_dir = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as err:
        run("train", ["loss=lsgan", "disc=patch", "trainer.max_epochs=3"], run_dir, [fault])
    assert fault.partial, "the fault was never injected"
    msg = str(err.value)
    assert str(fault.partial[0]) in msg and "No space left on device" in msg
    folder = run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp left
    for name in ("best.ckpt", "last.ckpt"):  # the epoch-0 checkpoints are intact
        ckpt = read_checkpoint(folder / name, task="gan")
        assert ckpt["epoch"] == 0 and "optimizer_states" in ckpt
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "failed"
    assert m["error"]["path"] == str(fault.partial[0])
    assert m["error"]["cause"] == "No space left on device"


def test_metrics_json_write_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"status": "running"})

    def full(fd, chunk, p):
        os.write(fd, chunk[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpts, "_write_chunk", full)
    with pytest.raises(CheckpointWriteError, match=r"metrics\.json: No space left on device"):
        write_json_atomic(path, {"status": "finished", "pad": "x" * 100})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
