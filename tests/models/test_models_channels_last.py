"""channels_last weights and input: every layer of the generators and critics stays channels_last
(model.channels_last=true on the GPU), and the outputs equal the NCHW model's."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from deblur.config import compose

CL = torch.channels_last
GENERATORS = {
    "fpn_mobilenetv2": [],
    "resnet": ["gen.n_blocks=2", "gen.ngf=8"],
    "resnet_cpu": [],
    "resnet_cpu_bank": ["gen.linear_bank=2", "gen.deep_branch=false"],  # the bank's own layout
}
CRITICS = {"nlayer": ["backbone.ndf=8"], "efficientnet_b0": ["backbone.patch_head_channels=16"]}


def _tensors(value) -> list[Tensor]:
    """The 4-D tensors with a memory layout to keep (C > 1 and H*W > 1) in a hook's value."""
    items = value if isinstance(value, list | tuple) else [value]
    return [
        t
        for t in items
        if isinstance(t, Tensor) and t.dim() == 4 and t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1
    ]


def nchw_layers(net: nn.Module, x: Tensor) -> tuple[list[str], Tensor | list[Tensor]]:
    """Modules whose 4-D input or output is not channels_last-contiguous, and ``net(x)``."""
    bad: list[str] = []

    def check(name: str, what: str, value) -> None:
        if any(not t.is_contiguous(memory_format=CL) for t in _tensors(value)):
            bad.append(f"{name or '<root>'} ({what})")

    hooks = []
    for name, module in net.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda m, i, n=name: check(n, "input", i)))
        hooks.append(module.register_forward_hook(lambda m, i, o, n=name: check(n, "output", o)))
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return bad, out


def assert_keeps_channels_last(net: nn.Module, size: tuple[int, int] = (64, 64)) -> None:
    """``net`` in channels_last runs channels_last throughout and matches its NCHW copy."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, *size) * 2 - 1
    reference = net.eval()
    with torch.no_grad():
        expected = reference(x)
    last = copy.deepcopy(reference).to(memory_format=CL)
    bad, out = nchw_layers(last, x.to(memory_format=CL))
    assert not bad, f"layers that returned NCHW: {bad}"
    outs = out if isinstance(out, list) else [out]
    refs = expected if isinstance(expected, list) else [expected]
    for got, want in zip(outs, refs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_keeps_channels_last(name):
    gen = name.removesuffix("_bank")
    cfg = compose("train", [f"gen={gen}", "pretrained=false", *GENERATORS[name]])
    net = instantiate(cfg.gen)
    with torch.no_grad():  # a non-zero residual everywhere (the CPU nets start as the identity)
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    assert_keeps_channels_last(net)


@pytest.mark.parametrize("backbone", CRITICS)
def test_double_critic_keeps_channels_last(backbone):
    over = [f"backbone={backbone}", "disc=double", "pretrained=false", *CRITICS[backbone]]
    assert_keeps_channels_last(instantiate(compose("train", over).disc.net))


def test_channels_last_check_sees_a_layer_that_returns_nchw():
    """The hooks catch a layer that drops the layout (what nn.InstanceNorm2d does)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4), nn.Conv2d(4, 4, 3))
    bad, _ = nchw_layers(net.to(memory_format=CL), torch.rand(1, 3, 16, 16).to(memory_format=CL))
    assert bad == ["1 (output)", "2 (input)"]
