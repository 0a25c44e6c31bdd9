"""Generators built from conf/gen: any size and batch, global residual, size errors, encoder freeze."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deblur.config import compose
from deblur.models.fpn import FPNGenerator
from deblur.models.resnet import ResNetGenerator
from deblur.models.resnet_cpu import CPUResNetGenerator

GEN_DIR = Path(__file__).resolve().parents[2] / "conf" / "gen"
GENS = sorted(p.stem for p in GEN_DIR.glob("*.yaml"))
# inception_resnet_v2's valid padding needs >= 64 px; the others take 32 px.
SIZES = {"fpn_inception": [(97, 67), (96, 80)]}
_CACHE: dict[str, torch.nn.Module] = {}


def build(name: str) -> torch.nn.Module:
    """The generator of conf/gen/<name>.yaml with random weights (built once per session)."""
    if name not in _CACHE:
        cfg = OmegaConf.create(
            {"pretrained": False, "gen": OmegaConf.load(GEN_DIR / f"{name}.yaml")}
        )
        _CACHE[name] = instantiate(cfg.gen)
    return _CACHE[name]


def test_all_generator_configs_present():
    assert set(GENS) == {
        "fpn_mobilenetv2",
        "fpn_mobilenetv3",
        "fpn_efficientnet_b0",
        "fpn_seresnext50",
        "fpn_inception",
        "resnet",
        "resnet_cpu",
    }


@pytest.mark.parametrize("name", GENS)
def test_generator_odd_sizes_batch_one(name):
    torch.manual_seed(0)
    gen = build(name).train()
    for h, w in SIZES.get(name, [(67, 45), (96, 80)]):
        x = torch.rand(1, 3, h, w) * 2 - 1
        y = gen(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert y.min() >= -1 and y.max() <= 1
        if name == "resnet_cpu":  # residual gate and linear skip start at zero: the identity
            assert torch.equal(y, x)
        else:
            assert not torch.allclose(y, x)  # the network changed something


@pytest.mark.parametrize("name", ["fpn_mobilenetv2", "resnet"])
def test_generator_batch_two_eval(name):
    gen = build(name).eval()
    with torch.no_grad():
        y = gen(torch.rand(2, 3, 50, 33) * 2 - 1)
    assert y.shape == (2, 3, 50, 33)


@pytest.mark.parametrize("name", ["fpn_mobilenetv2", "fpn_inception", "resnet"])
def test_zero_final_conv_gives_identity(name):
    """tanh(0) + x clamped = x: the global skip is aligned with the input after pad and crop."""
    gen = build(name)
    final = gen.final if isinstance(gen, FPNGenerator) else gen.model[-2]
    saved = {k: v.clone() for k, v in final.state_dict().items()}
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
        x = torch.rand(1, 3, 97, 71) * 2 - 1
        y = gen.eval()(x)
    final.load_state_dict(saved)
    torch.testing.assert_close(y, x)


def test_too_small_input_raises_naming_size():
    gen = build("fpn_mobilenetv2")
    assert gen.min_size == 32
    with pytest.raises(ValueError, match=r"31x40.*>= 32 px"):
        gen(torch.zeros(1, 3, 31, 40))
    gen(torch.zeros(1, 3, 32, 33))  # the minimum works (padded to 64 internally)
    assert build("fpn_inception").min_size == 64
    with pytest.raises(ValueError, match=r"50x80.*>= 64 px"):
        build("fpn_inception")(torch.zeros(1, 3, 50, 80))
    with pytest.raises(ValueError, match=r"7x20.*>= 8 px"):
        build("resnet")(torch.zeros(1, 3, 7, 20))


def test_fpn_widths_follow_feature_info():
    gen = build("fpn_mobilenetv2")
    assert [c.in_channels for c in gen.laterals] == [24, 32, 96, 320]
    assert all(c.out_channels == 128 for c in gen.laterals)
    assert gen.lateral0.in_channels == 16 and gen.lateral0.out_channels == 64
    assert gen.smooth[0].in_channels == 4 * 64 and gen.smooth2[0].out_channels == 32
    assert gen.final.out_channels == 3
    assert isinstance(gen.smooth[1], torch.nn.InstanceNorm2d)
    inception = build("fpn_inception")
    assert [c.out_channels for c in inception.laterals] == [256] * 4
    assert inception.heads[0][0].out_channels == 128


def test_resnet_structure():
    gen = build("resnet")
    assert isinstance(gen, ResNetGenerator)
    blocks = [m for m in gen.modules() if type(m).__name__ == "ResBlock"]
    assert len(blocks) == 9
    drops = [m for m in gen.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 9 and all(d.p == 0.5 for d in drops)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in gen.modules()) == 2


def test_encoder_freeze_keeps_encoder_and_bn_stats():
    torch.manual_seed(0)
    gen = FPNGenerator("mobilenetv2_100", pretrained=False)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)  # created before freezing, like warm-up
    gen.set_encoder_frozen(True)
    gen.train()
    assert gen.encoder_frozen and not gen.encoder.training and gen.smooth.training
    assert not any(p.requires_grad for p in gen.encoder.parameters())
    enc_before = {k: v.clone() for k, v in gen.encoder.state_dict().items()}
    dec_before = gen.final.weight.detach().clone()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    loss = (gen(x) - x.flip(-1)).pow(2).mean()
    loss.backward()
    opt.step()
    for k, v in gen.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k  # weights and BN running stats unchanged
    assert not torch.equal(gen.final.weight, dec_before)
    gen.set_encoder_frozen(False)
    assert gen.encoder.training and all(p.requires_grad for p in gen.encoder.parameters())


def test_resnet_freeze_is_logged_noop(caplog):
    gen = build("resnet")
    before = [p.requires_grad for p in gen.parameters()]
    with caplog.at_level(logging.INFO, logger="deblur.models.resnet"):
        gen.set_encoder_frozen(True)
    assert "no pretrained encoder" in caplog.text
    assert [p.requires_grad for p in gen.parameters()] == before


def test_resnet_residual_gate_starts_as_identity_and_learns_one_scalar_first():
    """residual_gate: G(x) = x exactly at start; the first gradient reaches only the gate
    (the residual is multiplied by it), and norm='none' keeps crops and full frames alike."""
    torch.manual_seed(0)
    g = CPUResNetGenerator(n_blocks=1, ngf=8, norm="none", linear_skip=0)
    x = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    assert torch.equal(g(x), x)
    torch.nn.functional.mse_loss(g(x), torch.zeros_like(x)).backward()
    assert g.gate.grad is not None and g.gate.grad.abs().item() > 0
    others = [p.grad for n, p in g.named_parameters() if n != "gate"]
    assert all(p is None or p.abs().max() == 0 for p in others)


def test_resnet_linear_bank_starts_as_identity_and_mixes_its_filters_by_softmax_weights():
    """linear_bank=K: K zero-initialised k x k filters mixed per region by a selector's softmax
    weights; G(x) = x at start, the weights sum to 1 everywhere, and K equal filters act as one."""
    torch.manual_seed(0)
    kw = dict(n_blocks=1, ngf=8, norm="none", linear_skip=5)
    g = CPUResNetGenerator(**kw, linear_bank=3)
    x = torch.rand(2, 3, 37, 45) * 1.6 - 0.8  # any size: padded to a multiple of 4 inside
    assert torch.equal(g(x), x)
    w = g.bank_weights(x)
    assert w.shape == (2, 3, 37, 45) and torch.allclose(w.sum(1), torch.ones(2, 37, 45))
    assert w.std(dim=(2, 3)).mean() > 0  # the weights vary with the image content
    torch.nn.functional.mse_loss(g(x), torch.zeros_like(x)).backward()
    grads = g.linear.weight.grad.view(3, 3, 3, 5, 5)
    assert all(grads[k].abs().max() > 0 for k in range(3))  # every filter learns
    assert not torch.allclose(grads[0], grads[1])  # and differently (no symmetric saddle)
    single = CPUResNetGenerator(**kw)
    with torch.no_grad():
        single.linear.weight.normal_(0, 0.01)
        g.linear.weight.copy_(single.linear.weight.repeat(3, 1, 1, 1))
        g.linear.bias.copy_(single.linear.bias.repeat(3))
        assert torch.allclose(g.linear_residual(x), single.linear_residual(x), atol=1e-6)
    with pytest.raises(ValueError, match="linear_bank must be >= 1 and needs gen.linear_skip"):
        CPUResNetGenerator(n_blocks=1, ngf=8, linear_skip=0, linear_bank=2)


def test_resnet_without_deep_branch_is_the_identity_plus_a_linear_filter():
    g = CPUResNetGenerator(n_blocks=1, ngf=8, norm="none", linear_skip=5, deep_branch=False)
    assert g.model is None and g.gate is None
    x = torch.rand(1, 3, 20, 22) * 1.6 - 0.8
    assert torch.equal(g(x), x)
    with torch.no_grad():
        g.linear.weight.normal_(0, 0.01)
    y = g(x)
    expected = torch.clamp(x + g.linear(x), -1, 1)  # linear: conv(ax + by) = a conv(x) + b conv(y)
    assert torch.allclose(y, expected, atol=1e-6)
    assert sum(p.numel() for p in g.parameters()) == 3 * 3 * 5 * 5 + 3
    with pytest.raises(ValueError, match="deep_branch=false needs gen.linear_skip"):
        CPUResNetGenerator(n_blocks=1, ngf=8, linear_skip=0, deep_branch=False)


def test_resnet_cpu_is_the_plain_resnet_plus_its_skips_with_the_same_keys():
    """gen=resnet_cpu: the keys users type build CPUResNetGenerator, whose state dict is the plain
    ResNet's (``model.*``) plus ``gate`` and ``linear.*``; ResNetGenerator has no such flags."""
    cpu = instantiate(compose("train", ["gen=resnet_cpu", "pretrained=false"]).gen)
    plain = ResNetGenerator(n_blocks=3, ngf=16, dropout=0.0)
    assert type(cpu) is CPUResNetGenerator and type(build("resnet")) is ResNetGenerator
    assert list(cpu.state_dict()) == ["gate", *plain.state_dict(), "linear.weight", "linear.bias"]
    over = ["gen.residual_gate=false", "gen.identity_init=true", "gen.deep_branch=true"]
    variant = instantiate(compose("train", ["gen=resnet_cpu", "pretrained=false", *over]).gen)
    assert variant.gate is None and variant.model[-2].weight.abs().max() == 0
    with pytest.raises(TypeError, match="residual_gate"):
        ResNetGenerator(residual_gate=True)
