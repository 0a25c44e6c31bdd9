"""Blur kernels and border-aware convolution (deblur.data.blur)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from deblur.data.blur import (
    add_noise,
    apply_kernel,
    gaussian_kernel,
    linear_motion_kernel,
    median_blur,
    motion_kernel,
    random_motion_blur,
)


def _centroid(k: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    return float((k * ys).sum()), float((k * xs).sum())


@pytest.mark.parametrize("size", [9, 31])
def test_motion_kernel_properties(size):
    k = motion_kernel(size, np.random.default_rng(3))
    assert k.shape == (size, size) and k.dtype == np.float32
    assert abs(float(k.sum()) - 1.0) < 1e-6
    assert (k >= 0).all() and np.count_nonzero(k) > 1
    cy, cx = _centroid(k)  # centre of mass on the centre pixel: no shift between blur and sharp
    assert abs(cy - (size - 1) / 2) < 1e-3 and abs(cx - (size - 1) / 2) < 1e-3


def test_motion_kernel_is_seeded():
    a = motion_kernel(31, np.random.default_rng(7))
    b = motion_kernel(31, np.random.default_rng(7))
    c = motion_kernel(31, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_long_trajectory_is_shrunk_into_the_support():
    k = motion_kernel(15, np.random.default_rng(0), length=200.0)
    assert k.shape == (15, 15) and abs(float(k.sum()) - 1.0) < 1e-6
    # the path reaches the border but nothing was cut off (the centroid stays centred)
    assert np.count_nonzero(k[0] + k[-1] + k[:, 0] + k[:, -1]) > 0
    cy, cx = _centroid(k)
    assert abs(cy - 7) < 1e-3 and abs(cx - 7) < 1e-3


def test_motion_kernel_is_fast():
    rng = np.random.default_rng(0)
    motion_kernel(31, rng)
    start = time.perf_counter()
    for _ in range(20):
        motion_kernel(31, rng)
    per_kernel = (time.perf_counter() - start) / 20
    assert per_kernel < 0.05  # ~1.5 ms measured on the 2-core CI machine


@pytest.mark.parametrize("length", [5, 9, 15])
def test_linear_kernel_respects_length(length):
    k = linear_motion_kernel(length, 0.0)
    size = k.shape[0]
    assert size % 2 == 1 and size >= length + 1
    assert abs(float(k.sum()) - 1.0) < 1e-6
    rows = np.nonzero(k.sum(axis=1))[0]
    assert list(rows) == [(size - 1) // 2]  # horizontal: one row only
    xs = np.arange(size)
    w = k.sum(axis=0)
    mean = (w * xs).sum()
    std_len = np.sqrt(12 * (w * (xs - mean) ** 2).sum())  # a uniform segment of length L
    assert abs(std_len - length) < 0.6
    extent = np.count_nonzero(w)
    assert length - 1 <= extent <= length + 2


def test_linear_kernel_angles():
    h = linear_motion_kernel(9, 0.0, size=11)
    v = linear_motion_kernel(9, 90.0, size=11)
    np.testing.assert_allclose(v, h.T, atol=1e-6)
    d = linear_motion_kernel(9, 45.0, size=11)
    # counter-clockwise on screen: up-right, i.e. row decreases as column increases
    assert d[1, 9] > 0 and d[9, 9] == 0 and d[9, 1] > 0
    with pytest.raises(ValueError, match="size >= 11"):
        linear_motion_kernel(9, 0.0, size=7)


def test_gaussian_kernel():
    k = gaussian_kernel(9, 2.0)
    assert abs(float(k.sum()) - 1.0) < 1e-6
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k.argmax() == 40
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(8)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("size", [5, 31])
def test_constant_image_stays_constant(dtype, size):
    img = np.full((20, 24, 3), 173, dtype)
    k = motion_kernel(size, np.random.default_rng(1))
    out = apply_kernel(img, k)
    assert out.dtype == dtype and out.shape == img.shape
    np.testing.assert_allclose(out.astype(np.float64), 173.0, atol=1e-3)


def test_no_wrap_around():
    img = np.zeros((16, 40), np.float32)
    img[:, :8] = 1.0  # bright strip on the left border only
    out = apply_kernel(img, linear_motion_kernel(9, 0.0))
    assert out[:, -6:].max() == 0.0  # a circular convolution would bring light to the right edge
    np.testing.assert_allclose(out[:, 0], 1.0, atol=1e-5)  # reflected, not zero-padded


def test_convolution_not_correlation():
    k = np.zeros((5, 5), np.float32)
    k[1, 3] = 0.7
    k[2, 2] = 0.3
    img = np.zeros((11, 11), np.float32)
    img[5, 5] = 1.0
    out = apply_kernel(img, k)  # a delta convolved with k is k, centred on the delta
    np.testing.assert_allclose(out[3:8, 3:8], k, atol=1e-6)


def test_no_renormalisation_and_uint8_rounding():
    img = np.full((10, 10), 100, np.uint8)
    half = gaussian_kernel(5) * 0.5
    assert apply_kernel(img, half).max() == 50
    f = apply_kernel(img.astype(np.float32) + 0.4, gaussian_kernel(3))
    np.testing.assert_allclose(f, 100.4, atol=1e-4)


def test_kernel_larger_than_image():
    img = np.full((6, 7, 3), 90, np.uint8)
    out = apply_kernel(img, motion_kernel(31, np.random.default_rng(0)))
    assert out.shape == img.shape and (out == 90).all()


def test_median_blur_removes_salt():
    img = np.full((15, 15, 3), 50, np.uint8)
    img[7, 7] = 255
    assert (median_blur(img, 5) == 50).all()
    f = median_blur(img.astype(np.float32), 9)
    assert f.dtype == np.float32 and (f == 50).all()


def test_add_noise_seeded():
    img = np.full((64, 64), 128, np.uint8)
    a = add_noise(img, 5.0, np.random.default_rng(0))
    b = add_noise(img, 5.0, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and 4.0 < a.astype(float).std() < 6.0
    assert (add_noise(img, 0.0, np.random.default_rng(0)) == img).all()


def test_random_motion_blur_matches_its_kernel():
    img = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    blurred, k = random_motion_blur(img, np.random.default_rng(5), size=15)
    np.testing.assert_array_equal(blurred, apply_kernel(img, k))
    assert not np.array_equal(blurred, img)
