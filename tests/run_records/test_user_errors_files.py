"""Errors about files (issue 22, items 1-2): one paragraph naming the file as on disk and the fix."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deblur.checkpoints import CheckpointError, read_checkpoint
from deblur.config import compose
from deblur.data.io import DataError, write_image
from deblur.data.pairs import read_folder
from deblur.errors import UserError
from deblur.eval.baselines import MissingKernelError
from deblur.eval.evaluation import evaluate_pairs
from deblur.runs import managed_run


def test_blurred_without_twin_is_named_as_on_disk(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    for side in ("blur", "sharp"):
        write_image(tmp_path / side / "g1" / "5.png", img)
    write_image(tmp_path / "blur" / "g1" / "6.png", img)
    with pytest.raises(DataError) as err:
        read_folder(tmp_path)
    msg = str(err.value)
    assert "blur/g1/6.png" in msg and "add the missing sharp images" in msg and "\n" not in msg


class _Foreign:
    def __reduce__(self):
        return (print, ("this would run",))


def test_foreign_pickle_is_not_called_cut_off(tmp_path):
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps(_Foreign()))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(bad, key="ckpt_path")
    msg = str(err.value)
    assert str(bad) in msg and "not a deblur checkpoint" in msg and "refuses" in msg, msg
    assert "cut off" not in msg and "\n" not in msg


def test_wiener_without_kernels_names_the_kernel_folder_and_both_fixes(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    for side in ("blur", "sharp"):
        write_image(tmp_path / side / "g1" / "6.png", img)
    pairs = read_folder(tmp_path)["train"]
    with pytest.raises(MissingKernelError) as err:
        evaluate_pairs("wiener", pairs, progress=False)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert f"{tmp_path}/kernel/" in msg and "kernel/g1/6.npy" in msg and "blur/g1/6.png" in msg
    assert "baseline=identity" in msg and "data=embedded" in msg


def test_read_only_runs_dir_is_refused_before_the_body_runs(tmp_path, monkeypatch):
    """A read-only disk (simulated: tests may run as root) is one paragraph, not OSError 30."""
    runs = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(runs)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    ran = []
    cfg = OmegaConf.create({"runs_dir": str(runs)})
    with pytest.raises(UserError) as err:
        managed_run(cfg, "gan", lambda d, r: ran.append(d), run_dir=runs / "e" / "x")
    msg = str(err.value)
    assert not ran and str(runs) in msg and "runs_dir=" in msg and "\n" not in msg, msg
    assert "Read-only" in msg and "writable" in msg


def test_truncated_training_png_is_one_paragraph_at_setup(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pairs"
    for split, names in (("train", ("t0", "t1")), ("val", ("v0",))):
        for name in names:
            for side in ("blur", "sharp"):
                pixels = rng.integers(0, 255, (64, 64, 3), np.uint8)
                write_image(root / split / side / f"{name}.png", pixels)
    bad = root / "train" / "blur" / "t1.png"
    bad.write_bytes(bad.read_bytes()[:200])
    cfg = compose("train", ["data=folder"])
    cfg.data.root, cfg.data.num_workers, cfg.data.crop_size = str(root), 0, 32
    dm = instantiate(cfg.data, task="paired")
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert str(bad) in msg and "truncated" in msg and "train split" in msg and "\n" not in msg
    assert "data.check_train_files=false" in msg
    cfg.data.check_train_files = False
    instantiate(cfg.data, task="paired").setup("fit")  # the switch skips the check
