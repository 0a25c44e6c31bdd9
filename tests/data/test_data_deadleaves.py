"""Procedural dead-leaves training pairs: reproducible, natural statistics, the embedded mix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from embedded_yaml import LEAVES
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from deblur.config import compose
from deblur.data.blur import CameraShake, apply_kernel
from deblur.data.datasets import ProceduralDataset
from deblur.data.deadleaves import DeadLeaves, ProceduralPairs, dead_leaves, power_law_radii
from deblur.data.embedded import VAL_PHOTOS
from deblur.data.io import DataError
from deblur.data.pairs import Pair
from deblur.data.preview import Sample, contact_sheet, preview_samples
from deblur.data.sampling import EpochSeededSampler

SHAKE = CameraShake(kernel_size=9, min_length=3.0, max_length=None, noise_sigma=0.0)
SMALL = {"size": 64, "blur": SHAKE, "params": LEAVES}
TINY_EMBEDDED = [
    "data.embedded.long_side=96",
    "data.embedded.blurs_per_photo=1",
    "data.embedded.kernel_size=9",
    "data.embedded.photos=[astronaut,coffee,chelsea,rocket,china]",
    "data.crop_size=64",
    "data.num_workers=0",
    "data.embedded.procedural_per_epoch=6",
]


def spectral_slope(image: np.ndarray) -> float:
    """alpha of a 1 / f^alpha fit to the radially averaged power spectrum (Hann-windowed)."""
    g = image.astype(np.float64).mean(axis=2)
    g -= g.mean()
    h, w = g.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(g * np.outer(np.hanning(h), np.hanning(w))))) ** 2
    yy, xx = np.indices(power.shape)
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    profile = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(len(profile))
    band = (f >= 4) & (f <= min(h, w) // 4)
    return float(-np.polyfit(np.log(f[band]), np.log(profile[band]), 1)[0])


def gradient_kurtosis(image: np.ndarray) -> float:
    d = np.diff(image.astype(np.float64).mean(axis=2), axis=1).ravel()
    d -= d.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def test_same_seed_epoch_index_gives_the_same_pair():
    a = ProceduralPairs(seed=3, **SMALL)
    b = ProceduralPairs(seed=3, **SMALL)  # another instance, e.g. in a resumed run's worker
    first = a.pair(2, 5)
    for x, y in zip(first, b.pair(2, 5)):
        np.testing.assert_array_equal(x, y)
    blur, sharp, kernel = first
    assert blur.shape == sharp.shape == (64, 64, 3) and blur.dtype == np.uint8
    assert kernel.shape == (9, 9) and abs(float(kernel.sum()) - 1.0) < 1e-5
    others = [a.pair(2, 6), a.pair(3, 5), ProceduralPairs(seed=4, **SMALL).pair(2, 5)]
    for other in others:  # another index, epoch or seed: another image
        assert np.abs(other[1].astype(int) - sharp).mean() > 10


def test_pair_is_its_sharp_image_blurred_with_its_kernel_plus_the_noise_model():
    blur, sharp, kernel = ProceduralPairs(seed=0, **SMALL).pair(0, 1)
    m = 4  # the kernel radius: inside, the blur of the crop alone is the whole story
    inner = (slice(m, -m), slice(m, -m))
    expect = apply_kernel(sharp, kernel)[inner].astype(int)
    assert np.abs(blur[inner].astype(int) - expect).max() <= 1  # float rounding only
    assert (
        np.abs(np.diff(blur.astype(float), axis=1)).mean()
        < np.abs(np.diff(sharp.astype(float), axis=1)).mean()
    )
    noisy, sharp2, kernel2 = ProceduralPairs(
        seed=0, **dict(SMALL, blur=replace(SHAKE, noise_sigma=3.0))
    ).pair(0, 1)
    np.testing.assert_array_equal(sharp2, sharp)
    residual = noisy[inner].astype(float) - apply_kernel(sharp2, kernel2)[inner]
    assert 2.5 < residual.std() < 3.5  # Gaussian sensor noise of std noise_sigma, as embedded


def test_radii_follow_the_power_law():
    r = power_law_radii(np.random.default_rng(0), 200_000, 1.5, 200.0, 3.0)
    assert r.min() >= 1.5 and r.max() <= 200.0
    # density r^-3: P(r < 2 r_min) = (1 - 1/4) / (1 - (r_min / r_max)^2)
    assert np.mean(r < 3.0) == pytest.approx(0.75 / (1 - (1.5 / 200) ** 2), abs=0.01)


def test_images_have_natural_statistics_that_noise_has_not():
    shake = replace(SHAKE, min_length=7.0, noise_sigma=1.0)
    pairs = ProceduralPairs(**dict(SMALL, size=256, blur=shake), seed=0)
    images = [pairs.pair(0, i)[1] for i in range(6)]
    slopes = [spectral_slope(im) for im in images]
    assert all(1.5 <= s <= 3.0 for s in slopes), slopes  # photos: 2.6-3.1 with this estimate
    assert all(gradient_kurtosis(im) > 5.0 for im in images)  # sparse, heavy-tailed gradients
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    assert not 1.5 <= spectral_slope(noise) <= 3.0
    assert gradient_kurtosis(noise) < 3.5
    # textures and smoothing are switchable
    flat = dead_leaves(
        64, np.random.default_rng(1), replace(LEAVES, textured=0.0, smooth_sigma=0.0)
    )
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) < 400  # one colour per visible leaf


def test_bad_generator_parameters_are_named():
    with pytest.raises(DataError, match="r_min < r_max"):
        replace(LEAVES, r_min=5.0, r_max=2.0)
    with pytest.raises(DataError, match="shapes"):
        replace(LEAVES, shapes=("hexagon",))
    with pytest.raises(DataError, match=r"procedural: unknown key\(s\) \['rmin'\], missing"):
        DeadLeaves.from_config({"rmin": 1.0})


def _items(ds, epoch, workers=0, loader=None):
    sampler = EpochSeededSampler(len(ds), seed=0)
    sampler.set_epoch(epoch)
    loader = loader or DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
    return {n: s for b in loader for n, s in zip(b["name"], b["sharp"])}


def test_epoch_travels_with_the_index_to_persistent_workers():
    ds = ProceduralDataset(ProceduralPairs(seed=0, **SMALL), length=4)
    sampler = EpochSeededSampler(len(ds), seed=0)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2, persistent_workers=True)
    epoch0 = _items(ds, 0, loader=loader)
    sampler.set_epoch(1)
    epoch1 = _items(ds, 1, loader=loader)
    assert set(epoch0) == {f"deadleaves/e0/{i:06d}" for i in range(4)}
    assert set(epoch1) == {f"deadleaves/e1/{i:06d}" for i in range(4)}  # new images each epoch
    fresh = _items(ds, 1)  # one process, started at epoch 1 (a resume)
    assert fresh.keys() == epoch1.keys()
    assert all(torch.equal(fresh[k], epoch1[k]) for k in fresh)


@pytest.fixture()
def _dm(make_datamodule):
    """data=embedded (tiny build) with ``overrides``, as training composes and builds it."""
    return lambda *overrides: make_datamodule("embedded", None, *TINY_EMBEDDED, *overrides)


@pytest.mark.usefixtures("cache_dir")
def test_train_source_selects_the_training_pairs_and_validation_stays_on_photos(_dm):
    names = {}
    for source in ("photos", "procedural", "both"):
        dm = _dm(f"data.embedded.train_source={source}")
        dm.setup("fit")
        train = dm.train_dataloader()
        names[source] = [n for batch in train for n in batch["name"]]
        val = [b["name"][0] for b in dm.val_dataloader()]
        assert {n.split("/")[0] for n in val} == set(VAL_PHOTOS)  # never procedural
        assert all("kernel" in b for b in dm.val_dataloader())
        batch = next(iter(train))
        assert batch["blur"].shape == batch["sharp"].shape == (1, 3, 64, 64)
    photos = {n for n in names["photos"]}
    assert photos == {"astronaut/000", "coffee/000", "china/000"}
    assert len(names["procedural"]) == 6 and all(
        n.startswith("deadleaves/e0/") for n in names["procedural"]
    )
    assert sorted(names["both"]) == sorted(names["photos"] + names["procedural"])
    assert _dm().train_source == "photos"  # the default is today's behaviour
    gpu = _dm("data.embedded.train_source=both", "data.augment_on=gpu").dataset("train")
    sizes = {tuple(gpu[(i, 0, 0)]["sharp"].shape) for i in range(len(gpu))}
    assert sizes == {(3, 102, 102)}  # the pre-crop patch the GPU warps, for photos and leaves


@pytest.mark.usefixtures("cache_dir")
def test_procedural_classifier_view_and_bad_mix_keys(_dm, make_datamodule):
    cfg = compose("train", ["data=embedded", *TINY_EMBEDDED, "data.embedded.train_source=both"])
    dm = instantiate(cfg.data, task="classify")
    ds = dm.dataset("train")
    labels = [float(ds[(i, 0, 0)]["label"]) for i in range(len(ds))]
    assert len(ds) == 2 * (3 + 6) and sum(labels) == 9  # balanced: one blurred per sharp
    with pytest.raises(DataError, match="train_source must be one of photos, procedural, both"):
        _dm("data.embedded.train_source=noise")
    with pytest.raises(DataError, match="procedural_per_epoch >= 1"):
        _dm("data.embedded.train_source=both", "data.embedded.procedural_per_epoch=0")
    with pytest.raises(DataError, match="data.crop_size is null"):
        _dm("data.embedded.train_source=procedural", "data.crop_size=null").dataset("train")
    with pytest.raises(DataError, match="data=embedded only"):
        make_datamodule("folder", "x", "+data.embedded.train_source=both")


@pytest.mark.usefixtures("cache_dir")
def test_preview_shows_procedural_training_pairs(_dm):
    dm = _dm("data.embedded.train_source=both")
    items = preview_samples(dm, "train", 4)
    kinds = [type(i).__name__ for i in items]
    assert kinds.count("Pair") >= 1 and kinds.count("Sample") >= 2  # photos and dead leaves
    sample = next(i for i in items if isinstance(i, Sample))
    blur, sharp, kernel = dm.procedural.pair(0, int(sample.name.rsplit("/", 1)[1]))
    np.testing.assert_array_equal(sample.sharp, sharp)  # the epoch-0 pair the run trains on
    sheet = contact_sheet(items, tile=48)
    assert sheet.shape[0] == 4 * (48 + 22 + 4) and sheet.dtype == np.uint8
    assert all(isinstance(i, Pair) for i in preview_samples(dm, "val", 3))
