"""The run's life: skip, resume, archive, the Hydra files, the record, failure capture."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from deblur.errors import UserError
from deblur.files import write_bytes_atomic
from deblur.inputs import OutputError, ensure_writable_dir
from deblur.runs.identity import check_start, identify, skip_finished
from deblur.runs.launch import follow_rank_zero, is_rank_zero, launch_id
from deblur.runs.lock import LOCK_FILE, RunLock
from deblur.runs.record import (
    METRICS_FILE,
    RESULTS,
    STUDY_GROUPS,
    Critic,
    RunRecord,
    code_version,
    now_iso,
    read_metrics,
    versions,
)

log = logging.getLogger(__name__)

Body = Callable[[Path, RunRecord], None]


class IncompleteRunError(UserError, RuntimeError):
    """Training returned without reaching its planned end or without its checkpoints."""


class ResumeModeError(UserError, ValueError):
    """``resume=`` is neither auto nor never."""


def _hydra():
    return HydraConfig.get() if HydraConfig.initialized() else None


def update_record(run_dir: Path, record: RunRecord) -> None:
    """Rewrite the run's metrics.json (rank 0 only: the other DDP ranks write nothing)."""
    if is_rank_zero():
        record.write(run_dir)


def base_record(cfg: DictConfig, task: str, run_dir: Path) -> RunRecord:
    """The fields every metrics.json has at the start of a run, and its task's empty result (a
    GAN run's critic flags already, so a run that fails early is still placed in its table)."""
    hydra, result = _hydra(), RESULTS[task]()
    choices = hydra.runtime.choices if hydra else {}
    if task == "gan" and "disc" in cfg:  # the one read of disc.frozen on its way to the tables
        result.critic = Critic(pretrained=bool(cfg.disc.checkpoint), frozen=bool(cfg.disc.frozen))
    return RunRecord(
        result=result,
        status="running",
        task=task,
        choices={k: str(v) for k, v in choices.items() if k in STUDY_GROUPS and v is not None},
        seed=cfg.seed,
        overrides=list(hydra.overrides.task) if hydra else [],
        run_dir=str(run_dir),
        started=now_iso(),
        host=socket.gethostname(),
        pid=os.getpid(),
        versions=versions(),
        code=dict(code_version()),
    )


def managed_run(cfg: DictConfig, task: str, body: Body, run_dir: Path | None = None) -> RunRecord:
    """``body(run_dir, record)`` in the locked folder, its status, result (``body`` fills it) and
    any error in metrics.json; a finished run is skipped or refused (docs/DESIGN.md)."""
    hydra = _hydra()
    run_dir = Path(run_dir or (hydra and hydra.runtime.output_dir) or Path(cfg.runs_dir) / task)
    if not is_rank_zero():  # a DDP rank > 0: rank 0 owns the folder and its records
        return follow_rank_zero(cfg, body, run_dir)  # waits for rank 0's start and resume choice
    try:
        ensure_writable_dir(run_dir, "runs_dir")
    except OutputError as err:
        reason = getattr(err.__cause__, "strerror", None) or "no file can be written in it"
        raise OutputError(
            f"The run folder {run_dir} cannot be written (runs_dir={cfg.runs_dir}: {reason}). "
            "Fix: give a writable folder with runs_dir=/path/you/can/write (or DEBLUR_RUNS=...), "
            "or make that folder writable (chmod u+w / a disk that is not read-only)."
        ) from err
    with RunLock(run_dir):
        return _managed_run_locked(cfg, task, body, run_dir)


