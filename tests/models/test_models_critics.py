"""Discriminators (every kind x backbone from conf/), the classifier net and its weights in a D."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from deblur.config import compose, to_container
from deblur.models.critics import (
    BackboneConfigError,
    BlurClassifierNet,
    Discriminator,
    NLayerTrunk,
    SingleCritic,
    build_trunk,
    load_classifier_weights,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("[!_]*.yaml"))
KINDS = sorted(p.stem for p in (CONF / "disc").glob("*.yaml"))


def backbone_cfg(name: str, **overrides) -> dict:
    """backbone=<name> as a run composes it, pretrained=false, with ``backbone.<key>`` overrides."""
    over = [f"backbone.{k}={v}" for k, v in overrides.items()]
    return to_container(compose("train", [f"backbone={name}", "pretrained=false", *over]).backbone)


def discriminator(kind: str, backbone: dict) -> Discriminator:
    """disc=<kind> (its ``net`` node) built on ``backbone``, as a GAN run builds it."""
    cfg = compose("train", [f"disc={kind}"])
    with open_dict(cfg):
        cfg.backbone = backbone
    return instantiate(cfg.disc.net)


def test_configs_present():
    assert BACKBONES == ["efficientnet_b0", "mobilenetv3_large", "nlayer", "seresnext50"]
    assert KINDS == ["double", "patch", "single"]
    for kind in KINDS:
        cfg = compose("train", [f"disc={kind}"]).disc
        assert cfg.net.kind == kind and cfg.checkpoint is None and cfg.frozen is False


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_kind_on_every_backbone(backbone):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    expected_heads = {"single": ["single"], "patch": ["patch"], "double": ["single", "patch"]}
    for kind in KINDS:
        disc = discriminator(kind, backbone_cfg(backbone))
        out = disc(x)
        assert isinstance(out, list) and disc.head_names == expected_heads[kind]
        assert list(disc.critics) == expected_heads[kind]
        for head, logits in zip(disc.head_names, out):
            if head == "single":
                assert logits.shape == (2, 1)
            else:
                assert logits.dim() == 4 and logits.shape[:2] == (2, 1)
                assert min(logits.shape[-2:]) >= 4  # a map of local scores
            assert torch.isfinite(logits).all()


def test_patch_map_size_and_widths_nlayer():
    disc = discriminator("patch", backbone_cfg("nlayer"))
    with torch.no_grad():
        (logits,) = disc(torch.zeros(1, 3, 256, 256))
    assert logits.shape == (1, 1, 35, 35)  # DeblurGAN-v2 PatchGAN (n=3, padding 2) on 256x256
    trunk = NLayerTrunk(ndf=64, n_layers=5, norm="instance")
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 2, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    first = trunk.stages[0]
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in first)  # no norm on conv 1
    assert isinstance(first[1], torch.nn.LeakyReLU) and first[1].negative_slope == 0.2
    three = build_trunk(backbone_cfg("nlayer", n_layers=3), "trunk")
    assert three.out_channels == 512 and len(three.stages) == 4


def test_classifier_is_the_single_critic():
    cfg = backbone_cfg("nlayer")
    net = BlurClassifierNet(cfg)
    assert isinstance(net, SingleCritic)
    disc = discriminator("single", cfg)
    assert list(net.state_dict()) == list(disc.critics["single"].state_dict())
    assert net(torch.zeros(3, 3, 48, 48)).shape == (3, 1)


def _classifier_ckpt(cfg: dict, seed: int) -> tuple[BlurClassifierNet, dict]:
    torch.manual_seed(seed)
    net = BlurClassifierNet(cfg)
    ckpt = {
        "state_dict": {f"net.{k}": v.clone() for k, v in net.state_dict().items()},
        "hyper_parameters": {"cfg": {"backbone": dict(cfg)}},
    }
    return net, ckpt


@pytest.mark.parametrize("backbone", BACKBONES)
def test_classifier_weights_load_into_every_kind(backbone, tmp_path):
    cfg = backbone_cfg(backbone)
    net, ckpt = _classifier_ckpt(cfg, seed=1)
    path = tmp_path / "best.ckpt"
    torch.save(ckpt, path)
    for kind in KINDS:
        torch.manual_seed(2)
        disc = discriminator(kind, cfg)
        head_before = (
            {
                k: v.clone()
                for k, v in disc.critics["patch"].state_dict().items()
                if k.startswith("head.")
            }
            if "patch" in disc.critics
            else {}
        )
        report = load_classifier_weights(disc, path)
        assert list(report) == disc.head_names
        source = net.state_dict()
        if "single" in disc.critics:
            flipped = report["single"]["sign_flipped"]
            assert flipped == ["head.2.weight", "head.2.bias"]  # blur logit -> realness logit
            for k, v in disc.critics["single"].state_dict().items():
                assert torch.equal(v, -source[k] if k in flipped else source[k]), k
            assert report["single"]["fresh"] == []
        if "patch" in disc.critics:
            patch = disc.critics["patch"].state_dict()
            trunk_keys = [k for k in patch if k.startswith("trunk.")]
            assert trunk_keys and all(torch.equal(patch[k], source[k]) for k in trunk_keys)
            assert report["patch"]["loaded"] == len(trunk_keys)
            assert report["patch"]["fresh"] == list(head_before)
            for k, v in head_before.items():
                assert torch.equal(patch[k], v), k  # the conv head stays freshly initialised


def test_loads_bare_state_dict_and_rejects_other_backbone():
    nlayer = backbone_cfg("nlayer")
    net, _ = _classifier_ckpt(nlayer, seed=3)
    disc = discriminator("double", nlayer)
    load_classifier_weights(disc, net.state_dict(), source_backbone=nlayer)
    x = torch.zeros(1, 3, 64, 64)
    torch.testing.assert_close(disc(x)[0], -net(x))  # the realness logit is minus the blur logit

    other = discriminator("single", backbone_cfg("mobilenetv3_large"))
    with pytest.raises(ValueError, match=r"'nlayer'.*'mobilenetv3_large'.*backbone=nlayer"):
        load_classifier_weights(other, {"net." + k: v for k, v in net.state_dict().items()}, nlayer)
    # same name, other depth: caught by the key / shape comparison, still naming both
    shallow = discriminator("single", backbone_cfg("nlayer", n_layers=3))
    with pytest.raises(ValueError, match=r"n_layers=5.*n_layers=3"):
        load_classifier_weights(shallow, net.state_dict(), nlayer)


def test_missing_checkpoint_file(tmp_path):
    disc = discriminator("single", backbone_cfg("nlayer"))
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_classifier_weights(disc, tmp_path / "nope.ckpt")


def test_bad_kind_and_small_input():
    with pytest.raises(hydra.errors.MissingConfigException, match="triple"):
        compose("train", ["disc=triple"])  # Hydra lists the disc options
    disc = discriminator("single", backbone_cfg("mobilenetv3_large"))
    with pytest.raises(ValueError, match=r"40x80.*>= 64 px"):
        disc(torch.zeros(1, 3, 40, 80))
    with pytest.raises(ValueError, match="kind"):
        build_trunk({"name": "x", "kind": "vit"}, "trunk")


def test_old_format_backbone_is_refused_in_one_paragraph():
    """Checkpoints from before the `_target_` trunks (``kind: nlayer``) are no longer read."""
    old = {"name": "nlayer", "kind": "nlayer", "ndf": 8, "n_layers": 3, "norm": "instance"}
    with pytest.raises(BackboneConfigError, match=r"old format.*train the classifier again"):
        BlurClassifierNet(old)
