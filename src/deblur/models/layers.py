"""The norm layers of every network, by the name a user types (``gen.norm``, ``backbone.norm``),
and layers that keep a channels_last input channels_last (``nn.InstanceNorm2d`` returns NCHW)."""

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
        """Normalise each channel of each image."""
        return keep_layout(super().forward(x), x)


class ReflectionPad(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that keeps the input's memory layout (CUDA's returns NCHW)."""

    def forward(self, x: Tensor) -> Tensor:
        """Mirror-pad ``x``."""
        return keep_layout(super().forward(x), x)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


#: norm name -> layer class, called with the channel count
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": InstanceNorm,
    "batch": nn.BatchNorm2d,  # keeps the layout itself
    "none": _no_norm,  # no statistics: crops and full frames behave alike
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
