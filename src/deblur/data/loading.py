"""``data.num_workers=auto`` and ``data.cache=auto``: loader settings chosen from the machine.

On a GPU trainer the loader must keep up with the device (~600 pairs/s at batch 16): every core
but two (the training process, its pin-memory thread) loads, and the decoded images stay in RAM
when they fit in half of what is free. On the CPU the workers would take the training threads'
cores: ``auto`` is two workers and no cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from deblur.data.io import DataError, image_size

log = logging.getLogger(__name__)

AUTO = "auto"


def processes_per_node() -> int:
    """Training processes sharing this node's cores and RAM (DDP: one per GPU)."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(setting: int | str, on_gpu: bool) -> int:
    """An int as given; ``auto``: (cores - 2) / processes on a GPU (>= 1), else min(2, cores)."""
    if setting != AUTO:
        return int(setting)
    cores = _cores()
    workers = max(1, (cores - 2) // processes_per_node()) if on_gpu else min(2, cores)
    device = "GPU" if on_gpu else "CPU"
    log.info(
        f"data.num_workers=auto: {workers} loader worker(s) ({cores} cores, {device} trainer)."
    )
    return workers


def available_ram() -> int:
    """Bytes of RAM the kernel can give without swapping (MemAvailable), 0 if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def decoded_bytes(paths: Iterable[Path]) -> int:
    """Bytes of the decoded uint8 RGB images at ``paths`` (from the file headers)."""
    total = 0
    for path in set(paths):
        try:
            h, w = image_size(path)
        except DataError:  # named when the pair is loaded
            continue
        total += h * w * 3
    return total


def cache_decision(setting: bool | str, on_gpu: bool, paths: Iterable[Path]) -> bool:
    """A bool as given; ``auto``: on a GPU trainer, when the decoded images fit in half of the
    free RAM (shared by the node's processes), said in the log."""
    if setting != AUTO:
        return bool(setting)
    if not on_gpu:
        return False
    need = decoded_bytes(paths)
    budget = available_ram() // (2 * processes_per_node())
    cache = 0 < need <= budget
    where = "cached in RAM" if cache else "read from disk each epoch (data.cache=true forces it)"
    log.info(
        f"data.cache=auto: the decoded images take {need / 2**30:.2f} GiB, half the free RAM per "
        f"process is {budget / 2**30:.2f} GiB: {where}."
    )
    return cache
