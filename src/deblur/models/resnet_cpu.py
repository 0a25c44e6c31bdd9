"""The CPU-scale generator (``gen=resnet_cpu``): a DeblurGAN-v1 ResNet whose residual can start at
zero behind a learned gate, plus a learned linear inverse filter of the input as a second skip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.layers import keep_layout
from deblur.models.resnet import ResNetGenerator


class CPUResNetGenerator(ResNetGenerator):
    """``G(x) = clamp(x + g * deep(x) + linear(x), -1, 1)``, both residuals zero at the start (G is
    the identity); the keys are explained in conf/gen/resnet_cpu.yaml."""

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
            raise ValueError("gen.deep_branch=false needs gen.linear_skip > 0 (else G = identity).")
        if linear_bank < 1 or (linear_bank > 1 and not linear_skip):
            raise ValueError(
                f"gen.linear_bank must be >= 1 and needs gen.linear_skip > 0; got linear_bank="
                f"{linear_bank}, linear_skip={linear_skip}."
            )
        if linear_skip % 2 == 0 and linear_skip:
            raise ValueError(f"gen.linear_skip must be odd (a centred kernel); got {linear_skip}.")
        super().__init__(n_blocks, ngf, dropout, norm, pretrained, weights_path, identity_init)
        if not deep_branch:
            self.model = None
        # one number for Adam's first steps to move, not every weight of the last conv
        self.gate = nn.Parameter(torch.zeros(1)) if residual_gate and deep_branch else None
        self.bank = int(linear_bank)
        self.linear = self.selector = None
        if linear_skip:  # the bank of filters, zero-initialised
            k = linear_skip
            self.linear = nn.Conv2d(3, 3 * self.bank, k, padding=k // 2, padding_mode="reflect")
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        if self.bank > 1:  # weights the filters per region, at 1/8 resolution
            self.selector = nn.Sequential(
                nn.Conv2d(3, 16, 5, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 16, 3, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, self.bank, 1),
            )

    def bank_weights(self, x: Tensor) -> Tensor:
        """B x K x H x W softmax weights of the K linear filters (``linear_bank > 1``)."""
        logits = F.interpolate(self.selector(x), size=x.shape[-2:], mode="bilinear")
        return torch.softmax(logits, dim=1)

    def linear_residual(self, x: Tensor) -> Tensor:
        """The linear skip's residual: one filter, or the bank mixed by :meth:`bank_weights`."""
        filtered = self.linear(x)
        if self.bank == 1:
            return filtered
        stacked = filtered.view(filtered.shape[0], self.bank, 3, *filtered.shape[-2:])
        return keep_layout((self.bank_weights(x).unsqueeze(2) * stacked).sum(dim=1), x)

    def residual(self, padded: Tensor) -> Tensor:
        """The gated deep residual plus the linear one (the constructor ensures one of them)."""
        residual: Tensor | None = None
        if self.model is not None:
            residual = self.model(padded) if self.gate is None else self.gate * self.model(padded)
        if self.linear is not None:
            linear = self.linear_residual(padded)
            residual = linear if residual is None else residual + linear
        return residual
