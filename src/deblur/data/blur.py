"""Blur synthesis: camera-shake motion kernels (Boracchi and Foi 2012, as DeblurGAN v1's
Algorithm 1), linear / Gaussian / median blur, sensor noise. Kernels are float32, sum to 1, have
odd sides and their centre of mass on the centre pixel (no shift against the sharp twin)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from deblur.data.io import DataError


def check_odd(size: int, what: str = "kernel size") -> int:
    """``size`` as an int; not a positive odd number (a centre pixel): a :class:`DataError`."""
    if int(size) < 1 or int(size) % 2 == 0:
        raise DataError(f"The {what} must be a positive odd integer (a centre pixel), got {size}.")
    return int(size)


def shake_trajectory(
    rng: np.random.Generator,
    length: float,
    iterations: int = 2000,
    impulsive: float = 0.005,
    max_inertia: float = 0.7,
    max_big_shake: float = 0.2,
    max_gaussian_shake: float = 10.0,
) -> np.ndarray:
    """``iterations`` complex points (x + iy) on a camera-shake path of exactly ``length`` pixels:
    a velocity with inertia pulled back to the start, Gaussian shakes, rare big ones reverse it."""
    m = int(iterations)
    inertia = max_inertia * rng.uniform()
    p_big = max_big_shake * rng.uniform()
    gaussian = max_gaussian_shake * rng.uniform()
    phi = 2.0 * math.pi * rng.uniform()
    step = float(length) / (m - 1)
    if step <= 0.0:
        return np.zeros(m, np.complex128)
    big_draw = rng.uniform(size=m - 1)
    big_dir = 2.0 * np.exp(1j * (math.pi + rng.uniform(size=m - 1) - 0.5))
    noise = gaussian * (rng.standard_normal(m - 1) + 1j * rng.standard_normal(m - 1))
    is_big = (big_draw < p_big * impulsive).tolist()
    big_list, noise_list = big_dir.tolist(), noise.tolist()
    k = impulsive * step
    v = complex(math.cos(phi), math.sin(phi)) * step
    xt = 0j
    out = [0j] * m
    for t in range(m - 1):
        dv = k * (noise_list[t] - inertia * xt)
        if is_big[t]:
            dv += big_list[t] * v
        v += dv
        v *= step / abs(v)
        xt += v
        out[t + 1] = xt
    return np.asarray(out, np.complex128)


def rasterize_trajectory(points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (sub-pixel) rasterisation of complex points into a ``size x size`` PSF, their mean
    on the centre pixel (splatting keeps the centre of mass), shrunk when they would leave it."""
    size = check_odd(size)
    pts = np.asarray(points, np.complex128).ravel()
    if size == 1:
        return np.ones((1, 1), np.float32)
    c = (size - 1) / 2.0
    x, y = pts.real - pts.real.mean(), pts.imag - pts.imag.mean()
    reach = max(np.abs(x).max(), np.abs(y).max())
    shrink = c / reach if reach > c else 1.0
    x, y = (np.clip(v * shrink + c, 0.0, size - 1.0) for v in (x, y))
    x0, y0 = (np.minimum(np.floor(v).astype(np.int64), size - 2) for v in (x, y))
    fx, fy = x - x0, y - y0
    idx = np.concatenate(
        [y0 * size + x0, y0 * size + x0 + 1, (y0 + 1) * size + x0, (y0 + 1) * size + x0 + 1]
    )
    w = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    psf = np.bincount(idx, weights=w, minlength=size * size).reshape(size, size)
    return (psf / psf.sum()).astype(np.float32)


def motion_kernel(size: int, rng: np.random.Generator, length: float | None = None) -> np.ndarray:
    """Random camera-shake PSF of odd ``size``; ``length`` is the path length in pixels (default:
    uniform in [size/4, size - 1]; a path that does not fit is shrunk to the kernel)."""
    size = check_odd(size)
    if length is None:
        length = rng.uniform(size / 4.0, max(size - 1.0, size / 4.0))
    return rasterize_trajectory(shake_trajectory(rng, length), size)


def linear_motion_kernel(length: float, angle_deg: float, size: int | None = None) -> np.ndarray:
    """Uniform straight-line motion PSF of ``length`` pixels at ``angle_deg`` counter-clockwise
    from +x on screen (rows grow downwards); ``size``: by default the smallest odd one."""
    length = float(length)
    if length < 0:
        raise ValueError(f"Motion length must be >= 0, got {length}.")
    need = 2 * math.ceil(length / 2.0 - 1e-9) + 1
    size = need if size is None else check_odd(size)
    if size < need:
        raise ValueError(f"A linear kernel of length {length} needs size >= {need}, got {size}.")
    n = max(2, int(math.ceil(length * 8)) + 1)
    t = np.linspace(-length / 2.0, length / 2.0, n)
    a = math.radians(angle_deg)
    pts = t * math.cos(a) - 1j * t * math.sin(a)
    return rasterize_trajectory(pts, size)


