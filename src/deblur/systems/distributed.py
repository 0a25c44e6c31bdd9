"""One run over several processes (DDP over GPUs or nodes): one writer, one launch, all images.

Under DDP every process runs the entry point: Lightning's own launcher re-runs the command for
local ranks 1..N-1, SLURM starts one task per GPU. Rank 0 owns the run folder (``metrics.json``,
attempts, checkpoints, TensorBoard); the other ranks (:func:`follow_rank_zero`) wait for rank 0
to record the launch, take its resume decision, train, and write nothing. Validation metrics are
per-image values gathered from every rank (:func:`gather_per_image`): the mean over all
validation images, each counted once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from deblur.errors import UserError

# set by rank 0 for the processes Lightning's launcher starts (they inherit its environment)
_LAUNCH_ENV = "DEBLUR_LAUNCH"
# set by the user for launchers deblur cannot recognise (a manual multi-node start)
USER_LAUNCH_ENV = "DEBLUR_LAUNCH_ID"
# how long a rank > 0 waits for rank 0 to record the launch in metrics.json
WAIT_ENV = "DEBLUR_RANK0_WAIT_S"
_RANK_VARS = ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


class DistributedLaunchError(UserError):
    """A multi-process run was started in a way that cannot give one consistent run folder."""


def launcher_rank() -> int:
    """This process' rank as its launcher's variables give it, before a process group exists
    (for messages; :func:`deblur.runs.is_rank_zero` decides who writes the run folder)."""
    ranks = [int(os.environ[v]) for v in _RANK_VARS if os.environ.get(v, "").isdigit()]
    return max(ranks, default=0)


def _external_launch_id() -> str | None:
    """An id that every process of this launch shares, from the environment of the launcher."""
    if os.environ.get(USER_LAUNCH_ENV):
        return os.environ[USER_LAUNCH_ENV]
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun:{run_id}"
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm:{}.{}:{}".format(
            os.environ["SLURM_JOB_ID"],
            os.environ.get("SLURM_STEP_ID", "-"),
            os.environ.get("SLURM_RESTART_COUNT", "0"),  # a requeued job is a new launch
        )
    return None


def launch_id() -> str:
    """The id rank 0 records in ``metrics.json`` (``launch``) for this launch of the run.

    From SLURM / torchrun / ``DEBLUR_LAUNCH_ID`` when they give one; otherwise a fresh id, which
    rank 0 also exports so that the processes Lightning's launcher starts inherit it.
    """
    found = _external_launch_id()
    if found is not None:
        return found
    new = uuid.uuid4().hex
    os.environ[_LAUNCH_ENV] = new
    return new


def _follower_launch_id() -> str:
    found = _external_launch_id() or os.environ.get(_LAUNCH_ENV)
    if found is None:
        raise DistributedLaunchError(
            f"This process is rank {launcher_rank()} of a multi-process run, but nothing tells it "
            "which launch of the run folder rank 0 started (SLURM with several tasks, torchrun "
            "and Lightning's own launcher do). Export the same unique value in every process, "
            f"e.g. `export {USER_LAUNCH_ENV}=$(date +%s)` on each node before starting it."
        )
    return found


def _set_lightning_rank(rank: int) -> None:
    """Make Lightning's rank-zero-only helpers (logs, TensorBoard) quiet before the trainer exists."""
    from pytorch_lightning.utilities import rank_zero_only

    rank_zero_only.rank = rank


def follow_rank_zero(
    cfg: Any,
    body: Callable[[Path, dict[str, Any]], dict[str, Any]],
    run_dir: Path,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """What a rank > 0 does instead of :func:`deblur.runs.managed_run`: train, write nothing.

    It skips the run when rank 0 will (finished, no ``overwrite``); otherwise it
    waits until ``metrics.json`` records rank 0's start of this launch, resumes from the same
    checkpoint rank 0 chose (``resumed_from``), and runs ``body`` with a copy of rank 0's record.
    """
    from deblur.runs import read_metrics

    rank = max(launcher_rank(), 1)
    _set_lightning_rank(rank)
    launch = _follower_launch_id()
    previous = read_metrics(run_dir)
    if (
        previous is not None
        and previous.get("status") == "finished"
        and previous.get("launch") != launch
        and not cfg.get("overwrite", False)
    ):
        return previous  # rank 0 skips it too (or refuses it): it writes nothing then
    wait = float(timeout_s if timeout_s is not None else os.environ.get(WAIT_ENV, 300))
    deadline = time.monotonic() + wait
    while True:
        record = read_metrics(run_dir)
        if record is not None and record.get("launch") == launch:
            status = record.get("status")
            if status == "running":
                break
            if status != "finished":
                err = record.get("error") or {}
                raise RuntimeError(
                    f"Rank 0 of this run ended with status '{status}' before rank {rank} could "
                    f"join ({err.get('type', '?')}: {err.get('message', '')}); see "
                    f"{run_dir / 'metrics.json'} and rank 0's log."
                )
            return record
        if time.monotonic() > deadline:
            raise DistributedLaunchError(
                f"Rank {rank} waited {wait:.0f} s for rank 0 to start the run in {run_dir} "
                f"(a metrics.json with launch '{launch}'), in vain. Rank 0 most likely failed "
                "before training: see its log (the first task's output). On a slow shared "
                f"file system raise the wait: {WAIT_ENV}=<seconds>."
            )
        time.sleep(0.5)
    if "ckpt_path" in cfg:
        cfg.ckpt_path = record.get("resumed_from")  # rank 0's resume decision, auto ones included
    record = dict(record)
    record.update(body(run_dir, record))
    return record


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
