"""DeblurGAN (v1) ResNet generator: 9 residual blocks with dropout and a global skip (Kupyn 2017)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.layers import ReflectionPad, has_shift, keep_layout, norm_layer

log = logging.getLogger(__name__)


class ResBlock(nn.Module):
    """Reflect-pad 3x3 conv, norm, ReLU, dropout, reflect-pad 3x3 conv, norm; plus the input."""

    def __init__(self, dim: int, norm: str, dropout: float, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ReflectionPad(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            norm_layer(norm, dim),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [ReflectionPad(1), nn.Conv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x + block(x)``."""
        return x + self.block(x)


def _v1_layers(n_blocks: int, ngf: int, dropout: float, norm: str) -> list[nn.Module]:
    """DeblurGAN v1's layers up to (without) the last 7x7 conv and tanh."""
    bias = not has_shift(norm)  # a norm with a learned shift makes the conv bias redundant
    layers: list[nn.Module] = [
        ReflectionPad(3),
        nn.Conv2d(3, ngf, 7, bias=bias),
        norm_layer(norm, ngf),
        nn.ReLU(inplace=True),
    ]
    for mult in (1, 2):
        layers += [
            nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
            norm_layer(norm, ngf * mult * 2),
            nn.ReLU(inplace=True),
        ]
    layers += [ResBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
    for mult in (4, 2):
        layers += [
            nn.ConvTranspose2d(
                ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
            ),
            norm_layer(norm, ngf * mult // 2),
            nn.ReLU(inplace=True),
        ]
    return layers


def _selector(bank: int) -> nn.Sequential:
    """The small network that weights ``bank`` linear filters per region (at 1/8 resolution)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, bank, 1),
    )


def _linear_skip(size: int, bank: int) -> nn.Conv2d:
    """``bank`` zero-initialised ``size`` x ``size`` colour filters of the input (odd size)."""
    if size % 2 == 0:
        raise ValueError(f"gen.linear_skip must be odd (a centred kernel); got {size}.")
    conv = nn.Conv2d(3, 3 * bank, size, padding=size // 2, padding_mode="reflect")
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


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
        residual_gate: bool = False,
        linear_skip: int = 0,
        linear_bank: int = 1,
        deep_branch: bool = True,
    ) -> None:
        super().__init__()
        if pretrained or weights_path:
            log.info(
                "ResNetGenerator has no ImageNet weights: pretrained/weights_path are ignored."
            )
        layers = _v1_layers(n_blocks, ngf, dropout, norm)
        layers += [ReflectionPad(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        # deep_branch=false: no convolutional branch at all, G(x) = x + the linear skip (a purely
        # linear, learned inverse filter; CPU recipes, where the deep branch lowered validation
        # PSNR in every measured run: experiments/cpu_study)
        if not deep_branch and not linear_skip:
            raise ValueError(
                "gen.deep_branch=false needs gen.linear_skip > 0 (else G is the identity)."
            )
        self.model = nn.Sequential(*layers) if deep_branch else None
        if identity_init:  # zero residual at start: G(x) = x (off by default, as published)
            last = layers[-2]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # residual_gate: G(x) = x + g * tanh(out) with one learned scalar g starting at 0 (ReZero).
        # G starts as the identity like identity_init, but Adam's first steps move one number by
        # ~lr instead of every weight of the last conv by ~lr each, so the residual cannot jump
        # to a large random pattern before the network has learned one that helps.
        self.gate = nn.Parameter(torch.zeros(1)) if residual_gate and deep_branch else None
        # linear_skip=k: a zero-initialised k x k colour convolution of the input is added as a
        # second residual, a learned average inverse filter (Wiener-like) that trains in tens of
        # iterations while the deep branch is slow to start; 0 = none (as published)
        self.linear = _linear_skip(linear_skip, linear_bank) if linear_skip else None
        # linear_bank=K > 1: K such filters, mixed per region by softmax weights a small selector
        # computes from the input at 1/8 resolution (upsampled): a blind, blur-adaptive inverse
        # filter (a short blur wants a milder filter than a long one; one filter must average
        # them). Starts at the identity like the single filter (all K filters are zero).
        if linear_bank < 1 or (linear_bank > 1 and not linear_skip):
            raise ValueError(
                f"gen.linear_bank must be >= 1 and needs gen.linear_skip > 0; got linear_bank="
                f"{linear_bank}, linear_skip={linear_skip}."
            )
        self.bank = int(linear_bank)
        self.selector = _selector(self.bank) if self.bank > 1 else None

    def bank_weights(self, x: Tensor) -> Tensor:
        """B x K x H x W softmax weights of the K linear filters (``linear_bank > 1``)."""
        assert self.selector is not None
        logits = F.interpolate(self.selector(x), size=x.shape[-2:], mode="bilinear")
        return torch.softmax(logits, dim=1)

    def linear_residual(self, x: Tensor) -> Tensor:
        """The linear skip's residual: one filter, or the bank mixed by :meth:`bank_weights`."""
        assert self.linear is not None
        filtered = self.linear(x)
        if self.bank == 1:
            return filtered
        b, _, h, w = filtered.shape
        stacked = filtered.view(b, self.bank, 3, h, w)
        return keep_layout((self.bank_weights(x).unsqueeze(2) * stacked).sum(dim=1), x)

    def set_encoder_frozen(self, frozen: bool) -> None:
        """No-op: the ResNet generator has no pretrained encoder to freeze (logged)."""
        log.info(
            "ResNetGenerator has no pretrained encoder: set_encoder_frozen(%s) does nothing.",
            frozen,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Deblur ``x`` (B x 3 x H x W in [-1, 1]); output has the same shape and range."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            raise ValueError(
                f"ResNetGenerator expects a B x 3 x H x W batch; got {tuple(x.shape)}."
            )
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(
                f"ResNetGenerator got a {h}x{w} image; the smallest side must be >= "
                f"{self.min_size} px (after two stride-2 convs the map would be 1x1). "
                "Upscale or pad the image."
            )
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        padded = keep_layout(F.pad(x, (0, pw, 0, ph), mode="reflect"), x) if ph or pw else x
        residual: Tensor | None = None  # the constructor ensures a deep branch or a linear skip
        if self.model is not None:
            residual = self.model(padded)
            if self.gate is not None:
                residual = self.gate * residual
        if self.linear is not None:
            linear = self.linear_residual(padded)
            residual = linear if residual is None else residual + linear
        out = torch.clamp(residual + padded, -1.0, 1.0)
        return out[..., :h, :w]
