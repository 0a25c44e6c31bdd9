"""The loader on a GPU trainer: ``data.num_workers=auto`` / ``data.cache=auto`` chosen from the
machine, and uint8 patches in ``data.augment_on=gpu`` mode, scaled on the device exactly as the
CPU path scales them."""

from __future__ import annotations

import logging

import pytest
import torch
from test_data_gpu_augment import _gopro
from torch.overrides import TorchFunctionMode

from deblur.data import datamodule
from deblur.data.gpu_augment import TensorAugment
from deblur.data.io import from_uint8


@pytest.mark.parametrize(
    ("on_gpu", "procs", "want"), [(True, None, 14), (True, "2", 7), (False, None, 2)]
)
def test_auto_workers_leave_two_cores_on_a_gpu_trainer(monkeypatch, on_gpu, procs, want):
    monkeypatch.setattr(datamodule, "_cores", lambda: 16)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    if procs:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", procs)
    else:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert datamodule.loader_workers("auto", on_gpu) == want
    assert datamodule.loader_workers(3, on_gpu) == 3  # a number is taken as given


def test_auto_cache_when_the_decoded_set_fits_half_the_free_ram(tmp_path, monkeypatch, caplog):
    root = _gopro(tmp_path / "GOPRO", h=48, w=64)
    paths = sorted(root.rglob("*.png"))
    need = len(paths) * 48 * 64 * 3
    assert datamodule.decoded_bytes(paths) == need
    monkeypatch.setattr(datamodule, "available_ram", lambda: 2 * need)
    with caplog.at_level(logging.INFO, logger="deblur.data.datamodule"):
        assert datamodule.cache_decision("auto", True, paths) is True
    assert "data.cache=auto" in caplog.text and "cached in RAM" in caplog.text
    monkeypatch.setattr(datamodule, "available_ram", lambda: 2 * need - 2)
    assert datamodule.cache_decision("auto", True, paths) is False  # one byte over half
    assert datamodule.cache_decision("auto", False, paths) is False  # the CPU trainer: no cache
    assert datamodule.cache_decision(True, False, paths) is True  # a bool is taken as given
    assert datamodule.available_ram() > 0  # /proc/meminfo is read on Linux


def test_gpu_mode_ships_uint8_patches_that_augment_like_float_ones(
    tmp_path, make_datamodule, thesis_augment
):
    root = _gopro(tmp_path / "GOPRO")
    common = dict(crop_size=16, pre_crop_scale=1.5, batch_size=2, num_workers=0)
    dm = make_datamodule("gopro", root, augment_on="gpu", **common)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["blur"].dtype == torch.uint8 and batch["sharp"].dtype == torch.uint8
    assert next(iter(dm.val_dataloader()))["blur"].dtype == torch.float32  # full-res: as before
    aug = TensorAugment(thesis_augment, 16, seed=0)
    floats = {**batch, "blur": from_uint8(batch["blur"]), "sharp": from_uint8(batch["sharp"])}
    got, want = aug(batch, epoch=3), aug(floats, epoch=3)
    for key in ("blur", "sharp"):
        assert got[key].dtype == torch.float32 and torch.equal(got[key], want[key])
        assert got[key].min() >= -1 and got[key].max() <= 1
    assert TensorAugment.to_float(batch)["blur"].dtype == torch.float32


class DeviceMoves(TorchFunctionMode):
    """Counts ``Tensor.to`` calls that name a device (a host tensor sent to the GPU, on CUDA)."""

    def __init__(self):
        super().__init__()
        self.moves = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        named = "device" in kwargs or any(isinstance(a, torch.device | str) for a in args[1:])
        if func is torch.Tensor.to and named:
            self.moves += 1
        return func(*args, **kwargs)


def test_gpu_augment_sends_its_parameters_in_one_copy_per_batch(thesis_augment):
    aug = TensorAugment(thesis_augment, 16, seed=0)
    batch = {
        "blur": torch.rand(4, 3, 24, 24),
        "sharp": torch.rand(4, 3, 24, 24),
        "name": list("abcd"),
    }
    aug(batch, epoch=0)  # warm: the elastic field's Gaussian taps are copied once, then kept
    with DeviceMoves() as counted:
        aug(batch, epoch=1)
    assert counted.moves == 1
