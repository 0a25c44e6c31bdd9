"""One run over several processes (DDP over GPUs or nodes): one writer, one launch, all images.

Under DDP every process runs the entry point: Lightning's own launcher re-runs the command for
local ranks 1..N-1, SLURM starts one task per GPU. Rank 0 owns the run folder (``metrics.json``,
attempts, checkpoints, TensorBoard); the other ranks (:func:`deblur.runs.launch.follow_rank_zero`) wait for rank 0
to record the launch, take its resume decision, train, and write nothing. This module checks the
launcher before any work (:func:`check_launcher`). Validation metrics are
per-image values gathered from every rank (:func:`gather_per_image`): the mean over all
validation images, each counted once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from deblur.runs.launch import DistributedLaunchError


def check_launcher(trainer: Any) -> None:
    """Refuse the multi-process set-ups whose results would be wrong or whose runs would collide.

    Spawn-based strategies (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) train in child
    processes and hand back only the weights, so the run's validation history (``metrics.json``)
    would be lost. Lightning's own launcher (``ddp`` on one machine) re-runs the command line for
    every extra process: inside a Hydra multirun each would start the whole sweep again.
    """
    from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if launcher is None:
        return
    if isinstance(launcher, _MultiProcessingLauncher):
        raise DistributedLaunchError(
            f"trainer.strategy={type(trainer.strategy).__name__} with start method "
            f"'{getattr(launcher, '_start_method', '?')}' trains in spawned processes and hands "
            "back only the weights, so this run's validation history and metrics.json would be "
            "lost. Use trainer.strategy=ddp_find_unused_parameters_true (trainer=ddp), which runs "
            "the command once per process."
        )
    if isinstance(launcher, _SubprocessScriptLauncher):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise DistributedLaunchError(
                f"trainer.devices={trainer.num_devices} inside a Hydra multirun (-m) on one "
                "machine: Lightning starts the extra processes by re-running the command line, "
                "which would start the whole sweep again in each. Run the cells as single runs "
                "(one command each), or use hydra/launcher=submitit_slurm with "
                "hydra.launcher.tasks_per_node and gpus_per_node equal to trainer.devices "
                "(README: Several GPUs or nodes)."
            )


def _flat(values: Sequence[Tensor] | Tensor, device: torch.device) -> Tensor:
    if isinstance(values, Tensor):
        return values.reshape(-1)
    if len(values) == 0:
        return torch.zeros(0, device=device)
    return torch.cat([v.reshape(-1) for v in values])


def _eval_sampler(trainer: Any) -> Any:
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if len(loaders) == 1 else None
    return getattr(loaders, "sampler", None)


def gather_per_image(
    module: Any, values: Mapping[str, Sequence[Tensor] | Tensor]
) -> dict[str, Tensor]:
    """Per-image values of every rank, in dataset order, each validation image once.

    ``values`` maps a name to this rank's per-image values in the order its loader gave them
    (a list of ``Tensor[B]``). With one process they come back concatenated. With several, every
    rank gets every rank's values; the sampler's layout (:func:`deblur.data.sampling.
    shard_positions`: rank ``r`` holds positions ``r, r + W, ...``) puts them back in dataset
    order and drops the padding that made the shards equal, so the mean is the one-process mean
    over the same images. Call it on every rank (it is a collective).
    """
    device = module.device
    local = {k: _flat(v, device) for k, v in values.items()}
    trainer = module.trainer
    world = int(trainer.world_size)
    if world == 1 or not local:
        return local
    keys = list(local)
    dtypes = {k: local[k].dtype for k in keys}
    n = len(local[keys[0]])
    if any(len(local[k]) != n for k in keys):
        raise ValueError(
            f"gather_per_image: values of unequal length {[len(v) for v in local.values()]}."
        )
    counts = module.all_gather(torch.tensor(n, device=device)).reshape(-1).tolist()
    width = max(counts)
    block = torch.zeros(len(keys), width, dtype=torch.float64, device=device)
    for i, k in enumerate(keys):
        block[i, :n] = local[k].to(torch.float64)
    gathered = module.all_gather(block).reshape(world, len(keys), width)
    sampler = _eval_sampler(trainer)
    total = (
        getattr(sampler, "length", None)
        if getattr(sampler, "num_replicas", None) == world
        else None
    )
    columns, positions = [], []
    for r in range(world):
        for j in range(int(counts[r])):
            pos = r + j * world
            if total is None or pos < total:  # positions >= total are the sampler's padding
                columns.append(gathered[r, :, j])
                positions.append(pos)
    if not columns:
        return {k: torch.zeros(0, dtype=dtypes[k], device=device) for k in keys}
    order = sorted(range(len(positions)), key=positions.__getitem__)
    table = torch.stack([columns[i] for i in order], dim=1)
    return {k: table[i].to(dtypes[k]) for i, k in enumerate(keys)}
