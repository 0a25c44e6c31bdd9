"""Adversarial losses against hand-computed values, gradient routing, and the WGAN-GP penalty."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from deblur.losses.adversarial import (
    GANLoss,
    LSGANLoss,
    RaGANLoss,
    RaGANLSLoss,
    WGANGPLoss,
)

LOSS_DIR = Path(__file__).resolve().parents[2] / "conf" / "loss"
REAL = torch.tensor([[2.0], [0.0]])  # D(y), B x 1: mean 1
FAKE = torch.tensor([[-1.0], [2.0]])  # D(ŷ), B x 1: mean 0.5


def sp(x: float) -> float:
    """softplus: BCE(x, 0) = sp(x), BCE(x, 1) = sp(-x)."""
    return math.log1p(math.exp(x))


def mean(*xs: float) -> float:
    return sum(xs) / len(xs)


# relative logits for the RaGAN family: D(y) - mean D(ŷ) and D(ŷ) - mean D(y)
RR = [2.0 - 0.5, 0.0 - 0.5]
FR = [-1.0 - 1.0, 2.0 - 1.0]
EXPECTED = {
    "gan": (
        0.5 * (mean(sp(-2.0), sp(-0.0)) + mean(sp(-1.0), sp(2.0))),
        mean(sp(1.0), sp(-2.0)),
    ),
    "lsgan": (
        0.5 * mean((2 - 1) ** 2, (0 - 1) ** 2) + 0.5 * mean(1.0, 4.0),
        0.5 * mean((-1 - 1) ** 2, (2 - 1) ** 2),
    ),
    "wgangp": (0.5 - 1.0, -0.5),
    "ragan": (
        0.5 * (mean(*(sp(-v) for v in RR)) + mean(*(sp(v) for v in FR))),
        0.5 * (mean(*(sp(v) for v in RR)) + mean(*(sp(-v) for v in FR))),
    ),
    "ragan_ls": (
        0.5 * (mean(*((v - 1) ** 2 for v in RR)) + mean(*((v + 1) ** 2 for v in FR))),
        0.5 * (mean(*((v - 1) ** 2 for v in FR)) + mean(*((v + 1) ** 2 for v in RR))),
    ),
}


def load(name: str, **overrides):
    cfg = OmegaConf.load(LOSS_DIR / f"{name}.yaml")
    return instantiate(cfg, **overrides)


def test_configs_and_n_critic():
    assert sorted(p.stem for p in LOSS_DIR.glob("*.yaml")) == sorted([*EXPECTED, "none"])
    classes = {
        "gan": GANLoss,
        "lsgan": LSGANLoss,
        "wgangp": WGANGPLoss,
        "ragan": RaGANLoss,
        "ragan_ls": RaGANLSLoss,
    }
    for name, cls in classes.items():
        loss = load(name)
        assert type(loss) is cls
        assert loss.n_critic == 1  # DeblurGAN-v2: one D step per G step, WGAN-GP included
    assert load("ragan").pool_size == load("ragan_ls").pool_size == 50  # the reference's pool
    assert load("none").uses_discriminator is False
    assert all(load(n).uses_discriminator for n in classes)
    assert load("wgangp").gp_weight == 10.0
    assert load("wgangp", n_critic=2).n_critic == 2
    with pytest.raises(ValueError):
        GANLoss(n_critic=0)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_values_by_hand(name):
    loss = load(name)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert loss.g_loss(REAL, FAKE).item() == pytest.approx(g_expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_patch_maps_and_head_lists(name):
    """Means over all elements: constant 3x4 maps equal B x 1 logits; lists average per head
    (batch means here: the pool's own behaviour is tested below)."""
    loss = load(name, **({"pool_size": 0} if name.startswith("ragan") else {}))
    real_map = REAL.view(2, 1, 1, 1).expand(2, 1, 3, 4)
    fake_map = FAKE.view(2, 1, 1, 1).expand(2, 1, 3, 4)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d_loss(real_map, fake_map).item() == pytest.approx(d_expected, rel=1e-6)
    other_real, other_fake = REAL * 0.5, FAKE - 1.0
    single = loss.d_loss(other_real, other_fake).item()
    both = loss.d_loss([REAL, other_real], [FAKE, other_fake]).item()
    assert both == pytest.approx(0.5 * (d_expected + single), rel=1e-6)
    assert loss.g_loss([real_map, REAL], [fake_map, FAKE]).item() == pytest.approx(
        g_expected, rel=1e-6
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gradients_reach_the_right_network(name):
    torch.manual_seed(0)
    gen, disc = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 1, 3)
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    loss = load(name)
    fake = gen(x)
    loss.d_loss(disc(y), disc(fake.detach())).backward()
    assert all(p.grad is None for p in gen.parameters())
    # (only the weight: WGAN and relativistic losses are invariant to D's bias, its grad is 0)
    assert disc.weight.grad is not None and disc.weight.grad.abs().sum() > 0
    disc.zero_grad(set_to_none=True)
    loss.g_loss(disc(y).detach(), disc(fake)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())


class LinearCritic(nn.Module):
    """D(x) = <w, x> per sample: its input gradient is w whatever x is."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3)).unsqueeze(1)


def test_gradient_penalty_closed_form_and_its_gradient():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 5) * 0.3
    critic = LinearCritic(w.clone())
    loss = WGANGPLoss(gp_weight=10.0)
    real, fake = torch.randn(3, 3, 4, 5), torch.randn(3, 3, 4, 5)
    gp = loss.gradient_penalty(critic, real, fake)
    norm = w.norm().item()
    assert gp.item() == pytest.approx(10 * (norm - 1) ** 2, rel=1e-5)  # independent of batch size
    gp.backward()  # create_graph=True: the penalty trains the critic
    torch.testing.assert_close(critic.w.grad, 2 * 10 * (norm - 1) * w / norm, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_patch_and_list_outputs():
    """Patch map D(x)[h, w] = <v, x[:, h, w]>: score = mean over H*W, grad norm = |v| / sqrt(HW)."""
    v = torch.tensor([0.6, -1.2, 2.0])

    def patch(x):
        return (x * v.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)

    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    loss = WGANGPLoss()
    norm = v.norm().item() / 4.0
    assert loss.gradient_penalty(patch, real, fake).item() == pytest.approx(
        10 * (norm - 1) ** 2, rel=1e-5
    )
    both = loss.gradient_penalty(lambda x: [patch(x), patch(x)], real, fake)  # scores summed
    assert both.item() == pytest.approx(10 * (2 * norm - 1) ** 2, rel=1e-5)


def test_gradient_penalty_one_alpha_per_sample():
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return 0.5 * x.pow(2).sum(dim=(1, 2, 3), keepdim=True)

    real, fake = torch.ones(6, 3, 4, 4), torch.zeros(6, 3, 4, 4)
    torch.manual_seed(0)
    gp = WGANGPLoss(gp_weight=1.0).gradient_penalty(critic, real, fake)
    mixed = seen[0]
    alphas = mixed.flatten(1)[:, 0]
    assert torch.equal(mixed, alphas.view(6, 1, 1, 1).expand_as(mixed))  # one alpha per sample
    assert len(set(alphas.tolist())) == 6 and (alphas >= 0).all() and (alphas <= 1).all()
    # grad of 0.5|x|^2 is x: per-sample norm alpha_i * sqrt(48)
    expected = ((alphas * math.sqrt(48) - 1) ** 2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    given = torch.full((6, 1, 1, 1), 0.25)
    seen.clear()
    WGANGPLoss().gradient_penalty(critic, real, fake, alpha=given)
    assert torch.allclose(seen[0], torch.full_like(seen[0], 0.25))
    with pytest.raises(ValueError, match="alpha"):
        WGANGPLoss().gradient_penalty(critic, real, fake, alpha=torch.rand(6))


def test_gradient_penalty_fp32_under_autocast():
    torch.manual_seed(0)
    critic = LinearCritic(torch.randn(3, 4, 4) * 0.2)
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gp = WGANGPLoss().gradient_penalty(critic, real.bfloat16(), fake.bfloat16())
    assert gp.dtype == torch.float32
    norm = critic.w.norm().item()
    assert gp.item() == pytest.approx(10 * (norm - 1) ** 2, rel=1e-5)


def test_ragan_pool_is_explicit_and_per_head():
    """The reference's ImagePool: per-image D outputs, added in the D step before the mean is
    taken (so the current batch counts), detached, the last ``pool_size`` kept, one per head."""
    loss = RaGANLSLoss(pool_size=3)
    r1, f1 = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0]])
    first = loss.d_loss(r1, f1)  # pool = this batch: the batch means, as without a pool
    assert first.item() == pytest.approx(RaGANLSLoss(pool_size=0).d_loss(r1, f1).item())
    r2, f2 = torch.tensor([[0.0], [0.0]]), torch.tensor([[4.0], [4.0]])
    # pools after the push keep the last 3 per-image scores: real [3, 0, 0], fake [2, 4, 4]
    ref_real, ref_fake = (3 + 0 + 0) / 3, (2 + 4 + 4) / 3
    expected = 0.5 * (((0 - ref_fake - 1) ** 2) + ((4 - ref_real + 1) ** 2))
    assert loss.d_loss(r2, f2).item() == pytest.approx(expected)
    # the G step reads the pools and does not fill them
    g = loss.g_loss(r2, f2)
    expected_g = 0.5 * (((4 - ref_real - 1) ** 2) + ((0 - ref_fake + 1) ** 2))
    assert g.item() == pytest.approx(expected_g)
    assert loss.g_loss(r2, f2).item() == pytest.approx(expected_g)
    # with a pool the reference is a constant: no gradient flows through the other side's mean
    rr = torch.tensor([[0.5]], requires_grad=True)
    loss.d_loss(rr, torch.tensor([[0.0]])).backward()
    # fake pool now [4, 4, 0]; were the real reference differentiable, rr would get a 2nd term
    assert rr.grad.item() == pytest.approx(2 * 0.5 * (0.5 - (4 + 4 + 0.0) / 3 - 1))
    # another head has its own pool (here: just its batch)
    assert loss.d_loss(r2, f2, head=1).item() == pytest.approx(
        RaGANLSLoss(pool_size=0).d_loss(r2, f2).item()
    )
    # the pools round-trip through state_dict (they go into checkpoints: exact resume)
    again = RaGANLSLoss(pool_size=3)
    again.load_state_dict(loss.state_dict())
    assert again.g_loss(r2, f2).item() == pytest.approx(loss.g_loss(r2, f2).item())
    with pytest.raises(ValueError):
        RaGANLoss(pool_size=-1)


def test_ragan_without_pool_at_batch_one_is_plain_rsgan():
    """pool_size=0, batch 1, one score per image: the 'average' is the image's own score."""
    real, fake = torch.tensor([[1.5]]), torch.tensor([[-0.5]])
    d = RaGANLoss(pool_size=0).d_loss(real, fake)
    rsgan = F.binary_cross_entropy_with_logits(real - fake, torch.ones(1, 1))
    # RaGAN: 1/2 [BCE(r - f, 1) + BCE(f - r, 0)] = BCE(r - f, 1) (both terms are equal)
    assert d.item() == pytest.approx(rsgan.item())


@pytest.mark.parametrize("cls", [RaGANLoss, RaGANLSLoss])
def test_frozen_d_fills_the_pool_in_g_steps(cls):
    """A frozen D takes no D step: ``observe`` (called by the G step) fills the same pool, so
    frozen and unfrozen cells use the same reference, not each image's own score."""
    loss = cls(pool_size=50)
    torch.manual_seed(0)
    history = [torch.randn(4, 1) + 3.0 for _ in range(5)]
    for real in history:
        loss.observe([real], [real - 5.0])
    real, fake = torch.zeros(4, 1), torch.zeros(4, 1, requires_grad=True)
    loss.observe([real], [fake])
    pooled = torch.cat([*history, real]).mean()
    assert len(loss.state_dict()["real/0"]) == 24
    # the reference of the fake side is the pool's mean of real scores (no batch mean)
    expected = GANLoss._d(  # the D term with targets swapped (G's), of the pooled references
        cls(pool_size=0),
        fake - pooled,
        real - (torch.cat([h - 5 for h in history] + [fake.detach()]).mean()),
        0,
    )
    torch.testing.assert_close(loss.g_loss([real], [fake]), expected)
    assert not torch.allclose(loss.g_loss([real], [fake]), cls(pool_size=50).g_loss([real], [fake]))


@pytest.mark.parametrize("cls", [GANLoss, RaGANLoss])
def test_bce_losses_need_no_calibration(cls):
    assert cls().calibration(torch.tensor([5.0]), torch.tensor([-5.0]), None) == (1.0, 0.0)
    assert cls.needs_calibration_data is False


def test_lsgan_calibration_undoes_a_confident_classifier():
    """A confident classifier (D(sharp) ~ 5) would make the sharp image itself cost 8 under
    LSGAN's G loss; the least-squares map makes it ~0 and blurred ~1/2."""
    torch.manual_seed(0)
    real, fake = 5 + 0.3 * torch.randn(64), -5 + 0.3 * torch.randn(64)
    a, b = LSGANLoss().calibration(real, fake, None)
    loss = LSGANLoss()
    assert float(loss.g_loss(None, real)) > 7
    assert float(loss.g_loss(None, a * real + b)) < 0.01
    assert float(loss.g_loss(None, a * fake + b)) == pytest.approx(0.5, abs=0.02)


def test_ragan_ls_and_wgangp_calibration_scales():
    real, fake = torch.tensor([4.0, 6.0]), torch.tensor([-6.0, -4.0])
    a, b = RaGANLSLoss().calibration(real, fake, None)
    assert a * (real.mean() - fake.mean()) == pytest.approx(1.0) and b == pytest.approx(0.0)
    a, _ = WGANGPLoss().calibration(real, fake, torch.tensor([30.0, 34.0]))
    assert a == pytest.approx(1 / 32)
    with pytest.raises(ValueError, match="gradient norms"):
        WGANGPLoss().calibration(real, fake, None)
