"""Data randomness as a pure function of (seed, epoch): exact resume, any number of workers.

The sampler yields ``(index, sample_seed, epoch)``; the dataset reseeds its augmentation with
``sample_seed`` before transforming, so a crop or flip does not depend on which worker loads
the sample, on persistent workers, or on whether the run was resumed from a checkpoint.
Procedural datasets (:mod:`deblur.data.deadleaves`) draw their images from ``(seed, epoch,
index)``: the epoch travels with the index because persistent workers never see a change made
to the dataset object in the main process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[tuple[int, int, int]]):
    """Shuffled (or sequential) indices with per-sample augmentation seeds, fixed by seed + epoch.

    Lightning calls :meth:`set_epoch` at the start of every training epoch, resumed ones included.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = (
            torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        )
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=g)
        epoch = self.epoch
        for i, s in zip(order.tolist(), seeds.tolist()):
            yield i, s, epoch


def split_index(index: int | tuple[int, ...]) -> tuple[int, int | None]:
    """``(index, sample_seed)`` from what the sampler gave (a plain int has no seed)."""
    if isinstance(index, tuple | list):
        return int(index[0]), int(index[1])
    return int(index), None


def split_sample(index: int | tuple[int, ...]) -> tuple[int, int | None, int]:
    """``(index, sample_seed, epoch)`` from what the sampler gave (a plain int: no seed, epoch 0)."""
    if isinstance(index, tuple | list):
        epoch = int(index[2]) if len(index) > 2 else 0
        return int(index[0]), int(index[1]), epoch
    return int(index), None, 0
