"""DeblurGAN (v1) ResNet generator: 9 residual blocks, dropout and a global skip (Kupyn 2017)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.layers import ReflectionPad, check_images, has_shift, keep_layout, norm_layer

log = logging.getLogger(__name__)


class ResBlock(nn.Module):
    """Reflect-pad 3x3 conv, norm, ReLU, dropout, reflect-pad 3x3 conv, norm; plus the input."""

    def __init__(self, dim: int, norm: str, dropout: float, bias: bool) -> None:
        super().__init__()
        layers = [ReflectionPad(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        layers += [nn.ReLU(inplace=True), *([nn.Dropout(dropout)] if dropout > 0 else [])]
        layers += [ReflectionPad(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResNetGenerator(nn.Module):
    """DeblurGAN v1 generator: 7x7 conv, two stride-2 convs, ``n_blocks`` ResBlocks, two
    transposed convs, 7x7 conv, tanh, global skip ``clamp(tanh(out) + x, -1, 1)``; any size."""

    multiple = 4
    min_size = 8

    def __init__(
        self,
        n_blocks: int = 9,
        ngf: int = 64,
        dropout: float = 0.5,
        norm: str = "instance",
        pretrained: bool = False,
        weights_path: str | None = None,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        if pretrained or weights_path:
            log.info(
                "%s has no ImageNet weights: pretrained/weights_path ignored.", type(self).__name__
            )
        bias = not has_shift(norm)  # a norm with a learned shift makes the conv bias redundant
        layers = [ReflectionPad(3), nn.Conv2d(3, ngf, 7, bias=bias), norm_layer(norm, ngf)]
        layers.append(nn.ReLU(inplace=True))
        for mult in (1, 2):
            down = nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias)
            layers += [down, norm_layer(norm, ngf * mult * 2), nn.ReLU(inplace=True)]
        layers += [ResBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for mult in (4, 2):
            up = nn.ConvTranspose2d(
                ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
            )
            layers += [up, norm_layer(norm, ngf * mult // 2), nn.ReLU(inplace=True)]
        layers += [ReflectionPad(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        if identity_init:  # zero residual at start: G(x) = x (off by default, as published)
            nn.init.zeros_(layers[-2].weight)
            nn.init.zeros_(layers[-2].bias)

    def set_encoder_frozen(self, frozen: bool) -> None:
        """No-op: the ResNet generator has no pretrained encoder to freeze (logged)."""
        log.info("%s has no pretrained encoder to freeze (%s).", type(self).__name__, frozen)

    def residual(self, padded: Tensor) -> Tensor:
        """What is added to the (padded) input: ``tanh`` of the network's output."""
        return self.model(padded)

    def forward(self, x: Tensor) -> Tensor:
        """Deblur ``x`` (B x 3 x H x W in [-1, 1]); output has the same shape and range."""
        check_images(x, self.min_size, type(self).__name__)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        padded = keep_layout(F.pad(x, (0, pw, 0, ph), mode="reflect"), x) if ph or pw else x
        out = torch.clamp(self.residual(padded) + padded, -1.0, 1.0)
        return out[..., :h, :w]
