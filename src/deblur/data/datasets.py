"""Torch datasets of file pairs and of pairs made on the fly: items ``{"blur", "sharp", "name"}``
(``task="paired"``) or ``{"image", "label", "name"}`` (the classifier: item ``2 i`` the blurred,
label 1, and ``2 i + 1`` the sharp image, label 0, of pair ``i``). ``uint8`` keeps images uint8
(``data.augment_on=gpu`` scales them on the device)."""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from deblur.data.deadleaves import ProceduralPairs, ReblurredPhotos
from deblur.data.io import DataError, read_image, read_kernel, to_tensor
from deblur.data.pairs import Pair
from deblur.data.sampling import split_sample

log = logging.getLogger(__name__)

Transform = Callable[..., dict[str, Any]]
Made = ProceduralPairs | ReblurredPhotos  # (blurred, sharp, kernel) from (epoch, index)


def _paired_item(blur: np.ndarray, sharp: np.ndarray, name: str, uint8: bool) -> dict[str, Any]:
    return {"blur": to_tensor(blur, uint8), "sharp": to_tensor(sharp, uint8), "name": name}


def _classify_item(image: np.ndarray, is_blur: bool, name: str, uint8: bool) -> dict[str, Any]:
    label, kind = torch.tensor(1.0 if is_blur else 0.0), "blur" if is_blur else "sharp"
    return {"image": to_tensor(image, uint8), "label": label, "name": f"{name}:{kind}"}


class ImageCache(dict[Path, np.ndarray]):
    """Decoded images kept in RAM, filled up front in the main process. DataLoader workers
    started by ``fork`` share the arrays copy-on-write (never written): it costs its size once."""

    def preload(self, paths: Iterable[Path]) -> ImageCache:
        """Decode every path not cached yet (threads: cv2 releases the GIL while decoding)."""
        new = sorted({Path(p) for p in paths} - self.keys())
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            self.update(zip(new, pool.map(read_image, new)))
        mib = sum(a.nbytes for a in self.values()) / 2**20
        log.info("Cached %d decoded images (%.1f MiB).", len(self), mib)
        return self

    def read(self, path: Path) -> np.ndarray:
        """The cached image, or a fresh decode for paths not in the cache."""
        image = self.get(path)
        return read_image(path) if image is None else image


class PairedDataset(Dataset):
    """(blurred, sharp) pairs -> ``{"blur", "sharp", "name"}`` (``with_kernel``: + the kernel);
    ``transform(image=blur, target=sharp)`` or None (full resolution); ``cache``: decoded images."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform | None = None,
        cache: ImageCache | None = None,
        with_kernel: bool = False,
        uint8: bool = False,
    ) -> None:
        self.pairs, self.transform, self.uint8 = list(pairs), transform, uint8
        self.cache, self.with_kernel = ImageCache() if cache is None else cache, with_kernel

    def __len__(self) -> int:
        return len(self.pairs)

    def reseed(self, seed: int | None) -> None:
        """Reseed the augmentation (per sample, from the sampler)."""
        if seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any]:
        index, sample_seed, _ = split_sample(index)
        self.reseed(sample_seed)
        pair = self.pairs[index]
        blur, sharp = self.cache.read(pair.blur), self.cache.read(pair.sharp)
        if blur.shape != sharp.shape:  # data.check_train_files=false: not checked before
            raise DataError(
                f"Pair '{pair.name}' has images of different sizes: blurred '{pair.blur}' is "
                f"{blur.shape[1]}x{blur.shape[0]} but sharp '{pair.sharp}' is "
                f"{sharp.shape[1]}x{sharp.shape[0]}. Both images of a pair must be the same "
                "size; fix or remove this pair."
            )
        if self.transform is not None:
            out = self.transform(image=blur, target=sharp)
            blur, sharp = out["image"], out["target"]
        item = _paired_item(blur, sharp, pair.name, self.uint8)
        if self.with_kernel and pair.kernel is not None:
            item["kernel"] = torch.from_numpy(read_kernel(pair.kernel))[None]
        return item


class ClassificationDataset(PairedDataset):
    """Blur-classifier view of pairs: every blurred image is label 1, every sharp image 0."""

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any]:
        index, sample_seed, _ = split_sample(index)
        self.reseed(sample_seed)
        pair, is_blur = self.pairs[index // 2], index % 2 == 0
        image = self.cache.read(pair.blur if is_blur else pair.sharp)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return _classify_item(image, is_blur, pair.name, self.uint8)


class ProceduralDataset(Dataset):
    """``length`` pairs per epoch from ``pairs``, indexed like the file datasets; the epoch comes
    with the index from the sampler (a plain index: epoch 0)."""

    def __init__(self, pairs: Made, length: int, task: str = "paired", uint8: bool = False) -> None:
        self.pairs, self.n_pairs, self.task, self.uint8 = pairs, int(length), task, uint8

    def __len__(self) -> int:
        return self.n_pairs * (2 if self.task == "classify" else 1)

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any]:
        index, _, epoch = split_sample(index)
        if self.task == "classify":
            blurred, sharp, _ = self.pairs.pair(epoch, index // 2)
            is_blur, name = index % 2 == 0, self.pairs.name(epoch, index // 2)
            return _classify_item(blurred if is_blur else sharp, is_blur, name, self.uint8)
        blurred, sharp, _ = self.pairs.pair(epoch, index)
        return _paired_item(blurred, sharp, self.pairs.name(epoch, index), self.uint8)


class ConcatSamples(ConcatDataset):
    """``torch.utils.data.ConcatDataset`` that passes the sampler's ``(index, seed, epoch)``
    through (its own takes plain integer indices only)."""

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any]:
        index, *rest = index if isinstance(index, tuple | list) else (index,)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][(local, *rest) if rest else local]
