"""Run trained networks on images of any size (loading them is :mod:`deblur.checkpoints`).

- :func:`pad_to_multiple` / :func:`crop_to` make any image fit the network's stride: mirror
  (reflect) padding, repeated periodically when the image is smaller than the pad (so a 7x5 image
  works), done with index arithmetic on tensor sizes so traced / ONNX exports stay dynamic.
- :func:`deblur_image` runs a generator on one uint8 RGB image, whole or in overlapping tiles
  blended with linear cross-fades (memory bounded by the tile size), on CPU or GPU, bf16 optional.
- :func:`record_norm_stats` / :func:`frozen_norm_stats`: tiles share one set of normalisation
  statistics (instance / group norm), measured on a downscaled copy of the whole image, so tiled
  output matches whole-image output instead of each tile normalising itself (seams, colour shifts).
- :func:`resolve_device` / :func:`device_name`: ``device=auto|cpu|cuda`` and what a figure was
  measured on.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.data.io import to_tensor, to_uint8

__all__ = [
    "pad_to_multiple",
    "crop_to",
    "PadCrop",
    "resolve_device",
    "deblur_tensor",
    "deblur_image",
    "tile_starts",
    "blend_ramp",
    "input_stat_norms",
    "record_norm_stats",
    "frozen_norm_stats",
]

STRIDE = 32  # FPN generators downsample by 32; padding to it is harmless for the others


# --------------------------------------------------------------------------- padding


def _reflect_index(n, size, device: torch.device) -> Tensor:
    """Indices 0..size-1 of a periodic mirror extension (``reflect``, repeated) of length n.

    Sizes enter only through ``arange`` and tensor arithmetic, so traced (TorchScript) and
    exported (ONNX) graphs keep height and width dynamic.
    """
    i = torch.arange(n, device=device)
    last = torch.arange(size, device=device)[-1:]  # size - 1, as a tensor
    period = torch.clamp(2 * last, min=1)
    j = torch.remainder(i, period)
    return torch.minimum(torch.minimum(j, period - j), last)


def _at_least(n, low: int):
    """``max(n, low)`` for a Python int, a traced size (tensor) or an exported size (SymInt)."""
    if isinstance(n, Tensor):
        return torch.clamp(n, min=low)
    return torch.sym_max(n, low)


def pad_to_multiple(
    x: Tensor, multiple: int = STRIDE, min_size: int = 0
) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad ``x`` (``... x H x W``) at the bottom/right to a multiple of ``multiple``
    (and to at least ``min_size``).

    Works for any size, also smaller than the pad (the mirror repeats, like reflect padding
    applied in steps). Returns the padded tensor and the original ``(H, W)`` for :func:`crop_to`.
    """
    h, w = x.shape[-2], x.shape[-1]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    if min_size > 0:
        hp, wp = _at_least(hp, min_size), _at_least(wp, min_size)
    x = torch.index_select(x, -2, _reflect_index(hp, h, x.device))
    x = torch.index_select(x, -1, _reflect_index(wp, w, x.device))
    return x, (h, w)


def model_multiple(model: nn.Module) -> int:
    """The size multiple a generator wants (its ``multiple`` attribute; 32 when it has none)."""
    return int(getattr(model, "multiple", None) or STRIDE)


def model_min_size(model: nn.Module) -> int:
    """The smallest padded side a generator accepts (``min_padded`` / ``min_size`` attributes)."""
    value = getattr(model, "min_padded", None) or getattr(model, "min_size", None)
    return int(value or model_multiple(model))


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``H x W``."""
    return x[..., : size[0], : size[1]]


class PadCrop(nn.Module):
    """Wraps a generator so it takes any ``H x W``: pad to the stride, run, crop (exportable)."""

    def __init__(self, net: nn.Module, multiple: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple or model_multiple(net))
        self.min_size = model_min_size(net)

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, self.multiple, self.min_size)
        return crop_to(self.net(padded), size)


# --------------------------------------------------------------------------- running


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


def _autocast(device: torch.device, bf16: bool):
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


@torch.inference_mode()
def _run(model: nn.Module, x: Tensor, device: torch.device, bf16: bool) -> Tensor:
    """Generator on one padded-then-cropped ``1 x 3 x h x w`` [-1, 1] tensor, returned on CPU."""
    x = x.to(device, non_blocking=True)
    padded, size = pad_to_multiple(x, model_multiple(model), model_min_size(model))
    with _autocast(device, bf16):
        out = model(padded)
    return crop_to(out, size).float().clamp(-1, 1).cpu()


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


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
    span = max(overlap - 2 * margin, 1)
    d = torch.arange(n, dtype=torch.float32)
    up = ((d - margin + 0.5) / span).clamp(0, 1)
    if ramp_start:
        w = torch.minimum(w, up)
    if ramp_end:
        w = torch.minimum(w, up.flip(0))
    return w


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int, Tensor]]:
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y in ys:
        th = min(tile, h)
        wy = blend_ramp(th, overlap, y > 0, y + th < h)
        for x in xs:
            tw = min(tile, w)
            wx = blend_ramp(tw, overlap, x > 0, x + tw < w)
            yield y, x, th, tw, wy[:, None] * wx[None, :]


# --------------------------------------------------------------------------- shared norm stats


def input_stat_norms(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` whose output depends on statistics of their own input: instance
    norm without running statistics (or in training mode) and group norm (incl. layer norm over
    channels as ``GroupNorm(1, C)``). Batch norm in eval mode uses fixed statistics: not listed."""
    found: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, nn.modules.instancenorm._InstanceNorm):
            if m.training or m.running_mean is None:
                found.append(m)
        elif isinstance(m, nn.GroupNorm):
            found.append(m)
    return found


