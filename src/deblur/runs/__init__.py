"""Run folders and their `metrics.json`: identity, one process per folder, atomic writes,
skip-if-finished, resume, failure capture, several processes, discovery.

Every entry point that produces results runs its body through :func:`managed_run`, so a sweep
can be re-launched: a finished run of the same identity is skipped (unless ``overwrite=true``),
one of another identity is refused naming the keys that differ; a training run that was stopped
from outside (SLURM time limit, preemption, Ctrl-C, a crash of the machine) continues from its
``checkpoints/last.ckpt`` (``resume=auto``, the default); failed runs, and stopped ones under
``resume=never``, are re-run from the start, and the files of the earlier attempt are moved to
``attempts/<n>/``, never lost. A lock file (:class:`RunLock`) keeps a second process out of a
folder that one is using.

A run's **identity** (:func:`run_identity`) is everything that changes its result: the resolved
config without the keys in :data:`IDENTITY_EXCLUDE`, with the content hash (sha256) of every file
it starts a network from (:data:`START_FILE_KEYS`) in place of its path. The code's version is
recorded beside it (``code`` in metrics.json), outside the identity: a new commit does not
invalidate finished runs.

The modules, lowest first: ``record`` (the typed metrics.json), ``discover`` (finding runs,
``disc.checkpoint=auto``), ``identity``, ``lock``, ``launch`` (rank 0 and its followers) and
``managed`` (the run's life).
"""

from deblur.runs.discover import find_runs, resolve_classifier_checkpoint, walk_runs_tree
from deblur.runs.identity import (
    IDENTITY_EXCLUDE,
    PATH_KEYS,
    START_FILE_KEYS,
    RunConfigChangedError,
    resolve_start_files,
    run_identity,
)
from deblur.runs.launch import DistributedLaunchError, follow_rank_zero, is_rank_zero, launch_id
from deblur.runs.lock import LOCK_FILE, RunLock, RunLockedError
from deblur.runs.managed import (
    IncompleteRunError,
    ResumeModeError,
    base_record,
    hydra_choices,
    hydra_overrides,
    hydra_run_dir,
    managed_run,
    update_record,
)
from deblur.runs.record import (
    METRICS_FILE,
    STUDY_GROUPS,
    RecordFieldError,
    RunRecord,
    code_version,
    now_iso,
    read_metrics,
    versions,
    write_json_atomic,
)

__all__ = [
    "IDENTITY_EXCLUDE", "LOCK_FILE", "METRICS_FILE", "PATH_KEYS", "START_FILE_KEYS",
    "STUDY_GROUPS", "DistributedLaunchError", "IncompleteRunError", "RecordFieldError",
    "ResumeModeError", "RunConfigChangedError", "RunLock", "RunLockedError", "RunRecord",
    "base_record", "code_version", "find_runs", "follow_rank_zero", "hydra_choices",
    "hydra_overrides", "hydra_run_dir", "is_rank_zero", "launch_id", "managed_run", "now_iso",
    "read_metrics", "resolve_classifier_checkpoint", "resolve_start_files", "run_identity",
    "update_record", "versions", "walk_runs_tree", "write_json_atomic",
]  # fmt: skip
