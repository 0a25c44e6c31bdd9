"""One place for pretrained weights: timm backbones and torchvision VGG19, online or from a file.

Sources, in order: an explicit ``weights_path`` (config key ``weights_path``), a file named after
the model in the folder ``$DEBLUR_WEIGHTS_DIR``, then the library's own download / cache
(timm: Hugging Face hub cache ``$HF_HOME``; torchvision: ``$TORCH_HOME/hub/checkpoints``).
When none works, :class:`PretrainedWeightsError` says which file is missing and how to provide it.
``pretrained=false`` builds random weights and logs a loud warning; nothing is substituted silently.
"""

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
_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin")
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


def _env_file(stem: str) -> Path | None:
    """The file ``$DEBLUR_WEIGHTS_DIR/<stem>.<ext>`` if the variable is set and the file exists."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for ext in _EXTENSIONS:
        candidate = Path(folder) / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"Pretrained weights for {what}: the file '{path}' given as weights_path does not "
            "exist. Put the ImageNet weights file there, correct weights_path in the config, or "
            "set pretrained=false to build random weights (tests / offline demo only)."
        )
    return path


def _check_timm_file(name: str, path: Path) -> None:
    """Raise ValueError unless ``path`` holds every backbone tensor of timm's ``name``.

    timm loads feature extractors non-strictly, so a wrong file would otherwise load silently.
    """
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    head = {f"{n}." for n, m in reference.named_modules() if m is reference.get_classifier()}
    state = timm.models.load_state_dict(str(path))
    problems = [
        key
        for key, value in reference.state_dict().items()
        if not any(key.startswith(h) for h in head)
        and (key not in state or tuple(state[key].shape) != tuple(value.shape))
    ]
    if problems:
        raise ValueError(
            f"{len(problems)} of its tensors are missing or have other shapes (e.g. {problems[:3]})"
        )


def create_timm(
    name: str, pretrained: bool, weights_path: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with ImageNet weights from the hub or a local file
    (``pretrained=false``: random weights, logged loudly)."""
    if not pretrained:
        warn_random_weights(f"timm model '{name}'")
        return timm.create_model(name, pretrained=False, **kwargs)
    local = _check_file(weights_path, f"timm model '{name}'") if weights_path else _env_file(name)
    if local is not None:
        log.info("Loading ImageNet weights of %s from %s", name, local)
        overlay = dict(file=str(local))
        try:
            _check_timm_file(name, local)
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
            )
        except (RuntimeError, KeyError, ValueError) as err:
            raise PretrainedWeightsError(
                f"Pretrained weights for timm model '{name}': the file '{local}' could not be "
                f"loaded ({type(err).__name__}: {str(err)[:300]}). It must be the state_dict of "
                f"timm's '{name}' classification model (.safetensors / .pth / .bin). Replace the "
                "file, or set pretrained=false to build random weights."
            ) from err
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as err:  # offline: the hub's LocalEntryNotFoundError, URLError, ... are OSErrors
        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        source = f"Hugging Face repo '{hub_id}'" if hub_id else "timm's download URL"
        raise PretrainedWeightsError(
            f"Pretrained weights for timm model '{name}' could not be downloaded or found in the "
            f"local cache ({type(err).__name__}). It needs the ImageNet weights file of "
            f"'{name}' from {source} (e.g. model.safetensors or pytorch_model.bin). Provide it "
            f"one of three ways: set weights_path=<file> in the config (e.g. "
            f"'gen.weights_path=/path/{name}.safetensors' or 'backbone.weights_path=...'); put "
            f"it at $DEBLUR_WEIGHTS_DIR/{name}.safetensors (or .pth/.bin); or pre-fill the "
            "Hugging Face cache ($HF_HOME) on a machine with internet. Or set pretrained=false "
            "to build random weights (tests / offline demo only)."
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
        return _vgg19_features_random()
    if weights_path:
        local = _check_file(weights_path, "VGG19")
    else:
        local = _env_file("vgg19") or _env_file(Path(VGG19_FILE).stem)
    if local is not None:
        log.info("Loading VGG19 ImageNet weights from %s", local)
        features = _vgg19_features_random()
        try:
            state = torch.load(local, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            prefix = "features."
            features.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        except (RuntimeError, KeyError, AttributeError, ValueError) as err:
            raise PretrainedWeightsError(
                f"Pretrained weights for VGG19: the file '{local}' could not be loaded "
                f"({type(err).__name__}: {str(err)[:300]}). It must be torchvision's VGG19 "
                f"state_dict ('{VGG19_FILE}', or only its 'features.*' keys). Replace the file, "
                "or set pretrained=false to build random weights."
            ) from err
        return features
    try:
        return vgg19(weights=VGG19_Weights.IMAGENET1K_V1).features
    except OSError as err:  # offline (urllib's URLError)
        cache = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
        raise PretrainedWeightsError(
            f"Pretrained weights for VGG19 (perceptual loss) could not be downloaded "
            f"({type(err).__name__}). It needs torchvision's '{VGG19_FILE}' "
            f"({VGG19_Weights.IMAGENET1K_V1.url}). Provide it one of three ways: copy it to "
            f"'{cache}' (torchvision's cache, $TORCH_HOME); set the content loss weights_path=<file> "
            f"in the config; or put it at $DEBLUR_WEIGHTS_DIR/vgg19.pth. Or set pretrained=false "
            "to build a random VGG (tests / offline demo only: the perceptual term is then "
            "meaningless)."
        ) from err
