"""One run over several processes (DDP): rank 0 owns the folder and records the launch's id;
the other ranks (:func:`follow_rank_zero`) wait for it, take its decisions, write nothing."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from deblur.errors import UserError
from deblur.runs.record import RunRecord, read_metrics

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
    """This process' rank from its launcher's variables, before a process group exists."""
    ranks = [int(os.environ[v]) for v in _RANK_VARS if os.environ.get(v, "").isdigit()]
    return max(ranks, default=0)


def _external_launch_id() -> str | None:
    """An id that every process of this launch shares, from the environment of the launcher."""
    if os.environ.get(USER_LAUNCH_ENV):
        return os.environ[USER_LAUNCH_ENV]
    if (run_id := os.environ.get("TORCHELASTIC_RUN_ID")) and run_id != "none":
        return f"torchrun:{run_id}"
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        env = os.environ
        step, restart = env.get("SLURM_STEP_ID", "-"), env.get("SLURM_RESTART_COUNT", "0")
        return f"slurm:{env['SLURM_JOB_ID']}.{step}:{restart}"  # a requeued job: a new launch
    return None


def launch_id() -> str:
    """The id rank 0 records (``launch``): SLURM's / torchrun's / ``DEBLUR_LAUNCH_ID``, else a
    fresh one, exported for the processes Lightning's launcher starts."""
    if (found := _external_launch_id()) is None:
        found = os.environ[_LAUNCH_ENV] = uuid.uuid4().hex
    return found


def follow_rank_zero(
    cfg: Any, body: Callable[[Path, RunRecord], None], run_dir: Path, timeout_s: float | None = None
) -> RunRecord:
    """A rank > 0's :func:`deblur.runs.managed_run`: skip when rank 0 will; else wait for rank
    0's record of this launch, take its checkpoint, run ``body`` on the record read back."""
    rank = max(launcher_rank(), 1)
    rank_zero_only.rank = rank  # Lightning's rank-zero-only logs quiet before the trainer exists
    launch = _external_launch_id() or os.environ.get(_LAUNCH_ENV)
    if launch is None:
        raise DistributedLaunchError(
            f"This process is rank {rank} of a multi-process run, but nothing tells it which "
            "launch of the run folder rank 0 started (SLURM with several tasks, torchrun and "
            "Lightning's own launcher do). Export the same unique value in every process, e.g. "
            f"`export {USER_LAUNCH_ENV}=$(date +%s)` on each node before starting it."
        )
    previous = read_metrics(run_dir)
    if previous is not None and previous.status == "finished" and previous.launch != launch:
        if not cfg.overwrite:
            return previous  # rank 0 skips it too (or refuses it): it writes nothing then
    wait = float(timeout_s if timeout_s is not None else os.environ.get(WAIT_ENV, 300))
    deadline = time.monotonic() + wait
    while True:
        record = read_metrics(run_dir)
        if record is not None and record.launch == launch:
            if record.status == "running":
                break
            if record.status != "finished":
                err = record.error or {}
                raise RuntimeError(
                    f"Rank 0 of this run ended with status '{record.status}' before rank {rank} "
                    f"could join ({err.get('type', '?')}: {err.get('message', '')}); see "
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
        cfg.ckpt_path = record.resumed_from  # rank 0's resume decision, auto ones included
    body(run_dir, record)
    return record


def is_rank_zero() -> bool:
    """False in the ranks > 0 of a DDP run: they neither lock the folder nor write records."""
    return launcher_rank() == 0
