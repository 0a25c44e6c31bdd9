"""One norm scheme: ``gen.norm`` and ``backbone.norm`` are the same names for the same layers."""

from __future__ import annotations

import re

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from deblur.config import compose
from deblur.models.layers import InstanceNorm, NormError

LAYERS = {"instance": InstanceNorm, "batch": nn.BatchNorm2d, "none": None}
NORM_TYPES = (nn.InstanceNorm2d, nn.BatchNorm2d)


def _conv_norm_pairs(net: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(conv, the module right after it) in every Sequential of ``net``."""
    pairs = []
    for seq in net.modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq)
            pairs += [(a, b) for a, b in zip(kids, kids[1:]) if isinstance(a, nn.Conv2d)]
    return pairs


@pytest.mark.parametrize("norm", LAYERS)
@pytest.mark.parametrize("gen", ["resnet", "fpn_mobilenetv2"])
def test_gen_and_backbone_norm_name_the_same_layers(gen, norm):
    """``gen.norm=<name> backbone.norm=<name>`` as users type them; the critics' convs before a
    norm with a learned shift (batch) have no bias, as published."""
    small = ["gen.n_blocks=1", "gen.ngf=8"] if gen == "resnet" else []
    over = [f"gen={gen}", f"gen.norm={norm}", f"backbone.norm={norm}", "backbone.ndf=8", *small]
    cfg = compose("train", [*over, "disc=double", "pretrained=false"])
    gen_net, disc = instantiate(cfg.gen), instantiate(cfg.disc.net)
    decoder = gen_net if gen == "resnet" else nn.ModuleList([gen_net.top_down, gen_net.smooth])
    for net in (decoder, disc):
        found = {type(m) for m in net.modules() if isinstance(m, NORM_TYPES)}
        assert found == ({LAYERS[norm]} if LAYERS[norm] else set())
    normed = [c for c, nxt in _conv_norm_pairs(disc) if isinstance(nxt, (*NORM_TYPES, nn.Identity))]
    assert len(normed) == 8 and all((c.bias is None) == (norm == "batch") for c in normed)


def test_unknown_norm_names_the_keys_and_the_choices():
    for over, node in (("gen.norm=group", "gen"), ("backbone.norm=group", "disc.net")):
        cfg = compose("train", ["gen=resnet", "disc=patch", "pretrained=false", over])
        with pytest.raises(InstantiationException) as err:
            instantiate(OmegaConf.select(cfg, node))
        assert isinstance(err.value.__cause__, NormError)
        assert re.search(r"'group' \(config key gen.norm or backbone.norm\).*batch", str(err.value))
