"""Fail early (validation files checked before training) and data=folder with true kernels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from deblur.config import compose
from deblur.data.blur import apply_kernel, motion_kernel
from deblur.data.datamodule import DeblurDataModule
from deblur.data.io import DataError, image_size, write_image
from deblur.data.pairs import read_folder
from deblur.eval.evaluation import run_evaluate
from deblur.runs import RunRecord


def _pair(root: Path, name: str, h: int, w: int, seed: int = 0, kernel: bool = False) -> None:
    rng = np.random.default_rng(seed)
    photo = skdata.astronaut()
    y, x = rng.integers(0, 512 - h), rng.integers(0, 512 - w)
    sharp = np.ascontiguousarray(photo[y : y + h, x : x + w])
    k = motion_kernel(15, rng, length=10.0)
    write_image(root / "sharp" / f"{name}.png", sharp)
    write_image(root / "blur" / f"{name}.png", apply_kernel(sharp, k))
    if kernel:
        (root / "kernel" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / "kernel" / f"{name}.npy", k)


def _folder(tmp_path: Path, val_sizes=((64, 80),), train_sizes=((96, 96),) * 2) -> Path:
    root = tmp_path / "pairs"
    for i, (h, w) in enumerate(train_sizes):
        _pair(root / "train", f"t{i}", h, w, seed=i)
    for i, (h, w) in enumerate(val_sizes):
        _pair(root / "val", f"v{i}", h, w, seed=10 + i)
    return root


@pytest.fixture()
def folder_dm(make_datamodule):
    """data=folder at ``root`` as training composes it, 64 px crops, no workers."""

    def make(root: Path, **kw) -> DeblurDataModule:
        kw.setdefault("crop_size", 64)
        return make_datamodule("folder", root, num_workers=0, **kw)

    return make


def test_image_size_reads_headers_and_names_broken_files(tmp_path):
    png = write_image(tmp_path / "a.png", np.zeros((21, 34, 3), np.uint8))
    jpg = write_image(tmp_path / "a.jpg", np.zeros((50, 70, 3), np.uint8))
    assert image_size(png) == (21, 34) and image_size(jpg, check=True) == (50, 70)
    png.write_bytes(png.read_bytes()[:-20])
    assert image_size(png) == (21, 34)  # the header alone is intact
    with pytest.raises(DataError, match=r"a\.png.*truncated"):
        image_size(png, check=True)


def test_too_small_validation_image_stops_setup_before_training(tmp_path, folder_dm):
    root = _folder(tmp_path, val_sizes=((64, 80), (20, 48)))
    dm = folder_dm(root)
    with pytest.raises(
        DataError, match=r"1 image\(s\) have a side below 32 px.*v1\.png' \(48x20\)"
    ):
        dm.setup("fit")
    with pytest.raises(DataError, match="data.min_val_side"):
        dm.check_sizes()
    dm.check_sizes(min_side=16)  # a generator that takes 16 px images (the caller's minimum)
    with pytest.raises(DataError, match="below 72 px"):
        dm.check_sizes(min_side=72)
    folder_dm(root, min_val_side=None).setup("fit")  # null switches the size check off


def test_unreadable_or_mismatched_validation_files_are_named_at_setup(tmp_path, folder_dm):
    root = _folder(tmp_path, val_sizes=((64, 80), (64, 80)))
    v0 = root / "val" / "blur" / "v0.png"
    v0.write_bytes(v0.read_bytes()[:200])
    write_image(root / "val" / "sharp" / "v1.png", np.zeros((64, 60, 3), np.uint8))
    with pytest.raises(DataError) as err:
        folder_dm(root).setup("validate")
    msg = str(err.value)
    assert "2 pair(s) cannot be read" in msg and "v0.png" in msg and "truncated" in msg
    assert "v1.png' is 80x64 but sharp" in msg and "60x64" in msg


def test_training_images_smaller_than_the_crop_get_one_warning(tmp_path, caplog, folder_dm):
    root = _folder(tmp_path, train_sizes=((40, 96), (96, 96), (50, 50)))
    with caplog.at_level(logging.WARNING, logger="deblur.data.datamodule"):
        folder_dm(root).setup("fit")
    warnings = [
        r.getMessage() for r in caplog.records if "smaller than data.crop_size" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith("2 of 3 training images are smaller than data.crop_size=64")


def test_folder_kernels_feed_the_wiener_baseline(tmp_path, runs_dir, folder_dm):
    root = tmp_path / "synthetic"
    for i in range(3):
        _pair(root, f"scene{i}/img", 96, 112, seed=i, kernel=True)
    pairs = read_folder(root)["train"]
    assert [p.kernel.relative_to(root).as_posix() for p in pairs] == [
        f"kernel/scene{i}/img.npy" for i in range(3)
    ]
    dm = folder_dm(root, val_fraction=0.34)
    item = dm.dataset("val")[0]
    assert item["kernel"].shape == (1, 15, 15)
    over = ["data=folder", f"data.root={root}", "split=all", "device=cpu"]
    (tmp_path / "w").mkdir()
    run_evaluate(
        compose("evaluate", ["baseline=wiener", *over]), tmp_path / "w", rec := RunRecord()
    )
    wiener = rec.result
    assert wiener.n_images == 3
    assert wiener.final["all/psnr"] > wiener.input["all/psnr"] + 1.0  # beats identity


def test_folder_kernels_must_cover_every_image(tmp_path):
    root = tmp_path / "synthetic"
    for i in range(3):
        _pair(root, f"img{i}", 48, 48, seed=i, kernel=i != 2)
    with pytest.raises(DataError, match=r"1 of 3 blurred image\(s\).*no kernel.*img2\.npy"):
        read_folder(root)
    np.save(root / "kernel" / "img2.npy", np.ones((3, 3), np.float32))
    np.save(root / "kernel" / "extra.npy", np.ones((3, 3), np.float32))
    with pytest.raises(DataError, match=r"1 kernel file\(s\).*no blurred image.*extra\.npy"):
        read_folder(root)


def test_no_validation_pair_stops_before_any_network(tmp_path, runs_dir, monkeypatch):
    """data=folder data.val_fraction=0 on a folder without val/: one paragraph before the GAN is
    built (not 'no validation ran' after the whole run)."""
    import deblur.systems.fit as fit
    from entry_runs import run

    root = tmp_path / "flat"
    for i in range(3):
        _pair(root, f"scene{i}/img", 64, 64, seed=i)
    built = []
    monkeypatch.setattr(fit, "build_system", lambda cfg: built.append(cfg) or 1 / 0)
    over = ["data=folder", f"data.root={root}", "data.val_fraction=0", f"runs_dir={runs_dir}"]
    with pytest.raises(DataError, match=r"no validation pairs.*Fix: data\.val_fraction=0\.1"):
        run("train", over, tmp_path / "run")
    assert built == []
