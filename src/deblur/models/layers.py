"""What every network shares: norm layers by name (``gen.norm``, ``backbone.norm``), layers keeping
a channels_last input channels_last (``nn.InstanceNorm2d`` returns NCHW), the input batch check."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from deblur.errors import UserError


def keep_layout(out: Tensor, like: Tensor) -> Tensor:
    """``out`` channels_last when ``like`` is (a no-op for NCHW and for what already is)."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm as in DeblurGAN: no affine, no running statistics (train and eval normalise
    alike); keeps the input's memory layout."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        return keep_layout(super().forward(x), x)


class ReflectionPad(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that keeps the input's memory layout (CUDA's returns NCHW)."""

    def forward(self, x: Tensor) -> Tensor:
        return keep_layout(super().forward(x), x)


#: norm name -> layer class, called with the channel count
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": InstanceNorm,
    "batch": nn.BatchNorm2d,  # keeps the layout itself
    "none": lambda channels: nn.Identity(),  # no statistics: crops and full frames behave alike
}


class NormError(UserError, ValueError):
    """A norm name that is not one of :data:`NORMS`."""


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The norm layer named ``norm`` for ``channels`` channels."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise NormError(
            f"Unknown norm {norm!r} (config key gen.norm or backbone.norm): it must be one of "
            f"{', '.join(sorted(NORMS))}. Fix: e.g. gen.norm=instance."
        )
    return NORMS[norm](channels)


def has_shift(norm: str) -> bool:
    """Whether the norm layer learns a shift (then the conv before it needs no bias)."""
    return any(True for _ in norm_layer(norm, 1).parameters())


def check_images(x: Tensor, min_size: int, what: str) -> None:
    """Raise a ValueError unless ``x`` is a B x 3 x H x W batch with sides >= ``min_size``."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        raise ValueError(f"{what} expects a B x 3 x H x W batch; got {tuple(x.shape)}.")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{what} got a {x.shape[-2]}x{x.shape[-1]} image; the smallest side must be >= "
            f"{min_size} px (its deepest feature map would otherwise be 1x1 or empty). Upscale "
            "or pad the image, or use larger crops."
        )
