"""train_blur=fresh: the sharp training photos blurred anew per (seed, epoch, index)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from test_data_deadleaves import TINY_EMBEDDED

from deblur.data.blur import CameraShake, apply_kernel, trim_kernel
from deblur.data.deadleaves import ReblurredPhotos
from deblur.data.embedded import VAL_PHOTOS
from deblur.data.io import DataError


def _photo(h: int = 80, w: int = 100) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _source(**kw) -> ReblurredPhotos:
    photo = _photo()
    args = dict(
        sharp=["a.png", "b.png"],
        read=lambda path: photo,
        transform=A.Compose([A.RandomCrop(48 + 8, 48 + 8)], seed=0),
        size=48,
        blur=CameraShake(kernel_size=9, min_length=3.0, max_length=None, noise_sigma=0.0),
        seed=1,
        names=["a/000", "b/000"],
    )
    args.update(kw)
    return ReblurredPhotos(**args)


def test_blur_centre_is_the_kernel_applied_to_real_pixels_around_the_crop():
    big = _photo(40, 40)
    shake = CameraShake(kernel_size=15, min_length=6.0, max_length=14.0, noise_sigma=0.0)
    blurred, sharp, kernel = shake.blur_centre(big, 24, np.random.default_rng(3))
    np.testing.assert_array_equal(sharp, big[8:32, 8:32])
    full = apply_kernel(big, trim_kernel(kernel))  # the crop is inside: no border pixel used
    np.testing.assert_array_equal(blurred, full[8:32, 8:32])
    assert kernel.shape == (15, 15) and abs(float(kernel.sum()) - 1.0) < 1e-4
    assert np.abs(blurred.astype(int) - sharp.astype(int)).mean() > 5  # it is blurred
    with pytest.raises(ValueError, match="at least 38 px"):
        shake.blur_centre(big[:30], 24, np.random.default_rng(3))


def test_fresh_pairs_are_a_pure_function_of_seed_epoch_index_and_change_every_epoch():
    a, b = _source(), _source()  # b: another instance, e.g. a resumed run's worker
    for epoch, index in [(0, 0), (3, 1)]:
        for x, y in zip(a.pair(epoch, index), b.pair(epoch, index)):
            np.testing.assert_array_equal(x, y)
    k0 = a.pair(0, 0)[2]
    others = [a.pair(1, 0)[2], a.pair(0, 2)[2], _source(seed=2).pair(0, 0)[2]]
    assert all(not np.array_equal(k0, k) for k in others)  # new kernel per epoch, index, seed
    blurred, sharp, _ = a.pair(5, 1)
    assert blurred.shape == sharp.shape == (48, 48, 3) and blurred.dtype == np.uint8
    assert a.name(5, 1) == "b/000/fresh_e5"


def test_fresh_pairs_follow_the_embedded_kernel_lengths_and_noise():
    photo = _photo(62, 62)  # the transform keeps it whole: the blur input is known
    src = _source(
        read=lambda path: photo,
        transform=A.Compose([A.CenterCrop(62, 62)], seed=0),
        blur=CameraShake(kernel_size=15, min_length=6.0, max_length=14.0, noise_sigma=2.0),
    )
    spans, residual = [], []
    for epoch in range(12):
        blurred, sharp, kernel = src.pair(epoch, 0)
        np.testing.assert_array_equal(sharp, photo[7:55, 7:55])
        ys, xs = np.nonzero(kernel > 1e-6)
        spans.append(max(np.ptp(ys), np.ptp(xs)) + 1)
        clean = apply_kernel(photo, trim_kernel(kernel))[7:55, 7:55].astype(float)
        residual.append(blurred.astype(float) - clean)
    assert 3 <= min(spans) and max(spans) <= 15 and len(set(spans)) > 2
    assert 1.8 < float(np.std(residual)) < 2.3  # sigma 2 sensor noise (+ rounding)
    with pytest.raises(DataError, match="training split is empty"):
        _source(sharp=[])


@pytest.fixture()
def _dm(make_datamodule):
    return lambda *overrides: make_datamodule("embedded", None, *TINY_EMBEDDED, *overrides)


@pytest.mark.usefixtures("cache_dir")
def test_datamodule_fresh_trains_on_reblurred_photos_and_validates_on_stored_pairs(
    _dm, make_datamodule
):
    fixed, fresh = _dm(), _dm("data.embedded.train_blur=fresh")
    assert fixed.train_blur == "fixed"  # the default
    fresh.setup("fit")
    ds = fresh.dataset("train")
    assert len(ds) == len(fixed.dataset("train")) == 3  # an epoch as long as the fixed pairs
    items = [ds[(i, 0, 4)] for i in range(len(ds))]
    assert {it["name"] for it in items} == {
        f"{p}/000/fresh_e4" for p in ("astronaut", "coffee", "china")
    }
    assert all(it["blur"].shape == it["sharp"].shape == (3, 64, 64) for it in items)
    again = ds[(0, 0, 4)]
    assert (again["blur"] == items[0]["blur"]).all()  # reproducible within the epoch
    assert not (ds[(0, 0, 5)]["blur"] == items[0]["blur"]).all()  # and new the next one
    val = [b["name"][0] for b in fresh.val_dataloader()]
    assert {n.split("/")[0] for n in val} == set(VAL_PHOTOS)
    assert all("kernel" in b for b in fresh.val_dataloader())  # the stored, fixed pairs
    both = _dm("data.embedded.train_blur=fresh", "data.embedded.train_source=both").dataset("train")
    assert len(both) == 3 + 6
    gpu = _dm("data.embedded.train_blur=fresh", "data.augment_on=gpu").dataset("train")
    assert tuple(gpu[(0, 0, 0)]["sharp"].shape) == (3, 102, 102)  # the GPU's pre-crop patch
    cls = make_datamodule(
        "embedded", None, *TINY_EMBEDDED, "data.embedded.train_blur=fresh", task="classify"
    ).dataset("train")
    labels = [float(cls[(i, 0, 0)]["label"]) for i in range(len(cls))]
    assert len(labels) == 6 and sum(labels) == 3  # one blurred per sharp photo crop


@pytest.mark.usefixtures("cache_dir")
def test_fresh_refuses_real_blur_datasets_whole_images_and_unknown_values(_dm, make_datamodule):
    with pytest.raises(DataError, match="train_blur must be one of fixed, fresh"):
        _dm("data.embedded.train_blur=sometimes")
    with pytest.raises(DataError, match="data.crop_size is null"):
        _dm("data.embedded.train_blur=fresh", "data.crop_size=null")
    with pytest.raises(DataError, match="blurred images are real"):
        make_datamodule("folder", "x", "+data.embedded.train_blur=fresh")
