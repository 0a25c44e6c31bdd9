"""The study's mechanisms act the way the thesis says (signs and directions, not only "it runs").

Tiny CPU versions on synthetic sharp images (random shapes with hard edges) and their
camera-shake blurred twins: a blur classifier separates them; loaded into a discriminator it
scores sharp as real; a generator trained against that frozen critic alone moves towards sharp;
the WGAN-GP penalty pulls critic gradient norms to 1.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn

from deblur.config import compose, to_container
from deblur.data.blur import apply_kernel, motion_kernel
from deblur.losses.adversarial import GANLoss, RaGANLSLoss, WGANGPLoss
from deblur.models.critics import BlurClassifierNet, Discriminator, load_classifier_weights

SIZE = 64


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


@pytest.fixture(scope="module")
def pairs() -> dict[str, torch.Tensor]:
    """48 (sharp, blurred) pairs: 32 to train on, 16 held out."""
    rng = np.random.default_rng(0)
    sharp, blur = [], []
    for _ in range(48):
        s = _shapes(rng, SIZE)
        k = motion_kernel(11, rng, length=float(rng.uniform(6, 10)))
        sharp.append(s)
        blur.append(apply_kernel(s, k))
    s, b = _to_tensor(sharp), _to_tensor(blur)
    return {"train_sharp": s[:32], "train_blur": b[:32], "val_sharp": s[32:], "val_blur": b[32:]}


def _backbone(name: str) -> dict:
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


@pytest.fixture(scope="module")
def nlayer_classifier(pairs) -> BlurClassifierNet:
    return train_classifier(_backbone("nlayer"), pairs)


def _held_out_accuracy(net: nn.Module, pairs) -> float:
    with torch.no_grad():
        p_sharp = torch.sigmoid(net(pairs["val_sharp"]).reshape(-1))
        p_blur = torch.sigmoid(net(pairs["val_blur"]).reshape(-1))
    return float(torch.cat([p_sharp < 0.5, p_blur > 0.5]).float().mean())


def _disc_from(net: BlurClassifierNet, backbone: dict, kind: str = "single") -> Discriminator:
    cfg = compose("train", [f"disc={kind}"])
    with open_dict(cfg):
        cfg.backbone = backbone
    disc: Discriminator = instantiate(cfg.disc.net)
    load_classifier_weights(disc, {f"net.{k}": v for k, v in net.state_dict().items()}, backbone)
    return disc.eval()


def test_trained_classifier_separates_sharp_from_blurred_on_held_out_images(
    nlayer_classifier, pairs
):
    assert _held_out_accuracy(nlayer_classifier, pairs) >= 0.9


@pytest.mark.parametrize("kind", ["single", "double"])
def test_loaded_classifier_scores_sharp_as_real(nlayer_classifier, pairs, kind):
    """The sign: the classifier says 'blurred = 1', every GAN loss says 'real (sharp) = 1'."""
    backbone = _backbone("nlayer")
    disc = _disc_from(nlayer_classifier, backbone, kind)
    with torch.no_grad():
        d_sharp = disc(pairs["val_sharp"])[0].reshape(-1)
        d_blur = disc(pairs["val_blur"])[0].reshape(-1)
        z_sharp = nlayer_classifier(pairs["val_sharp"]).reshape(-1)
    assert d_sharp.mean() > 0 > d_blur.mean()
    assert float((d_sharp > d_blur).float().mean()) >= 0.9  # pair by pair
    # the realness logit is exactly minus the blur logit: same confidence, other sign
    torch.testing.assert_close(d_sharp, -z_sharp)
    # so BCE(D, real=1) on sharp equals the classifier's BCE(z, sharp=0)
    torch.testing.assert_close(
        F.binary_cross_entropy_with_logits(d_sharp, torch.ones_like(d_sharp)),
        F.binary_cross_entropy_with_logits(z_sharp, torch.zeros_like(z_sharp)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv3_large", "efficientnet_b0", "seresnext50"])
def test_every_backbone_classifier_then_discriminator_prefers_sharp(pairs, name):
    """Random-init timm backbones, trained briefly: held-out sharp scores above blurred in D."""
    backbone = _backbone(name)
    net = train_classifier(backbone, pairs, steps=80, lr=1e-3)
    assert _held_out_accuracy(net, pairs) >= 0.75
    disc = _disc_from(net, backbone)
    with torch.no_grad():
        d_sharp = disc(pairs["val_sharp"])[0].reshape(-1)
        d_blur = disc(pairs["val_blur"])[0].reshape(-1)
    assert d_sharp.mean() > d_blur.mean()


class _ResidualG(nn.Module):
    """A tiny generator that starts as the identity (zero last conv), like identity_init."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 3, 5, padding=2)
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(-1, 1)


@pytest.mark.parametrize("loss_cls", [GANLoss, RaGANLSLoss])
def test_generator_against_frozen_pretrained_d_alone_moves_towards_sharp(
    nlayer_classifier, pairs, loss_cls
):
    """Adversarial term only (no content loss), identity start, D frozen: the classifier's own
    P(blurred) of G's outputs must fall. With the sign reversed it rises (the wave-1 bug)."""
    backbone = _backbone("nlayer")
    disc = _disc_from(nlayer_classifier, backbone).requires_grad_(False)
    loss = loss_cls(pool_size=0) if loss_cls is RaGANLSLoss else loss_cls()
    torch.manual_seed(0)
    gen = _ResidualG()
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)

    def p_blurred() -> float:
        with torch.no_grad():
            return float(torch.sigmoid(nlayer_classifier(gen(pairs["val_blur"]))).mean())

    before = p_blurred()
    for step in range(30):
        i = (step * 8) % 32
        blur, sharp = pairs["train_blur"][i : i + 8], pairs["train_sharp"][i : i + 8]
        fake = gen(blur)
        real_out = [r.detach() for r in disc(sharp)] if loss.uses_real_in_g else None
        g = loss.g_loss(real_out, disc(fake))
        opt.zero_grad()
        g.backward()
        opt.step()
    after = p_blurred()
    assert before > 0.5  # the classifier sees the (identity) outputs as blurred
    assert after < before - 0.1, (before, after)


def test_wgan_gp_penalty_drives_critic_gradient_norms_to_one(pairs):
    """Minimising the penalty alone pulls ||grad D|| at interpolates towards 1."""
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 1, 4, stride=2, padding=1),
    )
    with torch.no_grad():  # start far from 1-Lipschitz
        for p in critic.parameters():
            p.mul_(20.0)
    loss = WGANGPLoss(gp_weight=10.0)
    real, fake = pairs["train_sharp"][:16], pairs["train_blur"][:16]

    def mean_gap() -> float:
        torch.manual_seed(1)
        alpha = torch.rand(16, 1, 1, 1)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        score = critic(mixed).reshape(16, -1).mean(dim=1).sum()
        (grad,) = torch.autograd.grad(score, mixed)
        return float((grad.reshape(16, -1).norm(dim=1) - 1).abs().mean())

    before = mean_gap()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for _ in range(150):
        gp = loss.gradient_penalty(critic, real, fake)
        opt.zero_grad()
        gp.backward()
        opt.step()
    after = mean_gap()
    assert before > 0.5 and after < 0.25 * before, (before, after)
