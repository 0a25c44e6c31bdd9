"""Torch datasets over :class:`~deblur.data.pairs.Pair` lists (paired and classification views)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deblur.data.io import DataError, read_image, read_kernel, to_tensor
from deblur.data.pairs import Pair
from deblur.data.sampling import split_index

log = logging.getLogger(__name__)

__all__ = ["ClassificationDataset", "ConcatSamples", "ImageCache", "PairedDataset"]

Transform = Callable[..., dict[str, Any]]


class ImageCache:
    """Decoded images kept in RAM, filled up front in the main process.

    DataLoader workers started by ``fork`` share the arrays copy-on-write (numpy buffers are
    never written), so the cache costs its size once, not once per worker.
    """

    def __init__(self, images: dict[Path, np.ndarray] | None = None) -> None:
        self.images: dict[Path, np.ndarray] = dict(images or {})

    @classmethod
    def preload(cls, paths: Iterable[Path], threads: int | None = None) -> ImageCache:
        """Decode every path (threads: cv2 releases the GIL while decoding)."""
        unique = sorted({Path(p) for p in paths})
        threads = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            arrays = list(pool.map(read_image, unique))
        cache = cls(dict(zip(unique, arrays)))
        log.info("Cached %d decoded images (%.1f MiB).", len(cache), cache.nbytes / 2**20)
        return cache

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.images.values())

    def __len__(self) -> int:
        return len(self.images)

    def __contains__(self, path: object) -> bool:
        return Path(path) in self.images  # type: ignore[arg-type]

    def read(self, path: Path) -> np.ndarray:
        """The cached image, or a fresh decode for paths not in the cache."""
        image = self.images.get(path)
        return read_image(path) if image is None else image


def _resolve_cache(cache: bool | ImageCache | None, paths: Iterable[Path]) -> ImageCache | None:
    if cache is True:
        return ImageCache.preload(paths)
    if cache is False or cache is None:
        return None
    return cache


def _reseed(transform: Any, seed: int) -> None:
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class PairedDataset(Dataset):
    """(blurred, sharp) pairs -> ``{"blur", "sharp", "name"}`` tensors in [-1, 1].

    ``transform`` is called as ``transform(image=blur, target=sharp)`` (identical geometry);
    None keeps full-resolution un-augmented images. ``with_kernel`` adds ``"kernel"``
    (``1 x k x k``) for pairs that know their blur kernel; ``uint8`` keeps the images uint8
    (``data.augment_on=gpu``: scaled on the device).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform | None = None,
        cache: bool | ImageCache | None = None,
        with_kernel: bool = False,
        uint8: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.cache = _resolve_cache(cache, (p for q in self.pairs for p in (q.blur, q.sharp)))
        self.with_kernel = with_kernel
        self.uint8 = uint8

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, path: Path) -> np.ndarray:
        return self.cache.read(path) if self.cache is not None else read_image(path)

    def reseed(self, seed: int) -> None:
        """Reseed the augmentation (called per DataLoader worker)."""
        _reseed(self.transform, seed)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded (blurred, sharp) uint8 RGB arrays of pair ``index``, sizes checked."""
        pair = self.pairs[index]
        blur, sharp = self._read(pair.blur), self._read(pair.sharp)
        if blur.shape != sharp.shape:
            raise DataError(
                f"Pair '{pair.name}' has images of different sizes: blurred '{pair.blur}' is "
                f"{blur.shape[1]}x{blur.shape[0]} but sharp '{pair.sharp}' is "
                f"{sharp.shape[1]}x{sharp.shape[0]}. Both images of a pair must be the same "
                "size; fix or remove this pair."
            )
        return blur, sharp

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, sample_seed = split_index(index)
        if sample_seed is not None:
            _reseed(self.transform, sample_seed)
        pair = self.pairs[index]
        blur, sharp = self.load(index)
        if self.transform is not None:
            out = self.transform(image=blur, target=sharp)
            blur, sharp = out["image"], out["target"]
        item: dict[str, Any] = {
            "blur": to_tensor(blur, self.uint8),
            "sharp": to_tensor(sharp, self.uint8),
            "name": pair.name,
        }
        if self.with_kernel and pair.kernel is not None:
            item["kernel"] = torch.from_numpy(read_kernel(pair.kernel))[None]
        return item


class ClassificationDataset(Dataset):
    """Blur-classifier view of pairs: every blurred image is label 1, every sharp image 0.

    Item ``2 i`` is the blurred image of pair ``i``, item ``2 i + 1`` its sharp twin, so the
    classes are balanced and the splits are exactly those of the pairs.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Transform | None = None,
        cache: bool | ImageCache | None = None,
        uint8: bool = False,
    ) -> None:
        self.pairs = list(pairs)
        self.transform = transform
        self.cache = _resolve_cache(cache, (p for q in self.pairs for p in (q.blur, q.sharp)))
        self.uint8 = uint8  # as PairedDataset's

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def reseed(self, seed: int) -> None:
        """Reseed the augmentation (called per DataLoader worker)."""
        _reseed(self.transform, seed)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        index, sample_seed = split_index(index)
        if sample_seed is not None:
            _reseed(self.transform, sample_seed)
        pair = self.pairs[index // 2]
        is_blur = index % 2 == 0
        path = pair.blur if is_blur else pair.sharp
        image = self.cache.read(path) if self.cache is not None else read_image(path)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {
            "image": to_tensor(image, self.uint8),
            "label": torch.tensor(1.0 if is_blur else 0.0),
            "name": f"{pair.name}:{'blur' if is_blur else 'sharp'}",
        }


class ConcatSamples(Dataset):
    """Datasets one after the other, passing the sampler's ``(index, seed, epoch)`` through.

    (``torch.utils.data.ConcatDataset`` takes plain integer indices only.) Index ``i`` of the
    whole is index ``i - offset`` of the dataset it falls in, with the same seed and epoch.
    """

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = [d for d in datasets if len(d) > 0]
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def reseed(self, seed: int) -> None:
        """Reseed every part's augmentation (called per DataLoader worker)."""
        for d in self.datasets:
            if hasattr(d, "reseed"):
                d.reseed(seed)

    def __getitem__(self, index: int | tuple[int, ...]) -> dict[str, Any]:
        rest: tuple[int, ...] = ()
        if isinstance(index, tuple | list):
            index, rest = int(index[0]), tuple(int(v) for v in index[1:])
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"Index {index} out of range for {len(self)} samples.")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = index - self.offsets[part]
        return self.datasets[part][(local, *rest) if rest else local]
