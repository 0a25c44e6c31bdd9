"""Shared by the science tests: synthetic (sharp, blurred) pairs, a blur classifier trained on
them as stage 1 trains it, and discriminators loaded from it as a GAN run loads them.

Sharp images are random shapes with hard edges (64 x 64); their twins are camera-shake blurred
(motion kernels of length 6-10 px). The fixtures ``pairs`` and ``nlayer_classifier`` that wrap
these live in ``tests/science/conftest.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict

from deblur.config import compose, to_container
from deblur.data.blur import apply_kernel, motion_kernel
from deblur.models.critics import BlurClassifierNet, Discriminator, load_classifier_weights

SIZE = 64


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside: these nets are tiny, and on the 2 shared cores a second
    thread spin-waits (measured under load: classifier training 2.5 s on one thread, 22 s on
    two; a direction check 0.8 s against 2-12 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(3, size // 3)), colour, -1)
        else:
            w, h = (int(v) for v in rng.integers(3, size // 2, 2))
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
    return img


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1


def make_pairs(seed: int = 0) -> dict[str, torch.Tensor]:
    """48 (sharp, blurred) pairs in [-1, 1]: 32 to train on, 16 held out (``seed`` 0: the ones
    the ``nlayer_classifier`` fixture is trained and validated on)."""
    rng = np.random.default_rng(seed)
    sharp, blur = [], []
    for _ in range(48):
        s = _shapes(rng, SIZE)
        k = motion_kernel(11, rng, length=float(rng.uniform(6, 10)))
        sharp.append(s)
        blur.append(apply_kernel(s, k))
    s, b = _to_tensor(sharp), _to_tensor(blur)
    return {"train_sharp": s[:32], "train_blur": b[:32], "val_sharp": s[32:], "val_blur": b[32:]}


def backbone_cfg(name: str) -> dict:
    """backbone=<name> as a run composes it, random init, thin (NLayer ndf 8, 3 layers)."""
    small = ["backbone.ndf=8", "backbone.n_layers=3", "backbone.patch_layers=2"]
    over = [f"backbone={name}", "pretrained=false", "backbone.patch_head_channels=16"]
    return to_container(compose("train", over + (small if name == "nlayer" else [])).backbone)


def train_classifier(
    backbone: dict, pairs, steps: int = 150, lr: float = 1e-3
) -> BlurClassifierNet:
    """Stage 1 in miniature: sharp = 0, blurred = 1, BCE, as ClassifierSystem trains it."""
    torch.manual_seed(0)
    net = BlurClassifierNet(backbone)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x = torch.cat([pairs["train_sharp"], pairs["train_blur"]])
    t = torch.cat([torch.zeros(32), torch.ones(32)])
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randperm(64, generator=g)[:16]
        loss = F.binary_cross_entropy_with_logits(net(x[idx]).reshape(-1), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def empty_disc(backbone: dict, kind: str = "single") -> Discriminator:
    """The ``disc=<kind>`` discriminator a run builds on ``backbone``, freshly initialised."""
    cfg = compose("train", [f"disc={kind}"])
    with open_dict(cfg):
        cfg.backbone = backbone
    return instantiate(cfg.disc.net)


def disc_from(net: BlurClassifierNet, backbone: dict, kind: str = "single") -> Discriminator:
    """A discriminator loaded from the classifier ``net`` (negated, not calibrated)."""
    disc = empty_disc(backbone, kind)
    load_classifier_weights(disc, {f"net.{k}": v for k, v in net.state_dict().items()}, backbone)
    return disc.eval()
