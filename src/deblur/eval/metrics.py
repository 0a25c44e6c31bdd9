"""Pinned metrics of [-1, 1] RGB ``B x 3 x H x W``, a float64 per image on uint8 levels (peak 255):
PSNR, SSIM (= skimage's, Gaussian sigma 1.5, population covariance), 3-D SSIM, sharpness ratios."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATA_RANGE = 255.0
K1, K2 = 0.01, 0.03
SSIM_WIN, SSIM_SIGMA = 11, 1.5
_WINDOW = torch.from_numpy(cv2.getGaussianKernel(SSIM_WIN, SSIM_SIGMA)).flatten()  # float64
_CENTRE = 128.0  # moments of images centred here keep float32 cancellation below ~1e-5 of SSIM


def _batched(*images: Tensor) -> tuple[Tensor, ...]:
    """``B x C x H x W`` views of ``pred, target`` (or one image), checked to have one shape."""
    images = tuple(x.unsqueeze(0) if x.ndim == 3 else x for x in images)
    if any(x.ndim != 4 for x in images) or len({x.shape for x in images}) > 1:
        raise ValueError(
            "metrics: expected B x C x H x W (or C x H x W) tensors in [-1, 1] of one shape, got "
            f"{[tuple(x.shape) for x in images]} (a wrong rank, or shapes differ); crop or resize "
            "them to the same size first."
        )
    return images


def to_levels(x: Tensor, quantize: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    """Map a [-1, 1] tensor to [0, 255] (float64, float32 on MPS), rounded to uint8 levels."""
    dtype = dtype or (torch.float32 if x.device.type == "mps" else torch.float64)
    y = (x.detach().to(dtype) + 1.0) * 127.5
    return (torch.round(y) if quantize else y).clamp(0.0, DATA_RANGE)


def psnr(pred: Tensor, target: Tensor, quantize: bool = True, max_db: float = 100.0) -> Tensor:
    """Per-image PSNR in dB (RGB, peak 255, uint8 levels); ``Tensor[B]``."""
    pred, target = _batched(pred, target)
    mse = ((to_levels(pred, quantize) - to_levels(target, quantize)) ** 2).flatten(1).mean(dim=1)
    floor = DATA_RANGE**2 / 10.0 ** (max_db / 10.0)
    return (10.0 * torch.log10(DATA_RANGE**2 / mse.clamp_min(floor))).clamp(max=max_db)


def _moments(pred: Tensor, target: Tensor, quantize: bool) -> Tensor:
    """``[x, y, x^2, y^2, xy]`` of the centred float32 levels, stacked on the channel axis."""
    x = to_levels(pred, quantize, torch.float32) - _CENTRE
    y = to_levels(target, quantize, torch.float32) - _CENTRE
    return torch.cat([x, y, x * x, y * y, x * y], dim=1)


def _ssim_from_moments(m: Tensor, c: int) -> Tensor:
    """SSIM map from the filtered moments ``[x, y, x^2, y^2, xy]`` (each ``c`` channels)."""
    mx, my, xx, yy, xy = (m[:, i * c : (i + 1) * c] for i in range(5))
    vx, vy, cxy = xx - mx**2, yy - my**2, xy - mx * my
    mx, my = mx + _CENTRE, my + _CENTRE
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def _gaussian_filter(z: Tensor, valid: bool, use_cv2: bool | None = None) -> Tensor:
    """Separable 11-tap Gaussian on every map of ``z`` (B x n x H x W), float32; ``valid``: only
    where the window fits, else replicate borders. On CPU OpenCV's (several times faster)."""
    r = (SSIM_WIN - 1) // 2
    if use_cv2 if use_cv2 is not None else z.device.type == "cpu":
        g = _WINDOW.float().numpy()
        arr = z.float().contiguous().numpy()
        out = np.empty_like(arr)
        for i, j in np.ndindex(*arr.shape[:2]):
            cv2.sepFilter2D(
                arr[i, j], cv2.CV_32F, g, g, dst=out[i, j], borderType=cv2.BORDER_REPLICATE
            )
        res = torch.from_numpy(out)
        return res[:, :, r:-r, r:-r] if valid else res
    n = z.shape[1]
    g = _WINDOW.to(z.device, torch.float32)
    z = z.float() if valid else F.pad(z.float(), (r, r, r, r), mode="replicate")
    z = F.conv2d(z, g.view(1, 1, SSIM_WIN, 1).repeat(n, 1, 1, 1), groups=n)
    return F.conv2d(z, g.view(1, 1, 1, SSIM_WIN).repeat(n, 1, 1, 1), groups=n)


