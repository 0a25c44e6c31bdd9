"""Perceptual (VGG19 conv3_3 before ReLU) and content losses, on the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from deblur.losses.content import ContentLoss, PerceptualLoss, vgg_layer_index
from deblur.models.weights import create_vgg19_features


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(pretrained=False)


def test_random_features_match_torchvision_vgg19():
    with torch.device("meta"):
        reference = torchvision.models.vgg19().features
    ours = create_vgg19_features(False)
    assert [type(m) for m in ours] == [type(m) for m in reference]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_conv3_3_before_relu(perceptual):
    index = vgg_layer_index(create_vgg19_features(False))
    assert index["conv3_3"] == 14 and index["conv1_2"] == 2 and index["conv5_4"] == 34
    assert len(perceptual.features) == 15  # features[:15]
    assert isinstance(perceptual.features[-1], torch.nn.Conv2d)
    assert perceptual.features[-1].out_channels == 256


def test_zero_for_identical_positive_otherwise(perceptual):
    torch.manual_seed(1)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    assert perceptual(a, a.clone()).item() == 0.0
    assert perceptual(a, (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)).item() > 0


def test_inputs_mapped_and_normalised(perceptual):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        perceptual._embed(x), perceptual.features(((x + 1) / 2 - mean) / std)
    )


def test_whole_batch_is_used(perceptual):
    torch.manual_seed(2)
    a, b, c = (torch.rand(1, 3, 24, 24) * 2 - 1 for _ in range(3))
    batch = perceptual(torch.cat([a, b]), torch.cat([a, c]))  # element 0 identical
    assert batch.item() == pytest.approx(0.5 * perceptual(b, c).item(), rel=1e-5)


def test_vgg_frozen_but_gradient_reaches_prediction(perceptual):
    perceptual.train()
    assert not perceptual.features.training
    assert not any(p.requires_grad for p in perceptual.parameters())
    pred = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    perceptual(pred, torch.zeros(1, 3, 16, 16)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in perceptual.parameters())


def test_layer_is_configurable_and_checked():
    assert len(PerceptualLoss("conv1_2", pretrained=False).features) == 3
    with pytest.raises(ValueError, match="conv3_3"):
        PerceptualLoss("conv9_9", pretrained=False)


@pytest.mark.parametrize("pixel", ["mse", "l1"])
def test_content_total_is_weighted_sum(pixel):
    torch.manual_seed(3)
    loss = ContentLoss(pixel=pixel, pretrained=False, pixel_space="minus1_1")
    assert (loss.pixel_weight, loss.perceptual_weight) == (0.5, 0.006)  # thesis weights
    pred, target = torch.rand(2, 3, 24, 24) * 2 - 1, torch.rand(2, 3, 24, 24) * 2 - 1
    out = loss(pred, target)
    assert set(out) == {"pixel", "perceptual", "total"}
    manual = (pred - target).pow(2).mean() if pixel == "mse" else (pred - target).abs().mean()
    torch.testing.assert_close(out["pixel"], manual)
    assert out["perceptual"].item() > 0
    torch.testing.assert_close(out["total"], 0.5 * out["pixel"] + 0.006 * out["perceptual"])


def test_pixel_space_scales_like_the_reference():
    """imagenet (DeblurGAN-v2): MSE of ImageNet-normalised [0, 1] images, ~19.6x the [0, 1]
    MSE and ~4.9x the [-1, 1] one; the factors are exact per channel."""
    from deblur.losses.content import IMAGENET_STD

    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    terms = {
        s: ContentLoss(perceptual_weight=0.0, pixel_space=s)(pred, target)["pixel"]
        for s in ("imagenet", "minus1_1", "zero_one")
    }
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = ((((pred + 1) / 2) - ((target + 1) / 2)) / std).pow(2).mean()
    torch.testing.assert_close(terms["imagenet"], ref)
    torch.testing.assert_close(terms["minus1_1"], 4 * terms["zero_one"])
    assert 18 < float(terms["imagenet"] / terms["zero_one"]) < 21
    with pytest.raises(ValueError, match="pixel_space"):
        ContentLoss(perceptual_weight=0.0, pixel_space="raw")


def test_pixel_only_builds_no_vgg():
    loss = ContentLoss(
        perceptual_weight=0.0, pretrained=True, pixel_space="minus1_1"
    )  # no VGG, so no download needed
    assert loss.perceptual is None
    pred, target = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    out = loss(pred, target)
    assert out["perceptual"].item() == 0.0
    torch.testing.assert_close(out["total"], 0.5 * F.mse_loss(pred, target))
    with pytest.raises(ValueError, match="pixel"):
        ContentLoss(pixel="huber", pretrained=False)
