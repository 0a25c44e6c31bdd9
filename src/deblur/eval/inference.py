"""Generators on images of any size: mirror padding to the stride (index arithmetic: exports stay
dynamic), whole or in cross-faded tiles sharing one set of norm statistics (no seams); devices."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.data.io import to_tensor, to_uint8

STRIDE = 32  # FPN generators downsample by 32; padding to it is harmless for the others


def _reflect_index(n, size, device: torch.device) -> Tensor:
    """Indices of a periodic ``reflect`` extension of 0..size-1 to length n (tensor ops only)."""
    last = torch.arange(size, device=device)[-1:]  # size - 1, as a tensor
    period = torch.clamp(2 * last, min=1)
    j = torch.remainder(torch.arange(n, device=device), period)
    return torch.minimum(torch.minimum(j, period - j), last)


def pad_to_multiple(
    x: Tensor, multiple: int = STRIDE, min_size: int = 0
) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad bottom/right to a multiple, at least ``min_size``; also the original ``(H, W)``."""
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


class PadCrop(nn.Module):
    """Wraps a generator so it takes any ``H x W``: pad to its stride (attribute ``multiple``, else
    32) and at least its ``min_padded`` / ``min_size``, run, crop (exportable)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.multiple = net, int(getattr(net, "multiple", None) or STRIDE)
        low = getattr(net, "min_padded", None) or getattr(net, "min_size", None)
        self.min_size = int(low or self.multiple)

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, self.multiple, self.min_size)
        return crop_to(self.net(padded), size)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a clear error when CUDA is asked but absent."""
    auto = device is None or str(device) == "auto"
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if auto else device)
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
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


@torch.inference_mode()
def _run(model: nn.Module, x: Tensor, device: torch.device, bf16: bool) -> Tensor:
    """Generator on one ``1 x 3 x h x w`` tensor (padded and cropped back), output on the CPU."""
    on = bf16 and device.type in ("cuda", "cpu")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on):
        out = PadCrop(model)(x.to(device, non_blocking=True))
    return out.float().clamp(-1, 1).cpu()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    starts = list(range(0, max(length - tile, 0) + 1, tile - overlap))
    return starts + [length - tile] if starts[-1] + tile < length else starts


def blend_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> Tensor:
    """1-D tile weights: 1 inside; at an inner edge ``overlap // 4`` pixels of 0 (they see the
    padding), then a linear ramp, so two neighbours overlapping by ``overlap`` sum to 1."""
    w = torch.ones(n, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    up = (torch.arange(n, dtype=torch.float32) - margin + 0.5) / max(overlap - 2 * margin, 1)
    w = torch.minimum(w, up.clamp(0, 1)) if ramp_start else w
    return torch.minimum(w, up.clamp(0, 1).flip(0)) if ramp_end else w


@contextlib.contextmanager
def shared_norm_stats(model: nn.Module, x: Tensor | None, device: torch.device, bf16: bool = False):
    """While open, ``model``'s group and instance norms without running statistics use those of one
    pass over ``x`` (the image downscaled), so tiles normalise like the whole; ``x=None``: own."""
    norms = (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)  # GroupNorm: no running_mean
    layers = [
        m
        for m in (model.modules() if x is not None else [])
        if isinstance(m, norms) and (m.training or getattr(m, "running_mean", None) is None)
    ]
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def measure(m: nn.Module, inputs: tuple[Tensor], _) -> None:  # per group, of image 0
        groups = int(m.num_groups if isinstance(m, nn.GroupNorm) else m.num_features)
        var, mean = torch.var_mean(inputs[0][:1].float().reshape(groups, -1), 1, unbiased=False)
        stats[m] = mean, var

    def apply(m: nn.Module, inputs: tuple[Tensor], _) -> Tensor:
        k = inputs[0].shape[1] // stats[m][0].numel()  # channels per group
        mean, var = (s.repeat_interleave(k) for s in stats[m])
        out = F.batch_norm(inputs[0].float(), mean, var, m.weight, m.bias, eps=m.eps)
        return out.to(inputs[0].dtype)

    hooks = [m.register_forward_hook(measure) for m in layers]
    try:
        if layers:
            _run(model, x, device, bf16)
        for h in hooks:
            h.remove()
        hooks = [m.register_forward_hook(apply) for m in layers]
        yield
    finally:
        for h in hooks:
            h.remove()


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
            part = part[:, :, y - ya : y - ya + th, x0 - xa : x0 - xa + tw]
            acc[:, :, y : y + th, x0 : x0 + tw] += part * wt
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
    """Deblur a ``(1 x) 3 x H x W`` [-1, 1] tensor onto the CPU, whole or in tiles (norms: of the
    image at ``stats_size``); ``context``: a margin per tile, an FPN sees ~250 px (RESULTS.md)."""
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
        scale = max(stats_size, 1) / max(x.shape[-2:])  # the image downscaled for the statistics
        size = [max(1, round(n * scale)) for n in x.shape[-2:]]
        whole = x if scale >= 1 else F.interpolate(x, size=size, mode="area")
        with shared_norm_stats(model, whole if shared_stats else None, dev, bf16):
            out = _tiled(model, x, tile, overlap, dev, bf16, context)
    return out[0] if squeeze else out


def deblur_image(model: nn.Module, rgb_uint8: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
    """Deblur one ``H x W x 3`` uint8 RGB image; the options of :func:`deblur_tensor`."""
    if rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ValueError(f"deblur_image expects an H x W x 3 RGB image, got {rgb_uint8.shape}.")
    return to_uint8(deblur_tensor(model, to_tensor(rgb_uint8), *args, **kwargs))
