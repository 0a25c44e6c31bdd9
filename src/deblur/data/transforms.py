"""The training augmentations with albumentations 2.x, identical geometry on blurred and sharp:
``data.augment`` (conf/data/_common.yaml) in order, then pad to and randomly crop ``crop_size``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2

from deblur.data.io import DataError, instantiate_node

BORDER_MODES: dict[str, int] = {
    name: getattr(cv2, f"BORDER_{name.upper()}")
    for name in ("constant", "replicate", "reflect", "reflect_101", "wrap")
}
AugmentList = Mapping[str, Any] | Sequence[Any] | None  # data.augment: names -> entries, or a list
PATCH_BORDER = cv2.BORDER_REFLECT_101  # pad-to-crop: images smaller than the crop are mirrored


def build_augmentations(augment: AugmentList) -> list[tuple[str, A.BasicTransform]]:
    """``(name, built transform)`` of the entries of a ``data.augment`` mapping (or list) that
    are on, in order."""
    items = augment.items() if isinstance(augment, Mapping) else enumerate(augment or [])
    built = ((str(key), build_augmentation(spec, str(key))) for key, spec in items)
    return [(key, aug) for key, aug in built if aug is not None]


def build_augmentation(spec: Mapping[str, Any] | None, key: str = "?") -> A.BasicTransform | None:
    """One ``data.augment.<key>`` entry built by Hydra; None when it is off (null or ``p <= 0``);
    a bad entry is a :class:`DataError` naming it."""
    where, entry = f"data.augment.{key}", spec if isinstance(spec, Mapping) else {}
    if spec is None or (entry.get("p") is not None and float(entry["p"]) <= 0.0):
        return None
    border = entry.get("border_mode")
    given: dict[str, int] = {}
    if isinstance(border, str):
        if border not in BORDER_MODES:
            raise DataError(
                f"Unknown border_mode '{border}' in {where}; use one of {sorted(BORDER_MODES)}."
            )
        given["border_mode"] = BORDER_MODES[border]
    fix = f"Fix the entry in conf/data/_common.yaml or its {where}.<key>=... override."
    want = (A.BasicTransform, "an albumentations transform")
    aug = instantiate_node(spec, where, "albumentations.HorizontalFlip", fix, want, **given)
    if hasattr(aug, "border_mode") and border is None:
        raise DataError(
            f"{where}: {spec['_target_']} warps the image but the entry has no border_mode; "
            f"albumentations' default is a black constant border. Add {where}.border_mode "
            "(reflect_101, as the thesis list does)."
        )
    return aug


def _pad_crop(size: int, crop: type[A.BasicTransform]) -> list[A.BasicTransform]:
    """Reflect-pad to and crop (random or centre) a ``size`` square."""
    return [A.PadIfNeeded(size, size, border_mode=PATCH_BORDER), crop(size, size)]


def build_train_transform(
    augment: AugmentList,
    crop_size: int | None,
    paired: bool,
    seed: int | None,
    pre_crop: int | None = None,
) -> A.Compose:
    """The augmentations, then pad to and random-crop ``crop_size`` (``paired``: ``t(image=blur,
    target=sharp)``); ``pre_crop``: a square first (warps ~10x faster), then the centre crop."""
    if pre_crop and crop_size and int(pre_crop) < int(crop_size):
        raise DataError(f"data.pre_crop ({pre_crop}) must be >= data.crop_size ({crop_size}).")
    transforms = _pad_crop(int(pre_crop), A.RandomCrop) if pre_crop and crop_size else []
    transforms += [aug for _, aug in build_augmentations(augment)]
    if crop_size:
        transforms += _pad_crop(int(crop_size), A.CenterCrop if pre_crop else A.RandomCrop)
    targets = {"target": "image"} if paired else None
    return A.Compose(transforms, additional_targets=targets, seed=seed)
