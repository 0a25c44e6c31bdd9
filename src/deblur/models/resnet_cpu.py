"""The CPU-scale generator (``gen=resnet_cpu``): a DeblurGAN-v1 ResNet whose residual can start at
zero behind a learned gate, plus a learned linear inverse filter of the input as a second skip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.layers import keep_layout
from deblur.models.resnet import ResNetGenerator


def _linear_skip(size: int, bank: int) -> nn.Conv2d:
    """``bank`` zero-initialised ``size`` x ``size`` colour filters of the input (odd size)."""
    if size % 2 == 0:
        raise ValueError(f"gen.linear_skip must be odd (a centred kernel); got {size}.")
    conv = nn.Conv2d(3, 3 * bank, size, padding=size // 2, padding_mode="reflect")
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _selector(bank: int) -> nn.Sequential:
    """The small network that weights ``bank`` linear filters per region (at 1/8 resolution)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, bank, 1),
    )


class CPUResNetGenerator(ResNetGenerator):
    """``G(x) = clamp(x + g * deep(x) + linear(x), -1, 1)``: the ResNet branch ``deep`` (absent
    with ``deep_branch=false``), its gate ``g`` (a learned scalar from 0, ReZero, with
    ``residual_gate``; else 1), and ``linear``: ``linear_bank`` zero-initialised
    ``linear_skip`` x ``linear_skip`` colour filters of the input (0: none), mixed per region by
    a small selector's softmax weights when there are several (a blind, blur-adaptive inverse
    filter). Both residuals start at zero, so G starts as the identity."""

    def __init__(
        self,
        n_blocks: int = 3,
        ngf: int = 16,
        dropout: float = 0.0,
        norm: str = "instance",
        pretrained: bool = False,
        weights_path: str | None = None,
        identity_init: bool = False,
        residual_gate: bool = True,
        linear_skip: int = 15,
        linear_bank: int = 1,
        deep_branch: bool = True,
    ) -> None:
        if not deep_branch and not linear_skip:
            raise ValueError(
                "gen.deep_branch=false needs gen.linear_skip > 0 (else G is the identity)."
            )
        if linear_bank < 1 or (linear_bank > 1 and not linear_skip):
            raise ValueError(
                f"gen.linear_bank must be >= 1 and needs gen.linear_skip > 0; got linear_bank="
                f"{linear_bank}, linear_skip={linear_skip}."
            )
        super().__init__(n_blocks, ngf, dropout, norm, pretrained, weights_path, identity_init)
        if not deep_branch:
            self.model = None
        # one number for Adam's first steps to move, not every weight of the last conv
        self.gate = nn.Parameter(torch.zeros(1)) if residual_gate and deep_branch else None
        self.linear = _linear_skip(linear_skip, linear_bank) if linear_skip else None
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

    def residual(self, padded: Tensor) -> Tensor:
        """The gated deep residual plus the linear one (the constructor ensures one of them)."""
        residual: Tensor | None = None
        if self.model is not None:
            residual = self.model(padded)
            if self.gate is not None:
                residual = self.gate * residual
        if self.linear is not None:
            linear = self.linear_residual(padded)
            residual = linear if residual is None else residual + linear
        return residual