def _groups(m: nn.Module) -> int:
    return int(m.num_groups) if isinstance(m, nn.GroupNorm) else int(m.num_features)


def _stats(m: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group (instance norm: per-channel) mean and biased variance of image 0 of ``x``."""
    g = x[:1].float().reshape(_groups(m), -1)
    var, mean = torch.var_mean(g, dim=1, unbiased=False)
    return mean, var


def _apply_stats(m: nn.Module, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``m`` applied to ``x`` with the given per-group statistics instead of ``x``'s own."""
    n, c = x.shape[:2]
    groups = mean.numel()
    xf = x.float().reshape(n, groups, c // groups, -1)
    scale = torch.rsqrt(var + m.eps)[None, :, None, None]
    y = ((xf - mean[None, :, None, None]) * scale).reshape(x.shape)
    if getattr(m, "weight", None) is not None:
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * m.weight.float().reshape(shape) + m.bias.float().reshape(shape)
    return y.to(x.dtype)


@contextmanager
def _patched(layers: dict[nn.Module, object]):
    """Temporarily give each module its own ``forward`` (restored on exit, also on errors)."""
    try:
        for m, fwd in layers.items():
            m.forward = fwd
        yield
    finally:
        for m in layers:
            m.__dict__.pop("forward", None)


def record_norm_stats(
    model: nn.Module, x: Tensor, device: torch.device, bf16: bool = False
) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """Run ``model`` once on ``x`` (``1 x 3 x h x w``) and return the statistics every
    :func:`input_stat_norms` layer normalised with (``{layer: (mean, var)}``, on ``device``)."""
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def recorder(m: nn.Module):
        original = type(m).forward

        def forward(inp: Tensor) -> Tensor:
            stats[m] = _stats(m, inp)
            return original(m, inp)

        return forward

    layers = input_stat_norms(model)
    if layers:
        with _patched({m: recorder(m) for m in layers}):
            _run(model, x, device, bf16)
    return stats


def frozen_norm_stats(stats: dict[nn.Module, tuple[Tensor, Tensor]]):
    """Context manager: the layers in ``stats`` normalise with those statistics, not their
    input's (so tiles of one image are all normalised like the whole image)."""

    def fixed(m: nn.Module, mean: Tensor, var: Tensor):
        return lambda inp: _apply_stats(m, inp, mean, var)

    return _patched({m: fixed(m, *mv) for m, mv in stats.items()})


def _downscaled(x: Tensor, long_side: int) -> Tensor:
    """``x`` resized (area average) so its long side is at most ``long_side``."""
    h, w = x.shape[-2:]
    scale = long_side / max(h, w)
    if scale >= 1:
        return x
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="area")


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
    if squeeze:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"deblur_tensor expects one image 1x3xHxW, got {tuple(x.shape)}.")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    _, _, h, w = x.shape
    if tile is None or tile <= 0 or (h <= tile and w <= tile):
        out = _run(model, x, dev, bf16)
        return out[0] if squeeze else out
    if tile < 2 * overlap:
        raise ValueError(
            f"tile={tile} is too small for overlap={overlap}: a tile must be at least twice the "
            "overlap so its cross-fades do not meet. Raise tile= or lower overlap=."
        )
    stats = {}
    if shared_stats and input_stat_norms(model):
        stats = record_norm_stats(model, _downscaled(x, max(stats_size, 1)), dev, bf16)
    acc = torch.zeros(1, 3, h, w, dtype=torch.float32)
    weight = torch.zeros(1, 1, h, w, dtype=torch.float32)
    with frozen_norm_stats(stats):
        for y, x0, th, tw, wt in _tiles(h, w, tile, overlap):
            ya, xa = max(0, y - context), max(0, x0 - context)
            yb, xb = min(h, y + th + context), min(w, x0 + tw + context)
            part = _run(model, x[:, :, ya:yb, xa:xb], dev, bf16)
            part = part[:, :, y - ya : y - ya + th, x0 - xa : x0 - xa + tw]
            acc[:, :, y : y + th, x0 : x0 + tw] += part * wt
            weight[:, :, y : y + th, x0 : x0 + tw] += wt
    out = acc / weight.clamp_min(1e-8)
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
    x = to_tensor(rgb_uint8)
    out = deblur_tensor(model, x, tile, overlap, device, bf16, context=context)
    return to_uint8(out)
