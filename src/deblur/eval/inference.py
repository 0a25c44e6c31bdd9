"""Run trained networks on images of any size (loading them is :mod:`deblur.models.load`).

- :func:`pad_to_multiple` / :func:`crop_to` / :class:`PadCrop` make any image fit the network's
  stride: mirror (reflect) padding, repeated periodically when the image is smaller than the pad
  (so a 7x5 image works), done with index arithmetic on tensor sizes so traced / ONNX exports
  stay dynamic.
- :func:`deblur_tensor` / :func:`deblur_image` run a generator on one image, whole or in
  overlapping tiles blended with linear cross-fades (memory bounded by the tile size), on CPU or
  GPU, bf16 optional. Tiles share one set of normalisation statistics (instance / group norm),
  measured on a downscaled copy of the whole image, so tiled output matches whole-image output
  instead of each tile normalising itself (seams, colour shifts).
- :func:`resolve_device` / :func:`device_name`: ``device=auto|cpu|cuda`` and what a figure was
  measured on.
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.data.io import to_tensor, to_uint8

STRIDE = 32  # FPN generators downsample by 32; padding to it is harmless for the others
Stats = dict[nn.Module, tuple[Tensor, Tensor]]


def _reflect_index(n, size, device: torch.device) -> Tensor:
    """Indices 0..size-1 of a periodic mirror extension (``reflect``, repeated) of length n,
    from ``arange`` and tensor arithmetic only (traced and exported sizes stay dynamic)."""
    i = torch.arange(n, device=device)
    last = torch.arange(size, device=device)[-1:]  # size - 1, as a tensor
    period = torch.clamp(2 * last, min=1)
    j = torch.remainder(i, period)
    return torch.minimum(torch.minimum(j, period - j), last)


def pad_to_multiple(
    x: Tensor, multiple: int = STRIDE, min_size: int = 0
) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad ``x`` (``... x H x W``) at the bottom/right to a multiple of ``multiple`` and
    to at least ``min_size``, for any size (the mirror repeats); returns the padded tensor and
    the original ``(H, W)`` for :func:`crop_to`."""
    h, w = x.shape[-2], x.shape[-1]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    if min_size > 0:  # max() of an int, a traced size (tensor) or an exported size (SymInt)
        at_least = torch.clamp if isinstance(hp, Tensor) else torch.sym_max
        hp, wp = at_least(hp, min_size), at_least(wp, min_size)
    x = torch.index_select(x, -2, _reflect_index(hp, h, x.device))
    return torch.index_select(x, -1, _reflect_index(wp, w, x.device)), (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``H x W``."""
    return x[..., : size[0], : size[1]]


def _fit(model: nn.Module) -> tuple[int, int]:
    """(size multiple, smallest padded side) a generator wants: its ``multiple`` and
    ``min_padded`` / ``min_size`` attributes, 32 when it has none."""
    multiple = int(getattr(model, "multiple", None) or STRIDE)
    low = getattr(model, "min_padded", None) or getattr(model, "min_size", None)
    return multiple, int(low or multiple)


class PadCrop(nn.Module):
    """Wraps a generator so it takes any ``H x W``: pad to the stride, run, crop (exportable)."""

    def __init__(self, net: nn.Module, multiple: int | None = None) -> None:
        super().__init__()
        self.net = net
        own, self.min_size = _fit(net)
        self.multiple = int(multiple or own)

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, self.multiple, self.min_size)
        return crop_to(self.net(padded), size)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a clear error when CUDA is asked but absent."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device} was asked for but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}). Use device=cpu or device=auto."
        )
    return dev


def device_name(device: str | torch.device) -> str:
    """What a figure was measured on: the GPU's name, or the CPU model (``/proc/cpuinfo``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@torch.inference_mode()
def _run(model: nn.Module, x: Tensor, device: torch.device, bf16: bool) -> Tensor:
    """Generator on one ``1 x 3 x h x w`` [-1, 1] tensor (padded, then cropped), on the CPU."""
    padded, size = pad_to_multiple(x.to(device, non_blocking=True), *_fit(model))
    on = bf16 and device.type in ("cuda", "cpu")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on):
        out = model(padded)
    return crop_to(out, size).float().clamp(-1, 1).cpu()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile - overlap))
    return starts + [length - tile] if starts[-1] + tile < length else starts


