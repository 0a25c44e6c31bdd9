"""Paired augmentation: identical geometry on both images, explicit borders (deblur.data.transforms).

Every pipeline is built from ``data.augment`` of conf/data/_common.yaml (the ``thesis_augment``
fixture) with ``build_train_transform``, the function the DataModule trains with.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from deblur.data.io import DataError
from deblur.data.transforms import build_augmentation, build_train_transform


def _always(spec: dict) -> dict:
    return {k: dict(v, p=1.0) for k, v in spec.items()}


def _image(h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pre_crop", [None, 56])
def test_same_image_gives_identical_outputs(thesis_augment, seed, pre_crop):
    t = build_train_transform(_always(thesis_augment), 48, True, seed, pre_crop=pre_crop)
    img = _image(seed=seed)
    out = t(image=img, target=img.copy())
    assert out["image"].shape == (48, 48, 3)
    np.testing.assert_array_equal(out["image"], out["target"])
    assert not np.array_equal(out["image"], img[:48, :48])


def test_aligned_content_stays_aligned(thesis_augment):
    t = build_train_transform(_always(thesis_augment), 48, True, 4)
    sharp = _image()
    blur = 255 - sharp  # any pixel-wise function of the sharp image
    out = t(image=blur, target=sharp)
    diff = np.abs(out["image"].astype(int) - (255 - out["target"].astype(int)))
    assert diff.max() <= 1  # interpolation rounding only


def test_border_modes_are_explicit_reflect(thesis_augment):
    affine = build_augmentation(thesis_augment["affine"], "affine")
    assert isinstance(affine, A.Affine) and affine.border_mode == cv2.BORDER_REFLECT_101
    flat = np.full((64, 64, 3), 77, np.uint8)
    t = build_train_transform(_always(thesis_augment), 64, True, 0)
    for _ in range(3):
        out = t(image=flat, target=flat)
        assert (out["image"] == 77).all()  # a constant (black) border would show up here
    constant = build_augmentation(
        dict(thesis_augment["affine"], border_mode="constant", rotate=[30, 30], p=1.0)
    )
    rotated = A.Compose([constant])(image=flat)["image"]
    assert (rotated == 0).any()


def test_thesis_list_is_the_configured_one(thesis_augment):
    """The pipeline training uses: the thesis order, reflect borders, the approximate elastic."""
    t = build_train_transform(thesis_augment, 32, True, 0)
    names = [type(x).__name__ for x in t.transforms]
    assert names == [
        "HorizontalFlip",
        "Affine",
        "Transpose",
        "OpticalDistortion",
        "ElasticTransform",
        "PadIfNeeded",
        "RandomCrop",
    ]
    elastic = t.transforms[4]
    assert elastic.approximate and elastic.border_mode == cv2.BORDER_REFLECT_101
    assert all(x.p == 0.5 for x in t.transforms[:5])


def test_switch_off_with_p_zero_or_null(thesis_augment):
    spec = dict(thesis_augment, elastic_transform=dict(thesis_augment["elastic_transform"], p=0))
    spec["transpose"] = None
    names = [type(x).__name__ for x in build_train_transform(spec, 32, True, 0).transforms]
    assert "ElasticTransform" not in names and "Transpose" not in names
    assert names[-2:] == ["PadIfNeeded", "RandomCrop"]
    assert names[0] == "HorizontalFlip"


def test_small_images_are_padded_to_the_crop():
    t = build_train_transform(None, 64, True, 0)
    out = t(image=_image(40, 50), target=_image(40, 50))
    assert out["image"].shape == (64, 64, 3)


def test_seeded_transforms_repeat(thesis_augment):
    img = _image()
    a = build_train_transform(_always(thesis_augment), 32, True, 11)(image=img, target=img)
    b = build_train_transform(_always(thesis_augment), 32, True, 11)(image=img, target=img)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_bad_specs(thesis_augment):
    affine = thesis_augment["affine"]
    with pytest.raises(DataError, match="Unknown border_mode 'mirror' in data.augment.affine"):
        build_augmentation(dict(affine, border_mode="mirror"), "affine")
    with pytest.raises(DataError, match="data.augment.flip needs a '_target_'"):
        build_augmentation({"p": 0.5}, "flip")
    with pytest.raises(
        DataError, match=r"data\.augment\.x: albumentations\.Nope could not be built"
    ):
        build_augmentation({"_target_": "albumentations.Nope", "p": 0.5}, "x")
    with pytest.raises(DataError, match=r"(?s)data\.augment\.affine: .*could not be built.*rotate"):
        build_augmentation(dict(affine, rotate="left"), "affine")
    # no hidden border default: a warping entry without border_mode is named, with the fix
    no_border = {k: v for k, v in affine.items() if k != "border_mode"}
    with pytest.raises(DataError, match=r"no border_mode.*data\.augment\.affine\.border_mode"):
        build_augmentation(no_border, "affine")
    with pytest.raises(DataError, match="pre_crop"):
        build_train_transform(None, 64, True, 0, pre_crop=32)


def test_unpaired_pipeline_for_classification(thesis_augment):
    t = build_train_transform(thesis_augment, 32, paired=False, seed=0)
    assert t(image=_image())["image"].shape == (32, 32, 3)
