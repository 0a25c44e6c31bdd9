"""data.augment_on=gpu: the thesis augmentations on tensors (deblur.data.gpu_augment), on the CPU.

Checked against the albumentations path they replace: the same warp for a fixed parameter draw,
the same parameter distributions, identical geometry on both images, reproducible seeding, and
the DataModule hook that applies them to training batches only.
"""

from __future__ import annotations

import types
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric import functional as fgeometric

from deblur.data.gpu_augment import TensorAugment, gaussian_kernel1d
from deblur.data.io import DataError
from deblur.data.transforms import build_augmentation


def _pattern(size: int = 64) -> np.ndarray:
    """A smooth colour test pattern (bilinear reads of it differ from OpenCV's by rounding)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    chans = [
        128 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0),
        128 + 90 * np.cos((xx + 2 * yy) / 6.0),
        128 + 60 * np.sin(xx / 9.0 + yy / 4.0),
    ]
    return np.stack(chans, -1).clip(0, 255).astype(np.uint8)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _warp(spec: dict, img: np.ndarray) -> np.ndarray:
    out = TensorAugment({"a": spec}, None).apply([_tensor(img)], torch.Generator())
    return out[0][0].permute(1, 2, 0).numpy()


FIXED = [
    {  # shift, scale and rotation all fixed: a single parameter draw
        "_target_": "albumentations.Affine",
        "p": 1.0,
        "translate_percent": [0.05, 0.05],
        "scale": [1.08, 1.08],
        "rotate": [30, 30],
        "border_mode": "reflect_101",
    },
    {
        "_target_": "albumentations.Affine",
        "p": 1.0,
        "translate_percent": [-0.06, -0.06],
        "scale": [0.9, 0.9],
        "rotate": [-41, -41],
        "border_mode": "reflect_101",
    },
    {
        "_target_": "albumentations.OpticalDistortion",
        "p": 1.0,
        "distort_limit": [0.05, 0.05],
        "border_mode": "reflect_101",
    },
    {
        "_target_": "albumentations.OpticalDistortion",
        "p": 1.0,
        "distort_limit": [-0.05, -0.05],
        "border_mode": "reflect_101",
    },
]


@pytest.mark.parametrize("spec", FIXED, ids=["affine+", "affine-", "optical+", "optical-"])
def test_fixed_warp_matches_albumentations(spec):
    """Same warp, borders included (reflect_101), as albumentations/OpenCV: within uint8 rounding."""
    img = _pattern()
    ref = A.Compose([build_augmentation(spec)])(image=img)["image"].astype(np.float32)
    mine = _warp(spec, img)
    diff = np.abs(mine - ref)
    assert diff.max() <= 0.75 and diff.mean() < 0.35  # OpenCV rounds to uint8 (<= 0.5)
    # and the warp did something: far from the identity
    assert np.abs(img.astype(np.float32) - ref).mean() > 3


@pytest.mark.parametrize("target", ["HorizontalFlip", "VerticalFlip", "Transpose"])
def test_flips_and_transpose_are_exact(target):
    img = _pattern(48)
    spec = {"_target_": f"albumentations.{target}", "p": 1.0}
    ref = A.Compose([build_augmentation(spec)])(image=img)["image"]
    assert np.array_equal(np.rint(_warp(spec, img)).astype(np.uint8), ref)


def test_elastic_field_has_albumentations_statistics():
    """Noise / max|noise|, OpenCV Gaussian blur (17 taps, sigma 50), times alpha: same spread."""
    size, alpha, sigma = 96, 3.0, 50.0
    q = {"alpha": alpha, "sigma": sigma, "ksize": 17, "same_dxdy": False, "noise": "gaussian"}
    gen = torch.Generator().manual_seed(0)
    mine = TensorAugment._elastic_field(8, size, torch.device("cpu"), gen, q)
    rng = np.random.default_rng(0)
    ref = np.stack(
        [
            np.stack(
                fgeometric.generate_displacement_fields(
                    (size, size), alpha, sigma, False, (17, 17), rng, "gaussian"
                )
            )
            for _ in range(8)
        ]
    )
    assert mine.shape == (8, 2, size, size)
    assert mine.std().item() == pytest.approx(ref.std(), rel=0.15)
    assert mine.abs().max().item() == pytest.approx(np.abs(ref).max(), rel=0.35)
    # OpenCV's kernel itself
    k = cv2.getGaussianKernel(17, sigma, cv2.CV_32F)[:, 0]
    assert np.allclose(gaussian_kernel1d(sigma, 17).numpy(), k, atol=1e-6)
    # ksize (0, 0), as ElasticTransform(approximate=False): OpenCV picks the size from sigma
    delta = np.zeros((1, 101), np.float32)
    delta[0, 50] = 1.0
    row = cv2.GaussianBlur(delta, (0, 0), 2.0, borderType=cv2.BORDER_REPLICATE)[0]
    auto = gaussian_kernel1d(2.0).numpy()
    half = auto.size // 2
    assert np.allclose(row[50 - half : 51 + half], auto, atol=1e-6)
    assert np.abs(row).sum() == pytest.approx(auto.sum(), abs=1e-5)  # nothing outside


def test_parameter_distributions_match_albumentations(thesis_augment):
    """Application rates, rotation / scale / integer shift ranges of the thesis list."""
    n, size = 4000, 410
    aug = TensorAugment(thesis_augment, 256)
    params = aug.sample(n, size, torch.Generator().manual_seed(1))
    kinds = [op.kind for op in aug.ops]
    assert kinds == ["hflip", "affine", "transpose", "optical", "elastic"]
    for i in range(len(kinds)):  # p = 0.5 each: 4000 draws, 4.5 sigma = 0.036
        assert abs(params[f"{i}.on"].double().mean().item() - 0.5) < 0.036
    on = params["1.on"]
    angle, m = params["1.angle"], params["1.matrix"][on]
    assert angle.min() >= -45 and angle.max() <= 45
    # the same draws from albumentations' own Affine
    ref = build_augmentation(thesis_augment["affine"])
    ref.set_random_seed(0)
    rot, tx = [], []
    for _ in range(n):
        p = ref.get_params_dependent_on_data({"shape": (size, size, 3)}, {})
        rot.append(p["rotate"])
        tx.append(
            p["matrix"][0, 2] - (size / 2 - 0.5) * (1 - p["matrix"][0, 0] - p["matrix"][0, 1])
        )
    rot = np.asarray(rot)
    assert angle.mean().item() == pytest.approx(rot.mean(), abs=1.5)
    assert angle.std().item() == pytest.approx(rot.std(), rel=0.05)
    # translation: whole pixels within int(0.0625 * 410) = 25, both directions
    mine_tx = (m[:, 0, 2] - (size / 2 - 0.5) * (1 - m[:, 0, 0] - m[:, 0, 1])).numpy()
    for t in (mine_tx, np.asarray(tx)):
        assert np.allclose(t, np.round(t), atol=1e-6)
        assert t.min() >= -25 - 1e-6 and t.max() <= 25 + 1e-6 and t.min() < -20 and t.max() > 20
    assert mine_tx.std() == pytest.approx(np.std(tx), rel=0.06)
    # optical k in +-0.05, uniform; 0 where the op is off
    k, k_on = params["3.k"], params["3.on"]
    assert (k[~k_on] == 0).all() and k[k_on].abs().max() <= 0.05
    assert k[k_on].std().item() == pytest.approx(0.1 / np.sqrt(12), rel=0.06)


def test_pair_gets_identical_geometry_and_seeding_is_reproducible(thesis_augment):
    aug = TensorAugment(thesis_augment, 32)
    x = torch.rand(6, 3, 52, 52) * 2 - 1
    batch = {"blur": x, "sharp": x.clone(), "name": [f"p{i}" for i in range(6)]}
    out = aug(batch, epoch=3)
    assert out["blur"].shape == (6, 3, 32, 32)
    assert torch.equal(out["blur"], out["sharp"])
    assert out["name"] == batch["name"]
    assert torch.equal(aug(batch, epoch=3)["blur"], out["blur"])  # resume: same draw
    assert not torch.equal(aug(batch, epoch=4)["blur"], out["blur"])  # next epoch: new draw
    # the pair is warped, not just cropped, for at least some samples
    centre = x[:, :, 10:42, 10:42]
    moved = (out["blur"] - centre).abs().flatten(1).mean(1)
    assert (moved > 0.05).sum() >= 2


def test_off_ops_are_exact_identity_and_crop_is_centred(thesis_augment):
    off = {k: {**v, "p": 0.0} for k, v in thesis_augment.items()}
    zero_p = {k: {**v, "p": 1e-9} for k, v in thesis_augment.items()}  # built, never drawn
    x = torch.rand(2, 3, 20, 20)
    assert TensorAugment(off, 8).ops == []
    for aug in (TensorAugment(off, 8), TensorAugment(zero_p, 8)):
        out = aug({"image": x, "name": ["a", "b"]})["image"]
        assert torch.allclose(out, x[:, :, 6:14, 6:14], atol=1e-5)


def test_unsupported_entries_name_the_key_and_the_fix(thesis_augment):
    with pytest.raises(DataError, match=r"data\.augment\.blurry: .*Blur.*augment_on=cpu"):
        TensorAugment({"blurry": {"_target_": "albumentations.Blur", "p": 0.5}}, 32)
    shear = {**thesis_augment["affine"], "shear": [-10, 10]}
    with pytest.raises(DataError, match=r"data\.augment\.affine: Affine shear"):
        TensorAugment({"affine": shear}, 32)
    const = {**thesis_augment["optical_distortion"], "border_mode": "constant"}
    with pytest.raises(DataError, match="border_mode"):
        TensorAugment({"od": const}, 32)
    with pytest.raises(DataError, match="square training patches"):
        TensorAugment(thesis_augment, 16).apply([torch.rand(1, 3, 20, 30)], torch.Generator())


def _gopro(root: Path, h: int = 48, w: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for split, seqs in (("train", ("S1", "S2")), ("test", ("T1",))):
        for seq in seqs:
            for i in range(2):
                img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                for sub, im in (("sharp", img), ("blur", cv2.blur(img, (3, 3)))):
                    path = root / split / seq / sub / f"{i:06d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(path), im)
    return root


class _Trainer:
    def __init__(self, training: bool) -> None:
        self.training, self.current_epoch = training, 0
        self.state = types.SimpleNamespace(fn="fit")


def test_datamodule_gpu_mode_cuts_patches_and_hook_augments_training_batches(
    tmp_path, make_datamodule
):
    root = _gopro(tmp_path / "GOPRO")
    common = dict(crop_size=16, pre_crop_scale=1.5, batch_size=2, num_workers=0)
    dm = make_datamodule("gopro", root, augment_on="gpu", **common)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["blur"].shape == (2, 3, 24, 24)  # the patch only: crop 16 * 1.5
    dm.trainer = _Trainer(training=True)
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["blur"].shape == (2, 3, 16, 16) and out["sharp"].shape == (2, 3, 16, 16)
    val = next(iter(dm.val_dataloader()))
    dm.trainer = _Trainer(training=False)
    assert dm.on_after_batch_transfer(val, 0)["blur"].shape == (1, 3, 48, 64)  # untouched
    # the CPU path (default) is unchanged: crops come out of the loader
    cpu = make_datamodule("gopro", root, **common)
    assert next(iter(cpu.train_dataloader()))["blur"].shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="augment_on must be one of"):
        make_datamodule("gopro", root, augment_on="tpu", **common)
    whole = make_datamodule("gopro", root, augment_on="gpu", **{**common, "pre_crop_scale": None})
    with pytest.raises(DataError, match="needs data.pre_crop_scale"):
        whole.setup("fit")
