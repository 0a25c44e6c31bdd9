"""Paired augmentation with albumentations 2.x: identical geometry on the blurred and sharp image.

The training pipeline is the thesis list (HorizontalFlip, ShiftScaleRotate -> ``Affine`` in
albumentations 2.x, Transpose, OpticalDistortion, ElasticTransform), then pad to and randomly
crop ``crop_size``. Normalisation to [-1, 1] happens in :func:`deblur.data.io.to_tensor`
(``x / 127.5 - 1``, i.e. ``Normalize(mean=0.5, std=0.5)``). Each augmentation is a Hydra-style
dict (``_target_`` + parameters, switched off with ``p: 0`` or ``null``); border modes are
explicit (default reflect-101, since albumentations 2.x defaults to a black constant border).
Validation and test use no transform: full-resolution, un-augmented pairs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from deblur.data.io import DataError

__all__ = [
    "BORDER_MODES",
    "THESIS_AUGMENT",
    "build_augmentation",
    "build_train_transform",
]

BORDER_MODES: dict[str, int] = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "reflect_101": cv2.BORDER_REFLECT_101,
    "wrap": cv2.BORDER_WRAP,
}
"""Border-mode names usable in configs (``border_mode: reflect_101``)."""

DEFAULT_BORDER = "reflect_101"

THESIS_AUGMENT: dict[str, dict[str, Any]] = {
    "horizontal_flip": {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
    "affine": {
        "_target_": "albumentations.Affine",
        "p": 0.5,
        "translate_percent": [-0.0625, 0.0625],
        "scale": [0.9, 1.1],
        "rotate": [-45, 45],
        "border_mode": DEFAULT_BORDER,
    },
    "transpose": {"_target_": "albumentations.Transpose", "p": 0.5},
    "optical_distortion": {
        "_target_": "albumentations.OpticalDistortion",
        "p": 0.5,
        "distort_limit": 0.05,
        "border_mode": DEFAULT_BORDER,
    },
    "elastic_transform": {
        "_target_": "albumentations.ElasticTransform",
        "p": 0.5,
        "alpha": 1.0,
        "sigma": 50.0,
        "border_mode": DEFAULT_BORDER,
    },
}
"""The thesis' augmentation list with the old albumentations defaults (conf/data mirrors it)."""


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _border(value: Any, where: str) -> int:
    if isinstance(value, str):
        try:
            return BORDER_MODES[value]
        except KeyError:
            raise DataError(
                f"Unknown border_mode '{value}' in {where}; use one of {sorted(BORDER_MODES)}."
            ) from None
    return int(value)


def build_augmentation(spec: Mapping[str, Any] | None, key: str = "?") -> A.BasicTransform | None:
    """One augmentation from ``{"_target_": "albumentations.X", **params}``; None when off."""
    if spec is None:
        return None
    params = dict(_plain(spec))
    target = params.pop("_target_", None)
    if not target:
        raise DataError(
            f"data.augment.{key} needs a '_target_' (e.g. albumentations.HorizontalFlip)."
        )
    if float(params.get("p", 1.0)) <= 0.0:
        return None
    try:
        cls = get_class(target)
    except Exception as exc:  # hydra wraps import errors in several types
        raise DataError(f"data.augment.{key}: cannot import '{target}' ({exc}).") from exc
    accepted = inspect.signature(cls.__init__).parameters
    if "border_mode" in accepted:
        params["border_mode"] = _border(
            params.get("border_mode", DEFAULT_BORDER), f"data.augment.{key}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data.augment.{key}: {target}({params}) failed: {exc}") from exc


def build_train_transform(
    augment: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    crop_size: int | None = 256,
    paired: bool = True,
    seed: int | None = None,
    pre_crop: int | None = None,
) -> A.Compose:
    """Training pipeline: augmentations (in order), pad to and random-crop ``crop_size``.

    ``augment`` maps names to augmentation dicts (or is a list of them); ``paired`` adds the
    ``target`` image so both images get identical geometry: call ``t(image=blur, target=sharp)``.
    ``pre_crop`` (>= crop_size) first cuts a random ``pre_crop`` square so the augmentations
    warp a patch instead of the whole frame (about 10x faster on 1280x720), then takes the
    centre ``crop_size``; None applies them to the whole image as the thesis did.
    """
    if pre_crop and crop_size and int(pre_crop) < int(crop_size):
        raise DataError(f"data.pre_crop ({pre_crop}) must be >= data.crop_size ({crop_size}).")
    if augment is None:
        items: list[tuple[str, Any]] = []
    elif isinstance(augment, Mapping | DictConfig):
        items = [(str(k), v) for k, v in augment.items()]
    else:
        items = [(str(i), v) for i, v in enumerate(augment)]
    reflect = BORDER_MODES[DEFAULT_BORDER]
    transforms: list[A.BasicTransform] = []
    if pre_crop and crop_size:
        size = int(pre_crop)
        transforms += [A.PadIfNeeded(size, size, border_mode=reflect), A.RandomCrop(size, size)]
    for key, spec in items:
        aug = build_augmentation(spec, key)
        if aug is not None:
            transforms.append(aug)
    if crop_size:
        size = int(crop_size)
        crop = A.CenterCrop(size, size) if pre_crop else A.RandomCrop(size, size)
        transforms += [A.PadIfNeeded(size, size, border_mode=reflect), crop]
    return A.Compose(
        transforms,
        additional_targets={"target": "image"} if paired else None,
        seed=seed,
    )