def gaussian_kernel(size: int, sigma: float | None = None) -> np.ndarray:
    """Isotropic Gaussian PSF of odd ``size``; ``sigma`` defaults to OpenCV's rule for the size."""
    size = check_odd(size)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    if sigma <= 0:
        raise ValueError(f"Gaussian sigma must be > 0, got {sigma}.")
    g = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)  # sigma > 0: the formula, no table
    return (g @ g.T).astype(np.float32)


def _restore_dtype(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype, copy=False)


def apply_kernel(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve (not correlate) an ``H x W (x C)`` image with a PSF used as given, borders
    reflected (``BORDER_REFLECT_101``); the input dtype (integers rounded, clipped)."""
    img = np.asarray(image)
    k = np.asarray(kernel, np.float32)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"apply_kernel needs a 2-D kernel with odd sides, got {k.shape}.")
    if img.ndim not in (2, 3):
        raise ValueError(f"apply_kernel needs an H x W or H x W x C image, got {img.shape}.")
    flipped = np.ascontiguousarray(k[::-1, ::-1])
    work = img if img.dtype in (np.float32, np.float64) else img.astype(np.float32)
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    h, w = img.shape[:2]
    if ry < h and rx < w:
        out = cv2.filter2D(work, -1, flipped, borderType=cv2.BORDER_REFLECT_101)
    else:  # kernel wider than the image: numpy reflects repeatedly, OpenCV cannot
        pad = [(ry, ry), (rx, rx)] + [(0, 0)] * (img.ndim - 2)
        padded = np.pad(work, pad, mode="reflect")
        out = cv2.filter2D(padded, -1, flipped, borderType=cv2.BORDER_CONSTANT)
        out = out[ry : ry + h, rx : rx + w]
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return _restore_dtype(out, img.dtype)


def median_blur(image: np.ndarray, size: int) -> np.ndarray:
    """Median filter with an odd ``size x size`` window (per channel, replicated borders)."""
    size = check_odd(size, "median window")
    img = np.asarray(image)
    if img.dtype == np.uint8:
        out = cv2.medianBlur(np.ascontiguousarray(img), size)
        return out[:, :, None] if img.ndim == 3 and out.ndim == 2 else out
    from scipy.ndimage import median_filter

    footprint = (size, size) + (1,) * (img.ndim - 2)
    return median_filter(img, size=footprint, mode="nearest")


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian sensor noise of std ``sigma`` (in the image's own units, e.g. 0-255 levels)."""
    img = np.asarray(image)
    if sigma <= 0:
        return img.copy()
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return _restore_dtype(noisy, img.dtype)


def random_motion_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int = 31,
    length: float | None = None,
    noise_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Blur a sharp image with a fresh camera-shake kernel (+ optional noise): (blurred, kernel)."""
    kernel = motion_kernel(size, rng, length=length)
    return add_noise(apply_kernel(image, kernel), noise_sigma, rng), kernel


def trim_kernel(kernel: np.ndarray) -> np.ndarray:
    """The kernel without its all-zero border, cut symmetrically (odd sides, same centre)."""
    ys, xs = np.nonzero(kernel)
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    ry = int(np.abs(ys - cy).max()) if ys.size else 0
    rx = int(np.abs(xs - cx).max()) if xs.size else 0
    return np.ascontiguousarray(kernel[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1])


@dataclass(frozen=True)
class CameraShake:
    """``data.embedded``'s kernel and noise keys, the blur of generated pairs: a fresh camera-shake
    kernel a pair (length in ``[min_length, max_length or kernel_size - 1]``), noise (0-255)."""

    kernel_size: int
    min_length: float
    max_length: float | None
    noise_sigma: float

    def __post_init__(self) -> None:
        size = check_odd(self.kernel_size, "data.embedded.kernel_size")
        object.__setattr__(self, "kernel_size", size)
        if self.max_length is None:
            object.__setattr__(self, "max_length", float(self.kernel_size - 1))

    @property
    def margin(self) -> int:
        """Pixels the blur reads beyond each side of the crop it returns."""
        return self.kernel_size // 2

    def blur_centre(
        self, big: np.ndarray, size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(blurred, sharp, kernel)``: the centre ``size x size`` of ``big`` (:attr:`margin` more
        a side: no reflected border read) blurred anew, the kernel's zero border trimmed (speed)."""
        margin = self.margin
        if big.shape[0] < size + 2 * margin or big.shape[1] < size + 2 * margin:
            raise ValueError(
                f"blur_centre needs an image of at least {size + 2 * margin} px a side "
                f"(size {size} + 2 x {margin}), got {big.shape[1]}x{big.shape[0]}."
            )
        top, left = (big.shape[0] - size) // 2, (big.shape[1] - size) // 2
        length = float(rng.uniform(self.min_length, self.max_length))
        kernel = motion_kernel(self.kernel_size, rng, length=length)
        crop = (slice(top, top + size), slice(left, left + size))
        blurred = add_noise(apply_kernel(big, trim_kernel(kernel))[crop], self.noise_sigma, rng)
        return blurred, np.ascontiguousarray(big[crop]), kernel
