"""Who writes a run folder when one run spans several processes (DDP over GPUs or nodes).

Rank 0 owns the folder (``metrics.json``, attempts, checkpoints, TensorBoard) and records the
launch's id; the other ranks (:func:`follow_rank_zero`) wait for rank 0 to record this launch,
take its resume decision, train, and write nothing.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deblur.errors import UserError
from deblur.runs.identity import pin_start_files
from deblur.runs.record import read_metrics

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
    pin_start_files(cfg, record.get("start_files"))
    record = dict(record)
    record.update(body(run_dir, record))
    return record


def is_rank_zero() -> bool:
    """False in the non-zero ranks of a multi-process (DDP) run: they neither lock the folder
    nor write metrics.json; rank 0 is the one writer (Lightning saves checkpoints on rank 0)."""
    return launcher_rank() == 0
