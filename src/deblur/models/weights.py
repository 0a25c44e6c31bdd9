"""Pretrained weights of timm backbones and VGG19: ``weights_path``, ``$DEBLUR_WEIGHTS_DIR``, or
the download / cache; else a :class:`PretrainedWeightsError` (nothing is substituted silently)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "DEBLUR_WEIGHTS_DIR"
VGG19_FILE = "vgg19-dcbb9e9d.pth"


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for but neither a download nor a local file could give them."""


def warn_random_weights(what: str) -> None:
    """Log loudly that ``what`` starts from random weights because ``pretrained=false``."""
    bar = "!" * 78
    log.warning(
        "\n%s\n!! RANDOM WEIGHTS: %s is built WITHOUT ImageNet weights (pretrained=false).\n!! "
        "Fine for tests and the offline demo; results are not comparable to pretrained runs.\n%s",
        *(bar, what, bar),
    )


def _local_file(weights_path: str | os.PathLike | None, stems: list[str], what: str) -> Path | None:
    """``weights_path`` (which must exist), else ``$DEBLUR_WEIGHTS_DIR/<stem>.<ext>`` if there."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(
                f"Pretrained weights for {what}: the file '{path}' given as weights_path does "
                "not exist. Put the ImageNet weights file there, correct weights_path in the "
                "config, or set pretrained=false to build random weights (tests / offline demo "
                "only)."
            )
        return path
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    exts = (".safetensors", ".pth", ".pt", ".bin")
    found = [Path(folder) / f"{s}{e}" for s in stems for e in exts] if folder else []
    return next((p for p in found if p.is_file()), None)


def _unreadable(what: str, path: Path, err: Exception, expected: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"Pretrained weights for {what}: the file '{path}' could not be loaded "
        f"({type(err).__name__}: {str(err)[:300]}). It must be {expected}. Replace the file, "
        "or set pretrained=false to build random weights."
    )


def _check_timm_file(name: str, path: Path) -> None:
    """Raise ValueError unless ``path`` holds every backbone tensor of timm's ``name`` (timm
    loads feature extractors non-strictly: a wrong file would otherwise load silently)."""
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    head = tuple(f"{n}." for n, m in reference.named_modules() if m is reference.get_classifier())
    own = {k: v for k, v in reference.state_dict().items() if not k.startswith(head)}
    state = timm.models.load_state_dict(str(path))
    problems = [k for k, v in own.items() if k not in state or state[k].shape != v.shape]
    if problems:
        raise ValueError(f"{len(problems)} tensors missing or mis-shaped (e.g. {problems[:3]})")


def create_timm(
    name: str, pretrained: bool, weights_path: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with ImageNet weights from the hub or a local file
    (``pretrained=false``: random weights, logged loudly)."""
    if not pretrained:
        warn_random_weights(f"timm model '{name}'")
        return timm.create_model(name, pretrained=False, **kwargs)
    local = _local_file(weights_path, [name], f"timm model '{name}'")
    if local is not None:
        log.info("Loading ImageNet weights of %s from %s", name, local)
        try:
            _check_timm_file(name, local)
            kwargs["pretrained_cfg_overlay"] = {"file": str(local)}
            return timm.create_model(name, pretrained=True, **kwargs)
        except (RuntimeError, KeyError, ValueError) as err:
            expected = f"the state_dict of timm's '{name}' classifier (.safetensors, .pth)"
            raise _unreadable(f"timm model '{name}'", local, err, expected) from err
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as err:  # offline: the hub's LocalEntryNotFoundError, URLError, ... are OSErrors
        hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
        source = f"Hugging Face repo '{hub_id}'" if hub_id else "timm's download URL"
        raise PretrainedWeightsError(
            f"Pretrained weights for timm model '{name}' could not be downloaded or found in the "
            f"local cache ({type(err).__name__}): it needs the ImageNet weights of '{name}' from "
            f"{source}. Fix: set weights_path=<file> (gen.weights_path or backbone.weights_path), "
            f"put the file at $DEBLUR_WEIGHTS_DIR/{name}.safetensors (or .pth / .bin), pre-fill "
            "the Hugging Face cache ($HF_HOME) online, or set pretrained=false for random weights "
            "(tests / offline demo only)."
        ) from err


def _vgg19_features_random() -> nn.Sequential:
    """VGG19's ``features`` with torchvision's init, without building its 100 M-parameter head."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def create_vgg19_features(
    pretrained: bool, weights_path: str | os.PathLike | None = None
) -> nn.Sequential:
    """torchvision VGG19 ``features`` (ImageNet weights from torchvision's cache/download or a
    local state_dict file: the full model's or only its ``features.*`` keys)."""
    from torchvision.models import VGG19_Weights, vgg19

    if not pretrained:
        warn_random_weights("VGG19 of the perceptual loss")
        return _vgg19_features_random()
    local = _local_file(weights_path, ["vgg19", Path(VGG19_FILE).stem], "VGG19")
    if local is not None:
        log.info("Loading VGG19 ImageNet weights from %s", local)
        features = _vgg19_features_random()
        try:
            state = torch.load(local, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            prefix = "features."
            own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            features.load_state_dict(own)
        except (RuntimeError, KeyError, AttributeError, ValueError) as err:
            expected = f"torchvision's VGG19 state_dict ('{VGG19_FILE}', or its 'features.*' keys)"
            raise _unreadable("VGG19", local, err, expected) from err
        return features
    try:
        return vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features
    except OSError as err:  # offline (urllib's URLError)
        cache = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
        raise PretrainedWeightsError(
            f"Pretrained weights for VGG19 (perceptual loss) could not be downloaded "
            f"({type(err).__name__}): it needs torchvision's '{VGG19_FILE}' "
            f"({VGG19_Weights.IMAGENET1K_V1.url}). Fix: copy it to '{cache}' (torchvision's "
            "cache), set the content loss weights_path=<file>, put it at "
            "$DEBLUR_WEIGHTS_DIR/vgg19.pth, or set pretrained=false for a random VGG (tests / "
            "offline demo only: the perceptual term is then meaningless)."
        ) from err
