"""Tiny network configs and images shared by the tools tests (random weights, CPU-fast)."""

from __future__ import annotations

import numpy as np

from deblur.config import compose, to_container

FPN_CFG = {
    "_target_": "deblur.models.fpn.FPNGenerator",
    "backbone": "mobilenetv2_100",
    "fpn_channels": 16,
    "head_channels": 8,
    "norm": "instance",
    "pretrained": False,
    "weights_path": None,
}
RESNET_CFG = {
    "_target_": "deblur.models.resnet.ResNetGenerator",
    "n_blocks": 1,
    "ngf": 8,
    "dropout": 0.0,
    "norm": "instance",
    "pretrained": False,
    "weights_path": None,
}
NLAYER_CFG = to_container(
    compose(
        "train",
        ["backbone=nlayer", "pretrained=false", "backbone.ndf=8", "backbone.n_layers=3"]
        + ["backbone.patch_layers=2", "backbone.patch_head_channels=16"],
    ).backbone
)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
