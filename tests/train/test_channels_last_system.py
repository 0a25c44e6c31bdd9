"""model.channels_last=true converts the weights with the inputs: every conv of G, D and the
VGG19 of the perceptual loss holds NHWC weights (the layers keep the layout: tests/models)."""

from __future__ import annotations

import torch
from torch import nn

from deblur.config import compose
from deblur.systems.fit import build_system


def _nhwc_share(system) -> float:
    convs = [m.weight for m in system.modules() if isinstance(m, nn.Conv2d)]
    convs = [w for w in convs if w.shape[1] > 1 and w.shape[2] * w.shape[3] > 1]  # 2 layouts
    nhwc = [w for w in convs if w.is_contiguous(memory_format=torch.channels_last)]
    return len(nhwc) / len(convs)


def test_channels_last_converts_every_conv_weight():
    over = ["debug=smoke", "disc=double", "model.ema_decay=0.9"]
    assert _nhwc_share(build_system(compose("train", [*over, "model.channels_last=true"]))) == 1.0
    assert _nhwc_share(build_system(compose("train", over))) == 0.0  # the default: NCHW
