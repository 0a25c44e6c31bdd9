"""Data randomness as a pure function of (seed, epoch): exact resume, any number of workers or
processes (the sampler yields ``(index, sample_seed, epoch)``; docs/DESIGN.md, Data)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from deblur.data.io import DataError


def shard_positions(length: int, num_replicas: int, rank: int, uneven: str) -> list[int]:
    """Positions of the epoch order for ``rank`` of ``num_replicas``: ``drop`` (training) cuts the
    last ``length % num_replicas``, ``pad`` (validation) repeats (gather_per_image cuts those)."""
    per_rank = length // num_replicas if uneven == "drop" else -(-length // num_replicas)
    return [rank + k * num_replicas for k in range(per_rank)]


class EpochSeededSampler(Sampler[tuple[int, int, int]]):
    """Shuffled (or sequential) indices with per-sample augmentation seeds, fixed by seed + epoch
    (:meth:`set_epoch`, resumes included); sharded over the process group: drop (shuffled), pad."""

    def __init__(
        self,
        length: int,
        seed: int = 0,
        shuffle: bool = True,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.length, self.seed, self.shuffle, self.epoch = int(length), int(seed), shuffle, 0
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if dist else 1
        if rank is None:
            rank = torch.distributed.get_rank() if dist else 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside 0..{self.num_replicas - 1}.")
        uneven = "drop" if shuffle else "pad"
        self.positions = shard_positions(self.length, self.num_replicas, self.rank, uneven)
        if self.length > 0 and not self.positions:
            raise DataError(
                f"The training data has {self.length} item(s) but the run has {self.num_replicas} "
                "processes (trainer.devices x trainer.num_nodes), so some process would get none. "
                "Use at least as many training pairs as processes (data.max_train_pairs), or "
                "fewer trainer.devices."
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        n = self.length
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        seeds = torch.randint(0, 2**31 - 1, (n,), generator=g).tolist()
        for p in self.positions:  # a padding position (>= length) repeats an item from the start
            yield order[p % n], seeds[p % n], self.epoch


def split_sample(index: int | tuple[int, ...]) -> tuple[int, int | None, int]:
    """``(index, sample_seed, epoch)`` of a sampler item (a plain int: no seed, epoch 0)."""
    if isinstance(index, tuple | list):
        return int(index[0]), int(index[1]), int(index[2])
    return int(index), None, 0
