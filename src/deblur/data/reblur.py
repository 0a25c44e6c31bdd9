"""Training pairs blurred anew every epoch from the sharp training photos (``train_blur=fresh``).

The embedded dataset stores each training photo with ``blurs_per_photo`` fixed kernels: 40 blurred
images in all, which a generator learns by heart within a few hundred iterations (the validation
gain peaks, then fades). :class:`ReblurredPhotos` keeps the photos and draws the blur afresh: for
sample ``index`` of ``epoch`` it augments a random patch of the sharp photo (the training
augmentations, on the sharp image only), blurs it with a new camera-shake kernel of the embedded
dataset's distribution and adds its sensor noise, all as a pure function of
``(seed, epoch, index)``. Blurring after the geometric warps is what a camera does (the warps of
the fixed pairs warp the blur as well). Validation and test keep their stored, fixed pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deblur.data.blur import CameraShake
from deblur.data.io import DataError

__all__ = ["ReblurredPhotos"]


@dataclass
class ReblurredPhotos:
    """``(blurred, sharp, kernel)`` training pairs from sharp photos, blurred per ``(epoch, index)``.

    ``sharp``: the sharp image of each training item (a photo appears once per stored blur, so an
    epoch has as many items as the fixed pairs); ``read``: path -> uint8 RGB image (the decoded-image
    cache); ``transform``: an unpaired albumentations pipeline whose output measures ``size`` plus
    ``blur.margin`` on every side; ``blur``: ``data.embedded``'s kernel and noise keys.
    """

    sharp: Sequence[Path]
    read: Callable[[Path], np.ndarray]
    transform: Any
    size: int
    blur: CameraShake
    seed: int
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not self.sharp:
            raise DataError(
                "data.embedded.train_blur=fresh needs training photos, but the training split is "
                "empty. Use train_blur=fixed, or train_source=procedural alone."
            )
        self.size = int(self.size)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in ``epoch`` (the tag keeps it apart from other uses)."""
        return np.random.default_rng([0x5EB1, int(self.seed), int(epoch), int(index)])

    def pair(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(blurred, sharp, kernel)``: uint8 ``size x size x 3`` twice and the float32 PSF."""
        rng = self.rng(epoch, index)
        photo = self.read(Path(self.sharp[index % len(self.sharp)]))
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(int(rng.integers(2**31 - 1)))
        return self.blur.blur_centre(self.transform(image=photo)["image"], self.size, rng)

    def name(self, epoch: int, index: int) -> str:
        """``<photo item name>/fresh_e<epoch>``: the sample's name in logs and batches."""
        base = self.names[index % len(self.names)] if self.names else f"{index:06d}"
        return f"{base}/fresh_e{epoch}"
