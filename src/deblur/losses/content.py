"""Content losses: pixel (MSE / L1) and VGG19 perceptual, on the whole batch (Johnson et al. 2016;
DeblurGAN / DeblurGAN-v2: VGG19 conv3_3 before its ReLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblur.models.weights import create_vgg19_features

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def vgg_layer_index(features: nn.Sequential) -> dict[str, int]:
    """Map names 'conv3_3', 'relu3_3', 'pool3', ... to their index in ``vgg.features``."""
    names: dict[str, int] = {}
    block, conv = 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = i
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = i
        elif isinstance(layer, nn.MaxPool2d):
            names[f"pool{block}"] = i
            block, conv = block + 1, 0
    return names


class PerceptualLoss(nn.Module):
    """MSE between frozen VGG19 features up to ``layer`` (conv3_3: before its ReLU) of prediction
    and target ([-1, 1], ImageNet-normalised); the target's features are constants."""

    def __init__(
        self, layer: str = "conv3_3", pretrained: bool = True, weights_path: str | None = None
    ) -> None:
        super().__init__()
        features = create_vgg19_features(pretrained, weights_path)
        index = vgg_layer_index(features)
        if layer not in index:
            names = [n for n in index if n.startswith("conv")]
            raise ValueError(f"Unknown VGG19 perceptual_layer '{layer}'; choose one of {names}.")
        self.features = features[: index[layer] + 1].requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The VGG stays in eval mode whatever the parent's mode."""
        super().train(mode)
        self.features.eval()
        return self

    def _embed(self, x: Tensor) -> Tensor:
        return self.features(((x + 1) / 2 - self.mean) / self.std)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            target_features = self._embed(target)
        return F.mse_loss(self._embed(pred), target_features)


class ContentLoss(nn.Module):
    """The thesis' L_G content part, 0.5 L_pixel + 0.006 L_vgg (``perceptual_weight=0``: no VGG);
    ``pixel_space``: the images the pixel term compares (conf/train.yaml model.content)."""

    def __init__(
        self,
        pixel: str = "mse",
        pixel_weight: float = 0.5,
        perceptual_weight: float = 0.006,
        perceptual_layer: str = "conv3_3",
        pretrained: bool = True,
        weights_path: str | None = None,
        pixel_space: str = "imagenet",
    ) -> None:
        super().__init__()
        if pixel not in PIXEL_LOSSES:
            raise ValueError(f"Unknown pixel loss '{pixel}'; choose one of {sorted(PIXEL_LOSSES)}.")
        # per-channel factor on the [-1, 1] difference: d / 2 / std (imagenet), d, d / 2
        half = torch.full((1, 3, 1, 1), 0.5)
        scales = {"imagenet": half / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)}
        scales |= {"minus1_1": half * 2, "zero_one": half}
        if pixel_space not in scales:
            raise ValueError(
                f"model.content.pixel_space={pixel_space!r} is unknown; choose one of "
                f"{list(scales)} (imagenet = DeblurGAN-v2's ImageNet-normalised images)."
            )
        self.pixel, self.pixel_space = pixel, pixel_space
        self.register_buffer("pixel_scale", scales[pixel_space], persistent=False)
        self.pixel_weight, self.perceptual_weight = float(pixel_weight), float(perceptual_weight)
        self.perceptual = None
        if perceptual_weight:
            self.perceptual = PerceptualLoss(perceptual_layer, pretrained, weights_path)

    def forward(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Named terms and their weighted ``total`` for ``pred`` vs ``target`` in [-1, 1]."""
        scale = self.pixel_scale.to(pred.dtype)
        pixel = PIXEL_LOSSES[self.pixel](pred * scale, target * scale)
        perceptual = (
            pred.new_zeros(()) if self.perceptual is None else self.perceptual(pred, target)
        )
        total = self.pixel_weight * pixel + self.perceptual_weight * perceptual
        return {"pixel": pixel, "perceptual": perceptual, "total": total}
