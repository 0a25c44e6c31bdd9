"""The run's life: skip, resume, archive, the Hydra files, the record, failure capture."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from deblur.checkpoints import identity_diff
from deblur.errors import UserError
from deblur.files import write_bytes_atomic
from deblur.inputs import OutputError, ensure_writable_dir
from deblur.runs.identity import (
    RunConfigChangedError,
    changed_config_message,
    resolve_start_files,
    run_identity,
)
from deblur.runs.launch import follow_rank_zero, is_rank_zero, launch_id
from deblur.runs.lock import LOCK_FILE, RunLock
from deblur.runs.record import (
    METRICS_FILE,
    STUDY_GROUPS,
    RunRecord,
    code_version,
    now_iso,
    read_metrics,
    versions,
)

log = logging.getLogger(__name__)

_KEEP_ON_RETRY = {".hydra", "attempts", LOCK_FILE}


class IncompleteRunError(UserError, RuntimeError):
    """Training returned without reaching its planned end or without its checkpoints."""


def hydra_run_dir() -> Path | None:
    """Hydra's output dir of the current job, or None outside a Hydra app."""
    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def hydra_choices() -> dict[str, str]:
    """The config-group choices of the current job (loss, disc, backbone, gen, data, ...)."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if k in STUDY_GROUPS and v is not None}


def hydra_overrides() -> list[str]:
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, for entry points whose root
    config sets ``hydra.output_subdir: null`` so that they are written only once the run holds its
    folder (a refused relaunch must not rewrite a finished run's record)."""
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return
    hydra_cfg = HydraConfig.get()
    out = run_dir / ".hydra"
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
        ("overrides.yaml", hydra_cfg.overrides.task),
    ):
        write_bytes_atomic(out / name, OmegaConf.to_yaml(node).encode(), what="config record")


def update_record(run_dir: Path, record: RunRecord) -> None:
    """Rewrite the run's metrics.json with ``record`` (rank 0 only: the other DDP ranks hold a
    copy of rank 0's record and write nothing)."""
    if is_rank_zero():
        record.write(run_dir)


def _archive_previous_attempt(run_dir: Path, keep_hydra: bool = True) -> Path | None:
    """Move the files of an earlier attempt into attempts/<n>/ (logs, the lock and, when Hydra
    has already written this attempt's, .hydra stay)."""
    keep = set(_KEEP_ON_RETRY) if keep_hydra else set(_KEEP_ON_RETRY) - {".hydra"}
    movable = [
        p
        for p in run_dir.iterdir()
        if p.name not in keep and not (p.is_file() and p.suffix == ".log")
    ]
    if not movable:
        return None
    attempts = run_dir / "attempts"
    n = 1
    while (attempts / str(n)).exists():
        n += 1
    dest = attempts / str(n)
    dest.mkdir(parents=True)
    for p in movable:
        shutil.move(str(p), str(dest / p.name))
    return dest


def base_record(cfg: DictConfig, task: str, run_dir: Path) -> RunRecord:
    """The fields every metrics.json has, whatever the task, at the start of a run (a GAN
    run's critic flags too, so a run that fails early is still placed in its table)."""
    gan = task == "gan" and "disc" in cfg
    return RunRecord(
        disc_pretrained=bool(cfg.disc.get("checkpoint")) if gan else None,
        disc_frozen=bool(cfg.disc.get("frozen")) if gan else None,
        status="running",
        task=task,
        choices=hydra_choices(),
        seed=cfg.get("seed"),
        overrides=hydra_overrides(),
        run_dir=str(run_dir),
        started=now_iso(),
        host=socket.gethostname(),
        pid=os.getpid(),
        versions=versions(),
        code=code_version(),
    )


_STOPPED_FROM_OUTSIDE = ("running", "interrupted", "stopped")


def _stopped_from_outside(err: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also as Lightning reports them (``sys.exit(1)`` after a
    KeyboardInterrupt; ``SIGTERMException`` when SLURM or a scheduler terminates the job)."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, SystemExit) and (
        type(err).__name__ == "SIGTERMException" or isinstance(err.__context__, KeyboardInterrupt)
    )


class ResumeModeError(UserError, ValueError):
    """``resume=`` is neither auto nor never."""


