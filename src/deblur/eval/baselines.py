"""Classical baselines, one ``conf/baseline/<name>.yaml`` ``_partial_`` node each: the input, and
scikit-image's deconvolutions with the TRUE kernel per RGB channel, padded by the kernel size
against FFT wrap-around (``pad_mode=edge``: +0.2 dB over reflect, +8 dB over none)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf
from skimage import restoration

from deblur.config import CONF_DIR
from deblur.data.io import read_kernel
from deblur.errors import UserError

Kernel = np.ndarray | str | Path | None


class MissingKernelError(UserError, ValueError):
    """A deconvolution baseline was asked for on data whose blur kernel is unknown."""


def baseline_names() -> list[str]:
    """The baselines a user can name: the options of ``conf/baseline/``."""
    return sorted(p.stem for p in (CONF_DIR / "baseline").glob("*.yaml"))


def load_baseline(name: str) -> Callable[..., np.ndarray]:
    """The function ``(image, kernel) -> image`` of ``conf/baseline/<name>.yaml``."""
    if name not in baseline_names():
        raise ValueError(f"Unknown baseline '{name}'; choose one of {', '.join(baseline_names())}.")
    return instantiate(OmegaConf.load(CONF_DIR / "baseline" / f"{name}.yaml"))


def load_kernel(kernel: np.ndarray | str | Path) -> np.ndarray:
    """A 2-D float64 kernel summing to 1, from an array or a ``.npy`` / 8- or 16-bit PNG file."""
    k = read_kernel(kernel) if isinstance(kernel, str | Path) else kernel
    k = np.squeeze(np.asarray(k, dtype=np.float64))
    if k.ndim != 2 or not np.isfinite(k).all() or k.sum() <= 0 or (k < 0).any():
        raise ValueError(
            f"Blur kernel of shape {np.shape(kernel)} is not a 2-D non-negative finite array "
            "with a positive sum; check the dataset's kernel files."
        )
    return k / k.sum()


def _to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Baselines take H x W x 3 uint8 RGB images, got {image.dtype} {image.shape}."
        )
    return image.astype(np.float64) / 255.0


def _deconvolve(image: np.ndarray, kernel: Kernel, method: str, pad_mode: str, **kw) -> np.ndarray:
    """Pad by the kernel size, ``skimage.restoration.<method>`` on each channel, crop back."""
    if kernel is None:
        raise MissingKernelError(
            f"baseline={method} needs the true blur kernel, but this image has no known kernel: "
            "use data that saved its kernels (e.g. data=embedded), or on real blur (GoPro, "
            "RealBlur, HIDE, folder) baseline=identity or a trained model."
        )
    k, x = load_kernel(kernel), _to_float(image)
    (h, w), (py, px) = x.shape[:2], k.shape
    padded = np.pad(x, ((py, py), (px, px), (0, 0)), mode=pad_mode)
    run = getattr(restoration, method)
    out = np.stack([run(padded[:, :, c], k, clip=False, **kw) for c in range(3)], axis=2)
    return np.clip(np.rint(out[py : py + h, px : px + w] * 255.0), 0, 255).astype(np.uint8)


def identity(image: np.ndarray, kernel: Kernel = None) -> np.ndarray:
    """The blurred input unchanged (a copy)."""
    _to_float(image)
    return image.copy()


def wiener(image: np.ndarray, kernel: Kernel, balance: float = 0.005, pad_mode: str = "edge"):
    """Wiener-Hunt deconvolution with the true kernel and regularisation ``balance``."""
    return _deconvolve(image, kernel, "wiener", pad_mode, balance=balance)


def richardson_lucy(image: np.ndarray, kernel: Kernel, num_iter: int = 30, pad_mode: str = "edge"):
    """Richardson-Lucy deconvolution with the true kernel."""
    return _deconvolve(image, kernel, "richardson_lucy", pad_mode, num_iter=num_iter)
