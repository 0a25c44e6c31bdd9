"""Backbone trunks (``conf/backbone``), critics, the discriminator (``conf/disc``) and the blur
classifier: exactly the ``single`` critic, so it loads into any discriminator on its backbone."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from deblur.checkpoints import checkpoint_cfg, read_classifier_checkpoint
from deblur.config import to_container
from deblur.errors import UserError
from deblur.models.layers import check_images, has_shift, norm_layer
from deblur.models.weights import create_timm

log = logging.getLogger(__name__)

#: the checkpoint key under which a blur classifier stores its last validation's scores
CALIBRATION_KEY = "deblur_calibration"


class BackboneConfigError(UserError, ValueError):
    """A backbone config that cannot build a trunk (an unknown old-format one, a missing node)."""


class NLayerTrunk(nn.Module):
    """NLayerDiscriminator body (DeblurGAN-v2 / pix2pix): ``n_layers`` stride-2 4x4 conv stages,
    then one stride-1 stage; ``depth`` keeps only the first ``depth`` of them (null: all)."""

    min_size = 2

    def __init__(
        self, ndf: int, n_layers: int, norm: str, depth: int | None = None, pretrained: bool = False
    ) -> None:
        super().__init__()
        if pretrained:
            log.info("Backbone 'nlayer' has no ImageNet weights; it starts from random init.")
        bias = not has_shift(norm)  # as published: a conv bias only before a norm without shift
        widths = [ndf * min(2**n, 8) for n in range(n_layers + 1)]
        stages = [nn.Sequential(nn.Conv2d(3, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True))]
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1
            conv = nn.Conv2d(widths[n - 1], widths[n], 4, stride=stride, padding=2, bias=bias)
            stages.append(nn.Sequential(conv, norm_layer(norm, widths[n]), nn.LeakyReLU(0.2, True)))
        depth = len(stages) if depth is None else depth
        if not 1 <= depth <= len(stages):
            raise ValueError(f"NLayer depth {depth} not in 1..{len(stages)} (n_layers={n_layers}).")
        self.stages = nn.Sequential(*stages[:depth])
        self.out_channels = widths[depth - 1]
        self.shapes = f"ndf={ndf}, n_layers={n_layers}"  # what decides its shapes (load errors)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.min_size, "NLayer trunk")
        return self.stages(x)


class TimmTrunk(nn.Module):
    """A timm backbone truncated after feature level ``level`` (stride 2^(level+1))."""

    def __init__(
        self, model: str, level: int, pretrained: bool, weights_path: str | None = None
    ) -> None:
        super().__init__()
        # 'getter' prunes the layers after `level`, so a truncated trunk's keys are a prefix subset.
        features = {"features_only": True, "out_indices": (level,), "feature_cls": "getter"}
        self.body = create_timm(model, pretrained, weights_path, **features)
        info = self.body.feature_info
        self.out_channels, self.min_size = info.channels()[-1], 2 * info.reduction()[-1]
        cfg = self.body.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.model_name, self.shapes = model, f"model={model}"

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.min_size, f"timm trunk '{self.model_name}'")
        return self.body(((x + 1) / 2 - self.mean) / self.std)[-1]


def build_trunk(backbone: Mapping[str, Any], node: str = "trunk") -> nn.Module:
    """The ``trunk`` (full depth) or ``patch_trunk`` of a ``conf/backbone`` entry; the old format
    (``kind:``, from before trunks were ``_target_`` nodes) is refused."""
    cfg = dict(to_container(backbone))
    if not isinstance(cfg.get(node), Mapping) or "_target_" not in cfg[node]:
        old = "trunk" not in cfg and "patch_trunk" not in cfg and "kind" in cfg
        raise BackboneConfigError(
            f"Backbone config '{cfg.get('name')}' has no `{node}` node with a `_target_` (it has "
            f"{sorted(cfg)}). "
            + (
                f"kind={cfg['kind']!r}: the old format of classifier checkpoints, which this "
                "version no longer reads. Fix: train the classifier again with this version "
                "(python -m deblur.train_classifier), or use the version that wrote it."
                if old
                else f"Fix: add `{node}:` to conf/backbone/<name>.yaml as in nlayer.yaml."
            )
        )
    return instantiate(cfg[node])


class SingleCritic(nn.Module):
    """One realness logit per image (B x 1): trunk, per-location MLP, then the mean over the image
    (a head after the mean sees only channel means: the same for all images under instance norm)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        c, h = trunk.out_channels, max(trunk.out_channels // 4, 32)
        self.head = nn.Sequential(nn.Conv2d(c, h, 1), nn.LeakyReLU(0.2, True), nn.Conv2d(h, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).mean(dim=(2, 3))


class PatchCritic(nn.Module):
    """A map of local logits (B x 1 x h x w): a truncated trunk (stride 8) and a PatchGAN head
    (a stride-1 4x4 conv of ``hidden`` channels + norm + LeakyReLU, a 4x4 conv to one map)."""

    def __init__(self, trunk: nn.Module, hidden: int, norm: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(
            nn.Conv2d(trunk.out_channels, hidden, 4, padding=2, bias=not has_shift(norm)),
            norm_layer(norm, hidden),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(hidden, 1, 4, padding=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


class BlurClassifierNet(SingleCritic):
    """Blur classifier (sharp 0 / blurred 1): exactly the ``single`` critic on the full-depth
    ``trunk`` of ``backbone`` (a ``conf/backbone`` entry, or the one a checkpoint stores)."""

    def __init__(self, backbone: Mapping[str, Any]) -> None:
        super().__init__(build_trunk(backbone, "trunk"))


class Discriminator(nn.Module):
    """The critic heads of a ``conf/disc`` entry on one backbone: one logits tensor per head in
    ``head_names`` order; ``kind`` and ``backbone`` are what a classifier is checked against."""

    def __init__(self, critics: Mapping[str, nn.Module], kind: str, backbone: str) -> None:
        super().__init__()
        if not critics:
            raise ValueError(f"Discriminator '{kind}' has no critics (conf/disc net.critics).")
        self.kind, self.backbone = kind, backbone
        self.critics = nn.ModuleDict(dict(critics))

    @property
    def head_names(self) -> list[str]:
        return list(self.critics.keys())

    def forward(self, x: Tensor) -> list[Tensor]:
        return [critic(x) for critic in self.critics.values()]


def _read_classifier(source: str | os.PathLike | Mapping) -> tuple[dict, dict | None, str, Any]:
    """(state dict without the ``net.`` prefix, backbone config if known, description, the
    validation scores stored for calibration if any)."""
    where, backbone = "the given state dict", None
    if isinstance(source, str | os.PathLike):
        # one paragraph naming the path for a missing, empty, text, cut-off or GAN file
        where, source = str(source), read_classifier_checkpoint(source)
    scores = source.get(CALIBRATION_KEY)
    if isinstance(source.get("state_dict"), Mapping):
        backbone, source = checkpoint_cfg(source).get("backbone"), source["state_dict"]
    state = {k: v for k, v in source.items() if k != CALIBRATION_KEY}
    if any(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return state, (dict(backbone) if backbone is not None else None), where, scores


def calibration_scores(net: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """A blur classifier's logits ``z`` (B) on ``images`` and the per-image norms of their input
    gradients (B): what a GAN calibrates it from (in eval mode each image's gradient is its own)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = images.detach().clone().float().requires_grad_(True)
        z = net(x).reshape(x.shape[0], -1).mean(dim=1)
        (grad,) = torch.autograd.grad(z.sum(), x)
    norm = grad.reshape(x.shape[0], -1).norm(dim=1)
    return {"logit": z.detach().clone(), "grad_norm": norm.detach().clone()}


def flip_to_realness(critic: SingleCritic) -> list[str]:
    """Negate the last layer of a blur classifier (logit z, blurred = 1): -z is a realness logit of
    the same confidence, BCE(-z, 1 - t) = BCE(z, t). Returns the names of the negated tensors."""
    with torch.no_grad():
        critic.head[-1].weight.neg_()
        critic.head[-1].bias.neg_()
    return [f"head.{len(critic.head) - 1}.{name}" for name in ("weight", "bias")]


def load_classifier_weights(
    disc: Discriminator,
    source: str | os.PathLike | Mapping[str, Any],
    source_backbone: Mapping[str, Any] | None = None,
    calibrate: Any = None,
) -> dict[str, dict[str, Any]]:
    """Load a blur classifier (path, loaded dict, or state dict + ``source_backbone``) strictly into
    each critic: single all (negated, calibrated for ``calibrate``), patch its trunk; the report."""
    state, ckpt_backbone, where, scores = _read_classifier(source)
    src = dict(to_container(source_backbone)) if source_backbone is not None else ckpt_backbone

    def fail(problem: str) -> ValueError:
        trunk = next(iter(disc.critics.values())).trunk
        detail = getattr(trunk, "shapes", type(trunk).__name__)
        trained = "<unknown backbone>"
        if src is not None:  # the settings that decide parameter shapes
            node = src.get("trunk") if isinstance(src.get("trunk"), Mapping) else src
            shapes = ", ".join(f"{k}={node[k]}" for k in ("model", "ndf", "n_layers") if k in node)
            trained = f"'{src.get('name')}' ({shapes})"
        return ValueError(
            f"Cannot load classifier {where} into the {disc.kind} discriminator: {problem}. "
            f"The classifier was trained on backbone {trained}, the discriminator uses backbone "
            f"'{disc.backbone}' ({detail}). Fix: run the GAN with backbone="
            f"{src.get('name') if src else '<the classifier backbone>'}, or train a classifier "
            f"with backbone={disc.backbone} and point disc.checkpoint at it."
        )

    if src is not None and src.get("name") != disc.backbone:
        raise fail("the backbone names differ")
    report: dict[str, dict[str, Any]] = {}
    for head, critic in disc.critics.items():
        own, single = critic.state_dict(), head == "single"
        wanted = [k for k in own if single or k.startswith("trunk.")]
        problems = {
            "missing keys": [k for k in wanted if k not in state],
            "shape mismatches": [
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                for k in wanted
                if k in state and state[k].shape != own[k].shape
            ],
            "unexpected keys": sorted(set(state) - set(own)) if single else [],
        }
        if any(problems.values()):
            found = [f"{len(v)} {name} (e.g. {v[:3]})" for name, v in problems.items() if v]
            raise fail(f"the {head} critic does not match: " + "; ".join(found))
        critic.load_state_dict({k: state[k] for k in wanted}, strict=single)
        flipped = flip_to_realness(critic) if single else []
        fresh = [k for k in own if k not in wanted]
        report[head] = {"loaded": len(wanted), "fresh": fresh, "sign_flipped": flipped}
        if single and calibrate is not None:
            report[head]["calibration"] = _calibrate(critic, calibrate, scores, where)
        log.info("Classifier weights %s -> %s critic: %s", where, head, report[head])
    return report


def _calibrate(critic: SingleCritic, loss: Any, scores: Mapping | None, where: str) -> dict:
    """Make the negated ``critic`` output ``a * D + b`` (``loss.calibration`` of the stored
    scores), folded into its last 1x1 conv so checkpoints and exports carry it; the report."""
    if not loss.needs_calibration_data:  # the BCE losses: exact as negated
        return {"scale": 1.0, "shift": 0.0, "images": 0}
    name, off = type(loss).__name__, "or pass disc.calibrate=false (the logits as they are)."
    if scores is None:
        raise UserError(
            f"The classifier {where} stores no validation scores ('{CALIBRATION_KEY}': it was "
            f"trained before calibration existed), so it cannot be calibrated for {name}, which "
            "reads the discriminator's raw output on a fixed scale. Fix: retrain the classifier "
            f"(python -m deblur.train_classifier), use loss=gan or loss=ragan (exact), {off}"
        )
    logit = torch.as_tensor(scores["logit"]).float().reshape(-1)
    label = torch.as_tensor(scores["label"]).float().reshape(-1)
    real, fake = -logit[label == 0], -logit[label == 1]  # realness = minus the blur logit
    if not real.numel() or not fake.numel():
        raise UserError(
            f"The classifier {where} stores validation scores of {real.numel()} sharp and "
            f"{fake.numel()} blurred images; calibration needs both. Fix: retrain it with a "
            f"validation split that holds both classes, {off}"
        )
    if float(real.double().mean()) <= float(fake.double().mean()):
        raise UserError(
            f"The classifier {where} does not tell sharp from blurred on its own validation "
            f"images (mean blur logit {float(-real.mean()):.4g} on {real.numel()} sharp, "
            f"{float(-fake.mean()):.4g} on {fake.numel()} blurred): calibrated for {name} it "
            "would reward blur (a debug=smoke classifier is random). Fix: train it until its "
            f"validation accuracy is above chance, use loss=gan or loss=ragan (exact), {off}"
        )
    grad = scores.get("grad_norm")
    try:
        scale, shift = loss.calibration(
            real, fake, torch.as_tensor(grad).float().reshape(-1) if grad is not None else None
        )
    except ValueError as err:
        raise UserError(
            f"The classifier {where} cannot be calibrated for {name}: {err} Fix: retrain the "
            f"classifier, {off}"
        ) from err
    with torch.no_grad():
        critic.head[-1].weight.mul_(scale)
        critic.head[-1].bias.mul_(scale).add_(shift)
    report = {"scale": scale, "shift": shift, "images": int(label.numel())}
    return report | {"step": int(scores.get("step", -1))}
