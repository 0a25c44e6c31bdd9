"""Datasets, classification view, RAM cache and the LightningDataModule (deblur.data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from deblur.config import compose
from deblur.data.datamodule import worker_init_fn
from deblur.data.datasets import ClassificationDataset, ImageCache, PairedDataset
from deblur.data.io import DataError, ImageReadError
from deblur.data.pairs import Pair
from deblur.data.preview import contact_sheet
from deblur.data.transforms import build_train_transform

TINY_EMBEDDED = [
    "data.embedded.long_side=64",
    "data.embedded.blurs_per_photo=1",
    "data.embedded.kernel_size=9",
    "data.embedded.photos=[astronaut,coffee,chelsea,rocket]",
]


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _pair(tmp: Path, name: str, h: int = 40, w: int = 48, seed: int = 0) -> Pair:
    rng = np.random.default_rng(seed)
    sharp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    blur = cv2.GaussianBlur(sharp, (5, 5), 0)
    return Pair(
        _write(tmp / "blur" / f"{name}.png", blur),
        _write(tmp / "sharp" / f"{name}.png", sharp),
        name,
    )


def _gopro(root: Path, h: int = 40, w: int = 56) -> Path:
    for split, seqs in (("train", ("S1", "S2", "S3")), ("test", ("T1",))):
        for s, seq in enumerate(seqs):
            for i in range(2):
                img = np.full((h, w, 3), 10 * s + i, np.uint8)
                img[::2] = 200
                _write(root / split / seq / "sharp" / f"{i:06d}.png", img)
                _write(root / split / seq / "blur" / f"{i:06d}.png", cv2.blur(img, (3, 3)))
    return root


def test_paired_dataset_items(tmp_path):
    pairs = [_pair(tmp_path, "a"), _pair(tmp_path, "b", seed=1)]
    item = PairedDataset(pairs)[1]
    assert set(item) == {"blur", "sharp", "name"} and item["name"] == "b/b"
    assert item["blur"].shape == (3, 40, 48) and item["blur"].dtype == torch.float32
    assert -1.0 <= float(item["sharp"].min()) and float(item["sharp"].max()) <= 1.0


def test_size_mismatch_is_caught_at_load_time(tmp_path):
    pair = _pair(tmp_path, "a")
    _write(pair.sharp, np.zeros((30, 48, 3), np.uint8))
    ds = PairedDataset([pair])
    with pytest.raises(DataError, match=r"different sizes.*blur/a.png.*48x40.*sharp/a.png.*48x30"):
        ds[0]


def test_corrupt_image_is_named(tmp_path):
    pair = _pair(tmp_path, "a")
    pair.blur.write_bytes(pair.blur.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="blur/a.png"):
        PairedDataset([pair])[0]


def test_classification_labels(tmp_path):
    pairs = [_pair(tmp_path, "a"), _pair(tmp_path, "b", seed=1)]
    ds = ClassificationDataset(pairs)
    assert len(ds) == 4
    labels = [float(ds[i]["label"]) for i in range(4)]
    assert labels == [1.0, 0.0, 1.0, 0.0]
    paired = PairedDataset(pairs)[1]
    assert torch.equal(ds[2]["image"], paired["blur"]) and torch.equal(
        ds[3]["image"], paired["sharp"]
    )


def test_ram_cache_serves_decoded_images(tmp_path):
    pairs = [_pair(tmp_path, "a"), _pair(tmp_path, "b", seed=1)]
    cached = PairedDataset(pairs, cache=ImageCache().preload(p.blur for p in pairs))
    cached.cache.preload(p.sharp for p in pairs)  # adds only what it lacks
    expected = PairedDataset(pairs)[0]
    assert isinstance(cached.cache, ImageCache) and len(cached.cache) == 4
    for p in pairs:
        p.blur.unlink()
    got = cached[0]
    assert torch.equal(got["blur"], expected["blur"]) and torch.equal(
        got["sharp"], expected["sharp"]
    )


def test_reseed_changes_augmentation(tmp_path, thesis_augment):
    pairs = [_pair(tmp_path, "a", 64, 64)]
    spec = {k: dict(v, p=1.0) for k, v in thesis_augment.items()}
    a = PairedDataset(pairs, build_train_transform(spec, 32, True, 0))
    b = PairedDataset(pairs, build_train_transform(spec, 32, True, 0))
    assert torch.equal(a[0]["blur"], b[0]["blur"])
    a.reseed(1)
    b.reseed(2)
    assert not torch.equal(a[0]["blur"], b[0]["blur"])


def test_worker_init_fn_sets_cv2_threads():
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        worker_init_fn(0)
        assert cv2.getNumThreads() <= 1  # setNumThreads(0): OpenCV runs sequentially
    finally:
        cv2.setNumThreads(before)


def test_gopro_val_sequences_are_named_training_sequences(tmp_path, make_datamodule):
    root = _gopro(tmp_path / "GOPRO_Large")
    dm = make_datamodule("gopro", root, val_sequences=["S2"], num_workers=0)
    dm.setup("fit")
    assert {p.group for p in dm.val_pairs} == {"S2"}
    assert {p.group for p in dm.train_pairs} == {"S1", "S3"}
    with pytest.raises(DataError, match="val_sequences names T1.*S1, S2, S3"):
        make_datamodule("gopro", root, val_sequences=["T1"], num_workers=0).setup("fit")


def test_gopro_datamodule_batches(tmp_path, make_datamodule):
    root = _gopro(tmp_path / "GOPRO_Large")
    dm = make_datamodule("gopro", root, crop_size=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    # validation = one held-out training sequence (val_fraction 0.1 of 3, at least 1), never
    # the test split: that is what deblur.evaluate reports
    val_groups = {p.group for p in dm.val_pairs}
    assert len(val_groups) == 1 and val_groups < {"S1", "S2", "S3"} and len(dm.val_pairs) == 2
    assert len(dm.train_pairs) == 4 and not val_groups & {p.group for p in dm.train_pairs}
    assert [p.group for p in dm.test_pairs] == ["T1", "T1"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["blur"].shape == (2, 3, 32, 32) and batch["sharp"].shape == (2, 3, 32, 32)
    assert len(batch["name"]) == 2
    assert batch["blur"].min() >= -1 and batch["blur"].max() <= 1
    val = next(iter(dm.val_dataloader()))
    assert val["blur"].shape == (1, 3, 40, 56) and "kernel" not in val


def test_folder_datamodule_splits_by_group_with_workers(tmp_path, make_datamodule):
    for g in range(4):
        for i in range(2):
            img = np.full((36, 36, 3), 40 * g + i, np.uint8)
            _write(tmp_path / "blur" / f"seq{g}" / f"{i}.png", img)
            _write(tmp_path / "sharp" / f"seq{g}" / f"{i}.png", img)
    dm = make_datamodule(
        "folder",
        tmp_path,
        crop_size=24,
        num_workers=2,
        persistent_workers=False,
        val_fraction=0.25,
        cache=True,
        augment=None,  # the pixel-equality check below needs un-warped crops
    )
    dm.setup("fit")
    assert {p.group for p in dm.train_pairs}.isdisjoint({p.group for p in dm.val_pairs})
    assert len(dm.val_pairs) == 2
    batches = list(dm.train_dataloader())
    assert len(batches) == 6 and all(b["blur"].shape == (1, 3, 24, 24) for b in batches)
    assert all(torch.equal(b["blur"], b["sharp"]) for b in batches)


def test_missing_root_errors(tmp_path, make_datamodule):
    dm = make_datamodule("gopro", tmp_path / "nowhere", num_workers=0)
    with pytest.raises(DataError, match="nowhere"):
        dm.setup("fit")
    cfg = compose("train", ["data=gopro"])
    with pytest.raises(MissingMandatoryValue, match="data.root"):
        instantiate(cfg.data, task="paired")
    with pytest.raises(DataError, match="task must be one of"):
        make_datamodule("gopro", tmp_path, task="segment")


def test_layout_is_built_from_its_node(tmp_path, make_datamodule):
    """data.layout is a _target_ node: its options come from the user-facing keys, a wrong
    target is one DataError naming data.layout."""
    root = _gopro(tmp_path / "GOPRO_Large")
    dm = make_datamodule("gopro", root, blur_key="sharp", num_workers=0)
    assert dm.read_pairs.keywords == {"blur_key": "sharp"}
    assert all(p.blur.parent.name == "sharp" for p in dm.train_pairs)
    with pytest.raises(DataError, match=r"data\.layout: deblur\.data\.pairs\.read_nope could not"):
        make_datamodule("gopro", root, layout={"_target_": "deblur.data.pairs.read_nope"})
    with pytest.raises(DataError, match="needs _partial_: true"):
        make_datamodule("hide", root, layout={"_target_": "pathlib.Path"})
    with pytest.raises(DataError, match="data.layout needs a '_target_' node"):
        make_datamodule("gopro", root, layout="gopro")


def test_embedded_datamodule_from_config(tmp_path):
    cfg = compose(
        "train",
        [
            f"data.root={tmp_path / 'emb'}",
            "data.num_workers=0",
            "data.crop_size=32",
            *TINY_EMBEDDED,
        ],
    )
    dm = instantiate(cfg.data, task="paired")
    dm.setup("fit")
    assert {p.group for p in dm.val_pairs} == {"chelsea", "rocket"}
    assert {p.group for p in dm.train_pairs} == {"astronaut", "coffee"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["blur"].shape == (1, 3, 32, 32)
    val = next(iter(dm.val_dataloader()))
    assert val["kernel"].shape == (1, 1, 9, 9)
    assert abs(float(val["kernel"].sum()) - 1) < 1e-5
    assert max(val["blur"].shape[-2:]) == 64

    clf = instantiate(cfg.data, task="classify")
    clf.setup("fit")
    b = next(iter(clf.train_dataloader()))
    assert b["image"].shape == (1, 3, 32, 32) and b["label"].shape == (1,)
    labels = [float(x["label"]) for x in clf.val_dataloader()]
    assert labels == [1.0, 0.0] * len(dm.val_pairs)

    sheet = contact_sheet(dm.val_pairs, tile=48)
    assert sheet.dtype == np.uint8 and sheet.shape[0] >= 2 * 48