def blend_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> Tensor:
    """1-D tile weights: 1 inside, a linear cross-fade over ``overlap`` pixels at inner edges.

    The first ``overlap // 4`` pixels at an inner edge get weight 0 (they see the padding, not the
    neighbouring image), the next ``overlap - 2 * (overlap // 4)`` pixels ramp up; two neighbours
    overlapping by exactly ``overlap`` sum to 1. Image borders (no neighbour) keep weight 1.
    """
    w = torch.ones(n, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    up = (torch.arange(n, dtype=torch.float32) - margin + 0.5) / max(overlap - 2 * margin, 1)
    w = torch.minimum(w, up.clamp(0, 1)) if ramp_start else w
    return torch.minimum(w, up.clamp(0, 1).flip(0)) if ramp_end else w


# --------------------------------------------------------------------------- shared norm stats


def _input_stat_norms(model: nn.Module) -> list[nn.Module]:
    """Layers normalising with their own input's statistics: instance norm without running
    statistics (or training) and group norm (layer norm as ``GroupNorm(1, C)``)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.GroupNorm)
        or (
            isinstance(m, nn.modules.instancenorm._InstanceNorm)
            and (m.training or m.running_mean is None)
        )
    ]


def _stats(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group (instance norm: per-channel) mean and biased variance of image 0 of ``x``."""
    groups = m.num_groups if isinstance(m, nn.GroupNorm) else m.num_features
    var, mean = torch.var_mean(x[:1].float().reshape(int(groups), -1), dim=1, unbiased=False)
    return mean, var


def _apply_stats(m: nn.Module, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``m`` applied to ``x`` with the given per-group statistics instead of ``x``'s own."""
    k = x.shape[1] // mean.numel()  # channels per group
    mean, var = mean.repeat_interleave(k), var.repeat_interleave(k)
    return F.batch_norm(x.float(), mean, var, m.weight, m.bias, eps=m.eps).to(x.dtype)


@contextmanager
def shared_norm_stats(model: nn.Module, x: Tensor | None, device: torch.device, bf16: bool = False):
    """Context manager: the layers of ``model`` that normalise with their input's statistics use,
    while it is open, those they saw in one pass over ``x`` (so tiles of one image are all
    normalised like the whole image, ``x`` being its downscaled copy); ``x=None``: their own."""
    stats: Stats = {}
    layers = _input_stat_norms(model) if x is not None else []
    hooks = [
        m.register_forward_hook(lambda m, i, _: stats.update({m: _stats(m, i[0])})) for m in layers
    ]
    try:
        if layers:
            _run(model, x, device, bf16)
        for h in hooks:
            h.remove()
        hooks = [
            m.register_forward_hook(lambda m, i, _: _apply_stats(m, i[0], *stats[m]))
            for m in layers
        ]
        yield
    finally:
        for h in hooks:
            h.remove()


def _downscaled(x: Tensor, long_side: int) -> Tensor:
    """``x`` resized (area average) so its long side is at most ``long_side``."""
    h, w = x.shape[-2:]
    scale = long_side / max(h, w)
    if scale >= 1:
        return x
    return F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


def _tiled(model, x: Tensor, tile: int, overlap: int, dev, bf16: bool, context: int) -> Tensor:
    """Tiles of ``x`` run with a ``context`` margin, cropped and cross-faded together."""
    _, _, h, w = x.shape
    acc, weight = torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w)
    th, tw = min(tile, h), min(tile, w)
    for y in tile_starts(h, tile, overlap):
        wy = blend_ramp(th, overlap, y > 0, y + th < h)
        for x0 in tile_starts(w, tile, overlap):
            wt = wy[:, None] * blend_ramp(tw, overlap, x0 > 0, x0 + tw < w)[None, :]
            ya, xa = max(0, y - context), max(0, x0 - context)
            part = _run(model, x[:, :, ya : y + th + context, xa : x0 + tw + context], dev, bf16)
            acc[:, :, y : y + th, x0 : x0 + tw] += (
                part[:, :, y - ya : y - ya + th, x0 - xa : x0 - xa + tw] * wt
            )
            weight[:, :, y : y + th, x0 : x0 + tw] += wt
    return acc / weight.clamp_min(1e-8)


def deblur_tensor(
    model: nn.Module,
    x: Tensor,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
    shared_stats: bool = True,
    stats_size: int = 512,
    context: int = 0,
) -> Tensor:
    """Deblur a ``1 x 3 x H x W`` (or ``3 x H x W``) [-1, 1] tensor; output on CPU, same shape.

    Tiled (``tile`` set and smaller than the image), tiles overlap by ``overlap`` pixels and are
    cross-faded. Layers that normalise with their input's statistics (instance / group norm) use,
    with ``shared_stats`` (default), one set for all tiles, measured first on a copy of the whole
    image downscaled to a long side of ``stats_size`` (a small extra pass); ``shared_stats=False``
    lets each tile normalise itself (visible seams and colour shifts between tiles). ``context``
    > 0: each tile is run on a window ``context`` pixels larger on every side (within the
    image) and only the tile is kept, for networks whose output depends on far content (an FPN's
    stride-32 features reach ~250 px: benchmarks/RESULTS.md), at the cost of the larger windows.
    """
    squeeze = x.ndim == 3
    x = x.unsqueeze(0) if squeeze else x
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"deblur_tensor expects one image 1x3xHxW, got {tuple(x.shape)}.")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if tile is None or tile <= 0 or max(x.shape[-2:]) <= tile:
        out = _run(model, x, dev, bf16)
    elif tile < 2 * overlap:
        raise ValueError(
            f"tile={tile} is too small for overlap={overlap}: a tile must be at least twice the "
            "overlap so its cross-fades do not meet. Raise tile= or lower overlap=."
        )
    else:
        whole = _downscaled(x, max(stats_size, 1)) if shared_stats else None
        with shared_norm_stats(model, whole, dev, bf16):
            out = _tiled(model, x, tile, overlap, dev, bf16, context)
    return out[0] if squeeze else out


def deblur_image(
    model: nn.Module,
    rgb_uint8: np.ndarray,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
    context: int = 0,
) -> np.ndarray:
    """Deblur one ``H x W x 3`` uint8 RGB image (any size); returns the same shape and dtype
    (tiling: :func:`deblur_tensor`)."""
    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ValueError(f"deblur_image expects an H x W x 3 RGB image, got {rgb_uint8.shape}.")
    return to_uint8(
        deblur_tensor(model, to_tensor(rgb_uint8), tile, overlap, device, bf16, context=context)
    )
