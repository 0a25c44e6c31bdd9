"""Run folders and their metrics.json (docs/DESIGN.md, "Run folders"); modules lowest first:
``record``, ``discover``, ``identity``, ``lock``, ``launch`` (DDP ranks), ``managed`` (the run's life)."""

from deblur.config.compose import IDENTITY_EXCLUDE
from deblur.runs.discover import find_runs, walk_runs_tree
from deblur.runs.identity import RunConfigChangedError, run_identity
from deblur.runs.lock import LOCK_FILE, RunLock, RunLockedError
from deblur.runs.managed import IncompleteRunError, base_record, managed_run, update_record
from deblur.runs.record import (
    METRICS_FILE,
    RESULTS,
    Critic,
    EvalResult,
    RobustnessResult,
    RunRecord,
    TrainResult,
    read_metrics,
    write_json_atomic,
)

__all__ = [
    "IDENTITY_EXCLUDE", "LOCK_FILE", "METRICS_FILE", "IncompleteRunError", "RESULTS", "Critic",
    "EvalResult", "RobustnessResult", "TrainResult",
    "RunConfigChangedError", "RunLock", "RunLockedError", "RunRecord", "base_record",
    "find_runs", "managed_run", "read_metrics", "run_identity", "update_record",
    "walk_runs_tree", "write_json_atomic",
]  # fmt: skip