def _resume_mode(cfg: DictConfig) -> str:
    mode = str(cfg.get("resume", "auto"))
    if mode not in ("auto", "never"):
        raise ResumeModeError(
            f"resume={mode} is not an option: resume=auto (continue an unfinished run from its "
            "checkpoints/last.ckpt, the default) or resume=never (start it over)."
        )
    return mode


def _auto_resume_checkpoint(
    cfg: DictConfig, previous: RunRecord | None, run_dir: Path
) -> Path | None:
    """The last.ckpt to continue from, when ``resume=auto`` and the last attempt was cut short.

    A ``running`` status in metrics.json means the process died without recording an end
    (killed at a time limit, preempted, machine lost); ``interrupted`` is Ctrl-C; ``stopped``
    ended before its planned length (something stopped the trainer early). A ``failed`` run is
    not resumed: its error would most likely repeat.
    """
    mode = _resume_mode(cfg)
    if mode == "never" or cfg.get("ckpt_path") or cfg.get("overwrite", False):
        return None
    if previous is None or previous.status not in _STOPPED_FROM_OUTSIDE:
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def _ensure_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    """Create the run folder, or refuse in one paragraph (before any training) naming
    ``runs_dir`` and the fix when it cannot be written (read-only disk, permissions)."""
    runs_dir = cfg.get("runs_dir", "runs")
    try:
        ensure_writable_dir(run_dir, "runs_dir")
    except OutputError as err:
        reason = getattr(err.__cause__, "strerror", None) or "no file can be written in it"
        raise OutputError(
            f"The run folder {run_dir} cannot be written (runs_dir={runs_dir}: {reason}). Fix: "
            "give a writable folder with runs_dir=/path/you/can/write (or DEBLUR_RUNS=...), or "
            "make that folder writable (chmod u+w / a disk that is not read-only)."
        ) from err


def managed_run(
    cfg: DictConfig,
    task: str,
    body: Callable[[Path, RunRecord], Mapping[str, Any]],
    run_dir: Path | None = None,
) -> RunRecord:
    """Run ``body(run_dir, record)`` with its status, results and any traceback in metrics.json.

    ``body`` gets the run's :class:`RunRecord` (it may set fields and write it with
    :func:`update_record`) and returns its results, fields of the record.

    The folder is locked first (:class:`RunLock`). A finished run of the same identity is
    skipped unless ``cfg.overwrite`` is true; one of another identity is refused naming the keys
    that differ. A failure is recorded (type, message, traceback) and re-raised so the launcher
    reports it; the other jobs of a multirun go on.
    """
    run_dir = Path(run_dir or hydra_run_dir() or Path(cfg.get("runs_dir", "runs")) / task)
    if not is_rank_zero():  # a DDP rank > 0: rank 0 owns the folder and its records
        return follow_rank_zero(cfg, body, run_dir)  # waits for rank 0's start and resume choice
    _ensure_run_dir(run_dir, cfg)
    with RunLock(run_dir):
        return _managed_run_locked(cfg, task, body, run_dir)


def _identity(cfg: DictConfig) -> tuple[dict[str, Any] | None, dict[str, str], Exception | None]:
    """(identity, start files, the error that prevented them): the error is raised once the
    record exists, so it is recorded (e.g. ``disc.checkpoint=auto`` without a classifier)."""
    try:
        start_files = resolve_start_files(cfg)
        return run_identity(cfg, start_files), start_files, None
    except Exception as err:  # noqa: BLE001 - raised later, inside the recorded run
        return None, {}, err


def _skip_finished(
    cfg: DictConfig,
    previous: RunRecord,
    identity: dict[str, Any] | None,
    identity_error: Exception | None,
    run_dir: Path,
) -> RunRecord:
    """A finished run is skipped: its record, if the config is the same (else one paragraph)."""
    if identity_error is not None:
        raise identity_error
    assert identity is not None
    theirs = previous.identity or {}
    if not theirs.get("config"):
        log.warning("%s finished before run identities were recorded: not compared.", run_dir)
        print(f"[deblur] skip (finished; no identity recorded to compare): {run_dir}")
        return previous
    diff = identity_diff(theirs["config"], identity["config"])
    if diff:
        raise RunConfigChangedError(changed_config_message(run_dir, diff))
    log.info("Skipping %s: already finished (pass overwrite=true to run it again).", run_dir)
    print(f"[deblur] skip (finished): {run_dir}", flush=True)
    return previous