def _managed_run_locked(cfg: DictConfig, task: str, body: Body, run_dir: Path) -> RunRecord:
    if cfg.resume not in ("auto", "never"):
        raise ResumeModeError(
            f"resume={cfg.resume} is not an option: resume=auto (continue an unfinished run from "
            "its checkpoints/last.ckpt, the default) or resume=never (start it over)."
        )
    previous = read_metrics(run_dir)
    try:  # an error is raised once the record exists (e.g. disc.checkpoint=auto, no classifier)
        (identity, start_files), identity_error = identify(cfg), None
    except Exception as err:  # noqa: BLE001 - raised later, inside the recorded run
        identity, start_files, identity_error = None, {}, err
    if previous is not None and previous.status == "finished" and not cfg.overwrite:
        if identity_error is not None:
            raise identity_error
        return skip_finished(previous, identity, run_dir)
    _prepare_folder(cfg, previous, run_dir)
    record = base_record(cfg, task, run_dir)
    record.launch = launch_id()  # what the DDP ranks > 0 wait for (follow_rank_zero)
    record.identity, record.start_files = identity, start_files or None
    record.previous_status = previous.status if previous is not None else None
    record.resumed_from = str(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    record.write(run_dir)
    start = time.perf_counter()
    print(f"[deblur] {task} run: {run_dir}", flush=True)
    try:
        if identity_error is not None:
            raise identity_error
        check_start(cfg, task, identity, start_files)  # the resume and critic start files
        body(run_dir, record)
    except BaseException as err:  # noqa: BLE001 - record every way a run can end, then re-raise
        _record_failure(record, err, run_dir, start)
        raise
    record.status = "stopped" if record.stopped else "finished"
    record.ended, record.wall_time_s = now_iso(), round(time.perf_counter() - start, 3)
    record.write(run_dir)
    note = f" ({record.stopped}; run it again to continue)" if record.stopped else ""
    print(f"[deblur] {record.status}: {run_dir}{note}", flush=True)
    return record


def _prepare_folder(cfg: DictConfig, previous: RunRecord | None, run_dir: Path) -> None:
    """Resume a run cut short (``running``, ``interrupted``, ``stopped``; not ``failed``: it would
    fail again) from its last.ckpt, or archive the earlier attempt; then write the Hydra files."""
    last = run_dir / "checkpoints" / "last.ckpt"
    cut_short = previous is not None and previous.status in ("running", "interrupted", "stopped")
    if cfg.resume == "auto" and not cfg.get("ckpt_path") and not cfg.overwrite:
        if cut_short and last.is_file():
            cfg.ckpt_path = str(last)
            log.info("Resuming an unfinished run from %s (resume=never starts it over).", last)
            print(
                f"[deblur] resume: {run_dir} stopped while {previous.status}; continuing from "
                f"{last} (pass resume=never to start it over)",
                flush=True,
            )
    hydra = _hydra()
    if previous is not None and not cfg.get("ckpt_path"):
        # the files of the earlier attempt go to attempts/<n>/ (logs, the lock and, when Hydra
        # has already written this attempt's, .hydra stay)
        keep = {"attempts", LOCK_FILE}
        if hydra is None or hydra.output_subdir is not None:
            keep.add(".hydra")
        logs = {p for p in run_dir.glob("*.log") if p.is_file()}
        if movable := [p for p in run_dir.iterdir() if p.name not in keep and p not in logs]:
            n = next(i for i in itertools.count(1) if not (run_dir / "attempts" / str(i)).exists())
            dest = run_dir / "attempts" / str(n)
            dest.mkdir(parents=True)
            for p in movable:
                shutil.move(str(p), str(dest / p.name))
            log.info("Earlier attempt (%s) moved to %s", previous.status, dest)
    if hydra is not None and hydra.output_subdir is None:
        # roots with `hydra.output_subdir: null` get .hydra/ only once the run holds its folder
        # (a refused relaunch must not rewrite a finished run's files)
        files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra})}
        for name, node in {**files, "overrides.yaml": hydra.overrides.task}.items():
            data = OmegaConf.to_yaml(node).encode()
            write_bytes_atomic(run_dir / ".hydra" / name, data, what="config record")


def _stopped_from_outside(err: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also as Lightning reports them (``sys.exit(1)`` after a
    KeyboardInterrupt; ``SIGTERMException`` when SLURM or a scheduler terminates the job)."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, SystemExit) and (
        type(err).__name__ == "SIGTERMException" or isinstance(err.__context__, KeyboardInterrupt)
    )


def _record_failure(record: RunRecord, err: BaseException, run_dir: Path, start: float) -> None:
    """Write how the run ended (``interrupted`` or ``failed``, the error) before re-raising."""
    record.status = "interrupted" if _stopped_from_outside(err) else "failed"
    record.error = {"type": type(err).__name__, "message": str(err)}
    record.error["traceback"] = traceback.format_exc()
    if isinstance(err, OSError) and getattr(err, "filename", None):
        record.error["path"] = str(err.filename)
        record.error["cause"] = err.strerror or os.strerror(err.errno or 0)
    record.ended, record.wall_time_s = now_iso(), round(time.perf_counter() - start, 3)
    path = run_dir / METRICS_FILE
    try:
        record.write(run_dir)
    except OSError as write_err:  # the disk that failed the run may refuse this too
        log.error("Could not record the failure in %s: %s", path, write_err)
        print(f"[deblur] could not record the failure in {path}: {write_err}", flush=True)
    brief = type(err).__name__ if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    print(f"[deblur] {record.status}: {run_dir}: {brief}", flush=True)
