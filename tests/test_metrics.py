"""The pinned metric definitions: PSNR on 8-bit levels, SSIM = scikit-image's Gaussian SSIM,
and the MATLAB-style 3-D SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity

from deblur.data.blur import apply_kernel, gaussian_kernel
from deblur.eval.metrics import image_metrics, psnr, ssim, ssim_matlab3d


def t(img: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> 1 x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=-1,
        data_range=255,
    )


def matlab3d_reference(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB ssim on an H x W x 3 volume: 11x11x11 Gaussian (sigma 1.5), replicate borders."""
    x, y = a.astype(np.float64), b.astype(np.float64)

    def f(z):
        return ndimage.gaussian_filter(z, 1.5, mode="nearest", truncate=5 / 1.5)  # radius 5

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(
        (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()
    )


def image_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    photo = skdata.astronaut()[37:120, 60:151]  # 83 x 91: odd sizes
    noisy = np.clip(photo.astype(int) + rng.integers(-20, 21, photo.shape), 0, 255).astype(np.uint8)
    random = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    flat = np.full((29, 31, 3), 200, np.uint8)
    flat_shift = flat.copy()
    flat_shift[10:20, 5:25] = 190
    return [
        (photo, apply_kernel(photo, gaussian_kernel(9))),
        (photo, noisy),
        (random, np.clip(random.astype(int) + 30, 0, 255).astype(np.uint8)),
        (random, rng.integers(0, 256, random.shape, dtype=np.uint8)),
        (flat, flat_shift),
    ]


@pytest.mark.parametrize("idx", range(5))
def test_ssim_equals_skimage_gaussian_ssim(idx: int) -> None:
    a, b = image_pairs()[idx]
    ours = float(ssim(t(b), t(a))[0])
    assert ours == pytest.approx(sk_ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("idx", range(5))
def test_ssim_matlab3d_equals_3d_reference(idx: int) -> None:
    a, b = image_pairs()[idx]
    assert float(ssim_matlab3d(t(b), t(a))[0]) == pytest.approx(matlab3d_reference(a, b), abs=1e-4)


def test_matlab3d_is_a_different_number_and_one_on_identity() -> None:
    a, b = image_pairs()[0]
    assert float(ssim_matlab3d(t(a), t(a))[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(t(a), t(a))[0]) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(ssim_matlab3d(t(b), t(a))[0]) - float(ssim(t(b), t(a))[0])) > 1e-3


def test_batch_gives_per_image_values() -> None:
    (a1, b1), (a2, b2) = image_pairs()[2], image_pairs()[3]
    pred, target = torch.cat([t(b1), t(b2)]), torch.cat([t(a1), t(a2)])
    for fn in (psnr, ssim, ssim_matlab3d):
        out = fn(pred, target)
        assert out.shape == (2,)
        assert float(out[0]) == pytest.approx(float(fn(t(b1), t(a1))[0]), abs=1e-9)
        assert float(out[1]) == pytest.approx(float(fn(t(b2), t(a2))[0]), abs=1e-9)
    assert set(image_metrics(pred, target)) == {"psnr", "ssim", "ssim_matlab3d"}


def test_psnr_of_a_constant_offset() -> None:
    target = np.random.default_rng(1).integers(20, 200, (16, 24, 3), dtype=np.uint8)
    pred = target + 10  # every pixel 10 levels off: MSE 100
    expected = 10 * math.log10(255**2 / 100)  # 28.1308 dB
    assert float(psnr(t(pred), t(target))[0]) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(28.1308, abs=1e-4)


def test_psnr_quantises_like_saved_images() -> None:
    target = t(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    nudged = target + 0.3 / 127.5  # less than half a level: the same 8-bit image on disk
    assert float(psnr(nudged, target)[0]) == 100.0  # identical images: capped, not inf
    assert float(psnr(nudged, target, quantize=False)[0]) < 100.0
    assert float(psnr(target + 0.7 / 127.5, target)[0]) == pytest.approx(48.1308, abs=1e-3)


def test_accepts_unbatched_and_rejects_bad_shapes() -> None:
    a = torch.zeros(3, 16, 16)
    assert psnr(a, a).shape == (1,)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))


@pytest.mark.parametrize("valid", [True, False])
def test_gpu_filter_path_equals_cpu_path(valid: bool) -> None:
    from deblur.eval.metrics import _gaussian_filter

    z = torch.rand(2, 15, 23, 31) * 255 - 128
    cpu = _gaussian_filter(z, valid, use_cv2=True)
    conv = _gaussian_filter(z, valid, use_cv2=False)  # the grouped-convolution path used on GPUs
    assert cpu.shape == conv.shape == ((2, 15, 13, 21) if valid else (2, 15, 23, 31))
    assert torch.allclose(cpu, conv, atol=1e-3)


# ---------------------------------------------------------------- sharpness (issue 19)


def _photo_like(seed: int = 0, size: int = 96) -> torch.Tensor:
    """Random rectangles with hard edges (rich in high frequencies), in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(3, size, size)
    for _ in range(40):
        y0, x0 = torch.randint(0, size - 8, (2,), generator=g).tolist()
        h, w = torch.randint(4, 30, (2,), generator=g).tolist()
        img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return img.unsqueeze(0)


def _box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    w = torch.full((3, 1, k, k), 1.0 / (k * k))
    return torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, [k // 2] * 4, mode="reflect"), w, groups=3
    )


def test_sharpness_ratios_are_one_on_the_target_and_fall_with_blur():
    from deblur.eval.metrics import sharpness_ratios

    sharp = _photo_like()
    same = sharpness_ratios(sharp, sharp)
    assert float(same["grad_energy"]) == pytest.approx(1.0) and float(same["high_band"]) == 1.0
    ratios = [sharpness_ratios(_box_blur(sharp, k), sharp) for k in (3, 5, 9)]
    for key in ("grad_energy", "high_band"):
        values = [float(r[key]) for r in ratios]
        assert 1.0 > values[0] > values[1] > values[2] > 0, (key, values)
    # the high band loses more to blur than the gradient energy (it is the top octave)
    assert float(ratios[0]["high_band"]) < float(ratios[0]["grad_energy"])
    # over-sharpening (unsharp mask) is reported above 1
    over = sharp + 1.5 * (sharp - _box_blur(sharp, 3))
    assert float(sharpness_ratios(over, sharp)["grad_energy"]) > 1.5


def test_high_band_power_sees_only_its_band():
    from deblur.eval.metrics import high_band_power

    n = 64
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    low = torch.cos(2 * torch.pi * 0.1 * xx).expand(1, 3, n, n).float() * 0.5
    high = torch.cos(2 * torch.pi * 0.375 * xx).expand(1, 3, n, n).float() * 0.5
    assert float(high_band_power(high)) > 1e3 * float(high_band_power(low))
