"""DeblurGAN-v2 FPN generator over any timm ``features_only`` backbone (Kupyn et al., 2019)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.layers import check_images, keep_layout, norm_layer
from deblur.models.weights import create_timm

log = logging.getLogger(__name__)


def _conv_norm_relu(cin: int, cout: int, norm: str) -> nn.Sequential:
    """3x3 conv, norm, ReLU: the FPN top-down and smoothing block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), norm_layer(norm, cout), nn.ReLU(True))


def _head(cin: int, cout: int) -> nn.Sequential:
    """Per-level head: two bias-free 3x3 convs, each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.ReLU(inplace=True),
    )


def _resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Nearest resize to ``size`` (a no-op when equal); handles valid-padding odd sizes."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")


class FPNGenerator(nn.Module):
    """DeblurGAN-v2's FPN decoder on a timm encoder (strides 2..32): ``clamp(tanh(out) + x, -1, 1)``
    for [-1, 1] inputs of any size (reflect-padded)."""

    multiple = 32

    def __init__(
        self,
        backbone: str = "mobilenetv2_100",
        fpn_channels: int = 128,
        head_channels: int = 64,
        norm: str = "instance",
        pretrained: bool = True,
        weights_path: str | None = None,
        identity_init: bool = False,
    ) -> None:
        super().__init__()
        self.encoder_frozen = False  # warm-up: see set_encoder_frozen
        self.backbone = backbone
        self.encoder = create_timm(
            backbone, pretrained, weights_path, features_only=True, out_indices=(0, 1, 2, 3, 4)
        )
        info = self.encoder.feature_info
        channels, reductions = info.channels(), info.reduction()
        if list(reductions) != [2, 4, 8, 16, 32]:
            raise ValueError(
                f"FPNGenerator needs a backbone with feature strides 2, 4, 8, 16, 32; timm model "
                f"'{backbone}' gives {reductions}. Pick another backbone in conf/gen."
            )
        cfg = self.encoder.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        # Level 0 (stride 2) joins after the heads, so it has the head width (= fpn/2 as published).
        self.lateral0 = nn.Conv2d(channels[0], head_channels, 1, bias=False)
        laterals = [nn.Conv2d(c, fpn_channels, 1, bias=False) for c in channels[1:]]
        self.laterals = nn.ModuleList(laterals)
        # top_down[i] smooths pyramid level i + 1 (strides 4, 8, 16) after the sum.
        top_down = [_conv_norm_relu(fpn_channels, fpn_channels, norm) for _ in range(3)]
        self.top_down = nn.ModuleList(top_down)
        self.heads = nn.ModuleList(_head(fpn_channels, head_channels) for _ in range(4))
        self.smooth = _conv_norm_relu(4 * head_channels, head_channels, norm)
        self.smooth2 = _conv_norm_relu(head_channels, head_channels // 2, norm)
        self.final = nn.Conv2d(head_channels // 2, 3, 3, padding=1)
        if identity_init:  # G(x) = x at the start: from the blurred input's PSNR, not a random one
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)
        self.min_padded = self._probe_min_padded()
        self.min_size = self.min_padded // 2

    @torch.no_grad()
    def _probe_min_padded(self) -> int:
        """Smallest multiple of 32 whose stride-32 map is at least 2x2 (batch-1 norms need > 1);
        probed in eval mode, so the fresh encoder's BN statistics stay as built."""
        self.encoder.eval()
        for size in range(32, 1024 + 1, 32):
            try:
                last = self.encoder(torch.zeros(1, 3, size, size))[-1]
            except RuntimeError:
                continue
            if min(last.shape[-2:]) >= 2:
                self.encoder.train()
                return size
        raise ValueError(f"Backbone '{self.backbone}' gives no usable features up to 1024 px.")

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the encoder: no gradients and BN statistics fixed (eval mode)."""
        self.encoder_frozen = bool(frozen)
        self.encoder.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)
        log.info("FPNGenerator encoder '%s' %s", self.backbone, "frozen" if frozen else "trainable")

    def train(self, mode: bool = True) -> FPNGenerator:
        """Set train/eval mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def _padding(self, size: int) -> tuple[int, int]:
        total = max(-(-size // self.multiple) * self.multiple, self.min_padded) - size
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        """Deblur ``x`` (B x 3 x H x W in [-1, 1]); output has the same shape and range."""
        check_images(x, self.min_size, f"FPNGenerator('{self.backbone}')")
        h, w = x.shape[-2:]
        (top, bottom), (left, right) = self._padding(h), self._padding(w)
        pad = (left, right, top, bottom)
        padded = keep_layout(F.pad(x, pad, mode="reflect"), x) if any(pad) else x
        enc = self.encoder(((padded + 1) / 2 - self.mean) / self.std)
        lateral = [conv(e) for conv, e in zip(self.laterals, enc[1:])]
        maps = [lateral[3]]  # top-down, from stride 32 to stride 4
        for level in (2, 1, 0):
            summed = lateral[level] + _resize(maps[-1], lateral[level].shape[-2:])
            maps.append(self.top_down[level](summed))
        quarter = maps[-1].shape[-2:]  # the heads, in order of stride 32, 16, 8, 4
        heads = [_resize(self.heads[3 - i](m), quarter) for i, m in enumerate(maps)]
        smoothed = self.smooth(torch.cat(heads, dim=1))
        lateral0 = self.lateral0(enc[0])
        smoothed = self.smooth2(_resize(smoothed, lateral0.shape[-2:]) + lateral0)
        smoothed = _resize(smoothed, padded.shape[-2:])
        out = torch.clamp(torch.tanh(self.final(smoothed)) + padded, -1.0, 1.0)
        return out[..., top : top + h, left : left + w]
