"""DDP over GPUs or nodes: the launchers that would lose results are refused; validation means
count every image once (:func:`gather_per_image`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import Tensor

from deblur.runs.launch import DistributedLaunchError


def check_launcher(trainer: Any) -> None:
    """Refuse spawn-based strategies (they hand back only the weights: the validation history
    would be lost) and Lightning's own launcher in a Hydra multirun (each process: the sweep)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, _MultiProcessingLauncher):
        raise DistributedLaunchError(
            f"trainer.strategy={type(trainer.strategy).__name__} with start method "
            f"'{getattr(launcher, '_start_method', '?')}' trains in spawned processes and hands "
            "back only the weights, so this run's validation history and metrics.json would be "
            "lost. Use trainer.strategy=ddp_find_unused_parameters_true (trainer=ddp), which runs "
            "the command once per process."
        )
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if isinstance(launcher, _SubprocessScriptLauncher) and multirun:
        raise DistributedLaunchError(
            f"trainer.devices={trainer.num_devices} inside a Hydra multirun (-m) on one "
            "machine: Lightning starts the extra processes by re-running the command line, "
            "which would start the whole sweep again in each. Run the cells as single runs "
            "(one command each), or use hydra/launcher=submitit_slurm with "
            "hydra.launcher.tasks_per_node and gpus_per_node equal to trainer.devices "
            "(README: Several GPUs or nodes)."
        )


def gather_per_image(module: Any, values: Mapping[str, Sequence[Tensor]]) -> dict[str, Tensor]:
    """Every rank's per-image values (name -> its ``Tensor[B]`` list) in dataset order, each image
    once (rank ``r`` holds positions ``r, r + W, ...``), so means are one-process means. Collective."""
    device, trainer = module.device, module.trainer
    local = {
        k: torch.cat([x.reshape(-1) for x in v]) if v else torch.zeros(0, device=device)
        for k, v in values.items()
    }
    world = int(trainer.world_size)
    if world == 1 or not local:
        return local
    keys = list(local)
    n = len(local[keys[0]])  # every key has a value per image
    counts = module.all_gather(torch.tensor(n, device=device)).reshape(-1).tolist()
    width = max(counts)
    block = F.pad(torch.stack([local[k].to(torch.float64) for k in keys]), (0, width - n))
    gathered = module.all_gather(block).reshape(world, len(keys), width)
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if len(loaders) == 1 else None
    sampler = getattr(loaders, "sampler", None)
    total = (
        getattr(sampler, "length", None) if getattr(sampler, "num_replicas", 0) == world else None
    )
    # rank r's j-th value: dataset position r + j * world (>= total: the sampler's padding)
    found = [
        gathered[r, :, j]
        for j in range(width)
        for r in range(world)
        if j < counts[r] and (total is None or r + j * world < total)
    ]
    if not found:
        return {k: torch.zeros(0, dtype=local[k].dtype, device=device) for k in keys}
    table = torch.stack(found, dim=1)
    return {k: table[i].to(local[k].dtype) for i, k in enumerate(keys)}