def _prepare_folder(
    cfg: DictConfig, previous: RunRecord | None, run_dir: Path, start_files: dict[str, str]
) -> None:
    """Resume an unfinished run from its last.ckpt, or archive the earlier attempt; write the
    Hydra files; pin ``disc.checkpoint=auto`` to the file it resolved to."""
    auto = _auto_resume_checkpoint(cfg, previous, run_dir)
    if auto is not None:
        cfg.ckpt_path = str(auto)
        log.info("Resuming an unfinished run from %s (resume=never starts it over).", auto)
        print(
            f"[deblur] resume: {run_dir} stopped while {previous.status}; continuing from "
            f"{auto} (pass resume=never to start it over)",
            flush=True,
        )
    hydra_wrote = HydraConfig.initialized() and HydraConfig.get().output_subdir is not None
    if previous is not None and not cfg.get("ckpt_path"):
        dest = _archive_previous_attempt(
            run_dir, keep_hydra=hydra_wrote or not HydraConfig.initialized()
        )
        if dest is not None:
            log.info("Earlier attempt (%s) moved to %s", previous.status, dest)
    _write_hydra_files(run_dir, cfg)
    auto_disc = str(OmegaConf.select(cfg, "disc.checkpoint", default=None) or "")
    if auto_disc.startswith("auto") and "disc.checkpoint" in start_files:
        with open_dict(cfg):
            cfg.disc.checkpoint = start_files["disc.checkpoint"]


def _record_failure(record: RunRecord, err: BaseException, run_dir: Path, start: float) -> None:
    """Write how the run ended (``interrupted`` or ``failed``, the error) before re-raising."""
    record.status = "interrupted" if _stopped_from_outside(err) else "failed"
    record.error = {
        "type": type(err).__name__,
        "message": str(err),
        "traceback": traceback.format_exc(),
    }
    if isinstance(err, OSError) and getattr(err, "filename", None):
        record.error["path"] = str(err.filename)
        record.error["cause"] = err.strerror or os.strerror(err.errno or 0)
    record.ended = now_iso()
    record.wall_time_s = round(time.perf_counter() - start, 3)
    path = run_dir / METRICS_FILE
    try:
        record.write(run_dir)
    except OSError as write_err:  # the disk that failed the run may refuse this too
        log.error("Could not record the failure in %s: %s", path, write_err)
        print(f"[deblur] could not record the failure in {path}: {write_err}", flush=True)
    brief = type(err).__name__ if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
    print(f"[deblur] {record.status}: {run_dir}: {brief}", flush=True)


def _managed_run_locked(
    cfg: DictConfig,
    task: str,
    body: Callable[[Path, RunRecord], Mapping[str, Any]],
    run_dir: Path,
) -> RunRecord:
    _resume_mode(cfg)
    previous = read_metrics(run_dir)
    identity, start_files, identity_error = _identity(cfg)
    if previous is not None and previous.status == "finished" and not cfg.get("overwrite", False):
        return _skip_finished(cfg, previous, identity, identity_error, run_dir)
    _prepare_folder(cfg, previous, run_dir, start_files)
    record = base_record(cfg, task, run_dir)
    record.launch = launch_id()  # what the DDP ranks > 0 wait for (follow_rank_zero)
    record.identity = identity
    record.start_files = start_files or None
    record.previous_status = previous.status if previous is not None else None
    record.resumed_from = str(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    record.write(run_dir)
    start = time.perf_counter()
    print(f"[deblur] {task} run: {run_dir}", flush=True)
    try:
        if identity_error is not None:
            raise identity_error
        results = body(run_dir, record)
    except BaseException as err:  # noqa: BLE001 - record every way a run can end, then re-raise
        _record_failure(record, err, run_dir, start)
        raise
    record.update(results)
    record.status = results.get("status") or "finished"
    record.ended = now_iso()
    record.wall_time_s = round(time.perf_counter() - start, 3)
    record.write(run_dir)
    note = f" ({record.stopped}; run it again to continue)" if record.stopped else ""
    print(f"[deblur] {record.status}: {run_dir}{note}", flush=True)
    return record