def ssim(pred: Tensor, target: Tensor, quantize: bool = True) -> Tensor:
    """Per-image SSIM (Gaussian 11x11, sigma 1.5, per channel; = skimage's); ``Tensor[B]``."""
    pred, target = _batched(pred, target)
    h, w = pred.shape[-2:]
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(
            f"metrics.ssim: images of {h}x{w} pixels are smaller than the {SSIM_WIN}x{SSIM_WIN} "
            "SSIM window (as in scikit-image); evaluate on images at least 11 pixels high and wide."
        )
    z = _gaussian_filter(_moments(pred, target, quantize), True)
    return _ssim_from_moments(z, pred.shape[1]).double().flatten(2).mean(dim=2).mean(dim=1)


def ssim_matlab3d(pred: Tensor, target: Tensor, quantize: bool = True) -> Tensor:
    """Per-image MATLAB-style 3-D SSIM (11x11x11 Gaussian over H, W, RGB; replicate)."""
    pred, target = _batched(pred, target)
    b, c, h, w = pred.shape
    z = _gaussian_filter(_moments(pred, target, quantize), False)
    g = _WINDOW.to(z)
    mix = torch.zeros(c, c, dtype=z.dtype, device=z.device)  # the Gaussian along the channels,
    for ch, t in np.ndindex(c, SSIM_WIN):  # replicate-padded: mix[ch, k] weighs channel k
        mix[ch, min(max(ch + t - SSIM_WIN // 2, 0), c - 1)] += g[t]
    z = torch.einsum("ck,bmkhw->bmchw", mix, z.reshape(b, 5, c, h, w)).reshape(b, 5 * c, h, w)
    return _ssim_from_moments(z, c).double().flatten(1).mean(dim=1)


def image_metrics(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """All three metrics at once: ``{"psnr", "ssim", "ssim_matlab3d"}`` each ``Tensor[B]``."""
    return {f.__name__: f(pred, target) for f in (psnr, ssim, ssim_matlab3d)}


def _luminance(x: Tensor) -> Tensor:
    (x,) = _batched(x)
    return x.to(torch.float32 if x.device.type == "mps" else torch.float64).mean(dim=1)


def gradient_energy(x: Tensor) -> Tensor:
    """Mean squared forward difference (horizontal + vertical) of the luminance, per image."""
    y = _luminance(x)
    dx = (y[:, :, 1:] - y[:, :, :-1]) ** 2
    dy = (y[:, 1:, :] - y[:, :-1, :]) ** 2
    return (dx.flatten(1).mean(1) + dy.flatten(1).mean(1)).double()


def high_band_power(x: Tensor, lo: float = 0.25, hi: float = 0.5) -> Tensor:
    """Mean DFT power of the Hann-windowed luminance in the band ``lo <= |f| < hi`` cycles/px."""
    y = _luminance(x)
    h, w = y.shape[-2:]
    kw = {"dtype": y.dtype, "device": y.device}
    win = torch.outer(*(torch.hann_window(n, periodic=False, **kw) for n in (h, w)))
    power = torch.fft.rfft2((y - y.mean(dim=(1, 2), keepdim=True)) * win).abs() ** 2
    fy, fx = torch.fft.fftfreq(h, **kw)[:, None], torch.fft.rfftfreq(w, **kw)[None, :]
    radius = torch.sqrt(fy**2 + fx**2)
    band = (radius >= lo) & (radius < hi)
    return (power[:, band].mean(dim=1) / (h * w)).double()


def sharpness_ratios(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """``{"grad_energy", "high_band"}``: pred's over target's, per image."""
    pred, target = _batched(pred, target)
    return {
        "grad_energy": gradient_energy(pred) / gradient_energy(target).clamp_min(1e-20),
        "high_band": high_band_power(pred) / high_band_power(target).clamp_min(1e-20),
    }
