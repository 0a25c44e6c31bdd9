"""Classical non-learned baselines that stand beside the GAN in the evaluate table.

- ``identity``: the blurred input itself (what the network must beat).
- ``wiener``: scikit-image's Wiener-Hunt deconvolution with the TRUE blur kernel and a
  regularisation ``balance`` (seed 001 presents Wiener filtering as the classical answer).
- ``richardson_lucy``: scikit-image's Richardson-Lucy deconvolution with the true kernel.

Deconvolution runs per RGB channel on [0, 1] floats. Before it, the image is mirror-padded by
the kernel size (``pad_mode="edge"``; numpy's pad modes) and the result is cropped back, so FFT
wrap-around does not ring at the borders (edge padding measured best: +0.2 dB over reflect,
+8 dB over no padding on 128-200 px crops). Kernels come from the data
(``Pair.kernel``: ``.npy`` or 8/16-bit PNG, normalised to sum 1); without one, ``wiener`` and
``richardson_lucy`` raise :class:`MissingKernelError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from deblur.data.io import read_kernel
from deblur.errors import UserError

__all__ = [
    "BASELINES",
    "MissingKernelError",
    "identity",
    "load_kernel",
    "richardson_lucy",
    "run_baseline",
    "wiener",
]


class MissingKernelError(UserError, ValueError):
    """A deconvolution baseline was asked for on data whose blur kernel is unknown."""


def load_kernel(kernel: np.ndarray | str | Path) -> np.ndarray:
    """A 2-D float64 kernel summing to 1, from an array or a ``.npy`` / PNG file."""
    if isinstance(kernel, (str, Path)):
        kernel = read_kernel(kernel)
    k = np.asarray(kernel, dtype=np.float64)
    k = np.squeeze(k)
    if k.ndim != 2 or not np.isfinite(k).all() or k.sum() <= 0 or (k < 0).any():
        raise ValueError(
            f"Blur kernel of shape {np.shape(kernel)} is not a 2-D non-negative finite array "
            "with a positive sum; check the dataset's kernel files."
        )
    return k / k.sum()


def _require_kernel(kernel, method: str, name: str = "") -> np.ndarray:
    if kernel is None:
        where = f" (image {name})" if name else ""
        raise MissingKernelError(
            f"baseline={method} needs the true blur kernel, but this dataset has no known "
            f"kernel{where}. Wiener and Richardson-Lucy deconvolution only work on synthetic "
            "data that saved its kernels (e.g. data=embedded); on real blur (GoPro, RealBlur, "
            "HIDE, folder) use baseline=identity or a trained model."
        )
    return load_kernel(kernel)


def _to_float(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Baselines take H x W x 3 uint8 RGB images, got {image.dtype} {image.shape}."
        )
    return image.astype(np.float64) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _per_channel_padded(
    image: np.ndarray,
    kernel: np.ndarray,
    deconvolve: Callable[[np.ndarray, np.ndarray], np.ndarray],
    pad_mode: str,
) -> np.ndarray:
    """Pad by the kernel size, deconvolve each channel, crop back (against border ringing)."""
    x = _to_float(image)
    h, w = x.shape[:2]
    py, px = kernel.shape[0], kernel.shape[1]
    padded = np.pad(x, ((py, py), (px, px), (0, 0)), mode=pad_mode)
    out = np.stack([deconvolve(padded[:, :, c], kernel) for c in range(3)], axis=2)
    return _to_uint8(out[py : py + h, px : px + w])


def identity(image: np.ndarray, kernel: np.ndarray | str | Path | None = None) -> np.ndarray:
    """The blurred input unchanged (a copy)."""
    _to_float(image)
    return image.copy()


def wiener(
    image: np.ndarray,
    kernel: np.ndarray | str | Path | None,
    balance: float = 0.005,
    pad_mode: str = "edge",
) -> np.ndarray:
    """Wiener-Hunt deconvolution (``skimage.restoration.wiener``) with the true kernel."""
    from skimage.restoration import wiener as sk_wiener

    k = _require_kernel(kernel, "wiener")

    def run(channel: np.ndarray, psf: np.ndarray) -> np.ndarray:
        return sk_wiener(channel, psf, balance=balance, clip=False)

    return _per_channel_padded(image, k, run, pad_mode)


def richardson_lucy(
    image: np.ndarray,
    kernel: np.ndarray | str | Path | None,
    num_iter: int = 30,
    pad_mode: str = "edge",
) -> np.ndarray:
    """Richardson-Lucy deconvolution (``skimage.restoration.richardson_lucy``), true kernel."""
    from skimage.restoration import richardson_lucy as sk_rl

    k = _require_kernel(kernel, "richardson_lucy")

    def run(channel: np.ndarray, psf: np.ndarray) -> np.ndarray:
        return sk_rl(channel, psf, num_iter=num_iter, clip=False)

    return _per_channel_padded(image, k, run, pad_mode)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "identity": identity,
    "wiener": wiener,
    "richardson_lucy": richardson_lucy,
}
"""Baseline name (as typed in ``baseline=``) -> function ``(image, kernel, **params)``."""


def run_baseline(
    method: str,
    image: np.ndarray,
    kernel: np.ndarray | str | Path | None = None,
    name: str = "",
    **params,
) -> np.ndarray:
    """Apply the named baseline to one uint8 RGB image (clear errors for unknown names/kernels)."""
    if method not in BASELINES:
        raise ValueError(
            f"Unknown baseline '{method}'; choose one of {', '.join(sorted(BASELINES))}."
        )
    if method != "identity" and kernel is None:
        _require_kernel(None, method, name)
    return BASELINES[method](image, kernel, **params)
