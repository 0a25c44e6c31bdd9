"""Run folders and their `metrics.json`: atomic writes, skip-if-finished, failure capture.

Every entry point that produces results runs its body through :func:`managed_run`, so a sweep
can be re-launched: finished runs are skipped (unless ``overwrite=true``); a training run that
was stopped from outside (SLURM time limit, preemption, Ctrl-C, a crash of the machine) continues
from its ``checkpoints/last.ckpt`` (``resume=auto``, the default); failed runs, and stopped ones
under ``resume=never``, are re-run from the start, and the files of the earlier attempt are moved
to ``attempts/<n>/``, never lost.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
STUDY_GROUPS = ("loss", "disc", "backbone", "gen", "data", "trainer", "experiment", "debug")
_KEEP_ON_RETRY = {".hydra", "attempts"}


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and an atomic rename (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when the run has none (or it is unreadable)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("Unreadable %s (%s): the run is treated as not finished.", path, err)
        return None


def versions() -> dict[str, str]:
    """Versions of the packages that decide a result."""
    out = {"python": platform.python_version()}
    for name in ("torch", "pytorch_lightning", "timm", "hydra", "omegaconf", "albumentations"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return out


def hydra_run_dir() -> Path | None:
    """Hydra's output dir of the current job, or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def hydra_choices() -> dict[str, str]:
    """The config-group choices of the current job (loss, disc, backbone, gen, data, ...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if k in STUDY_GROUPS and v is not None}


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _archive_previous_attempt(run_dir: Path) -> Path | None:
    """Move the files of an earlier attempt into attempts/<n>/ (Hydra's .hydra and logs stay)."""
    movable = [
        p
        for p in run_dir.iterdir()
        if p.name not in _KEEP_ON_RETRY and not (p.is_file() and p.suffix == ".log")
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


def base_record(cfg: DictConfig, task: str, run_dir: Path) -> dict[str, Any]:
    """Fields every metrics.json has, whatever the task."""
    choices = hydra_choices()
    record: dict[str, Any] = {
        "status": "running",
        "task": task,
        "choices": choices,
        "seed": cfg.get("seed"),
        "overrides": hydra_overrides(),
        "run_dir": str(run_dir),
        "started": now_iso(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "versions": versions(),
    }
    return record


_STOPPED_FROM_OUTSIDE = ("running", "interrupted")


def _stopped_from_outside(err: BaseException) -> bool:
    """Ctrl-C or SIGTERM, also as Lightning reports them (``sys.exit(1)`` after a
    KeyboardInterrupt; ``SIGTERMException`` when SLURM or a scheduler terminates the job)."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, SystemExit) and (
        type(err).__name__ == "SIGTERMException" or isinstance(err.__context__, KeyboardInterrupt)
    )


def _auto_resume_checkpoint(
    cfg: DictConfig, previous: dict[str, Any] | None, run_dir: Path
) -> Path | None:
    """The last.ckpt to continue from, when ``resume=auto`` and the last attempt was cut short.

    A ``running`` status in metrics.json means the process died without recording an end
    (killed at a time limit, preempted, machine lost); ``interrupted`` is Ctrl-C. A ``failed``
    run is not resumed: its error would most likely repeat.
    """
    mode = str(cfg.get("resume", "auto"))
    if mode not in ("auto", "never"):
        raise ValueError(
            f"resume={mode} is not an option: resume=auto (continue an unfinished run from its "
            "checkpoints/last.ckpt, the default) or resume=never (start it over)."
        )
    if mode == "never" or cfg.get("ckpt_path") or cfg.get("overwrite", False):
        return None
    if previous is None or previous.get("status") not in _STOPPED_FROM_OUTSIDE:
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def managed_run(
    cfg: DictConfig,
    task: str,
    body: Callable[[Path, dict[str, Any]], dict[str, Any]],
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``body(run_dir, record)`` with its status, results and any traceback in metrics.json.

    A finished run is skipped unless ``cfg.overwrite`` is true or ``cfg.ckpt_path`` resumes it.
    A failure is recorded (type, message, traceback) and re-raised so the launcher reports it;
    the other jobs of a multirun go on.
    """
    run_dir = Path(run_dir or hydra_run_dir() or Path(cfg.get("runs_dir", "runs")) / task)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_metrics(run_dir)
    auto = _auto_resume_checkpoint(cfg, previous, run_dir)
    if auto is not None:
        cfg.ckpt_path = str(auto)
        log.info("Resuming an unfinished run from %s (resume=never starts it over).", auto)
        print(
            f"[deblur] resume: {run_dir} stopped while {previous.get('status')}; continuing from "
            f"{auto} (pass resume=never to start it over)",
            flush=True,
        )
    resuming = bool(cfg.get("ckpt_path"))
    if previous is not None and previous.get("status") == "finished" and not resuming:
        if not cfg.get("overwrite", False):
            log.info(
                "Skipping %s: already finished (pass overwrite=true to run it again).", run_dir
            )
            print(f"[deblur] skip (finished): {run_dir}", flush=True)
            return previous
    if previous is not None and not resuming:
        dest = _archive_previous_attempt(run_dir)
        if dest is not None:
            log.info("Earlier attempt (%s) moved to %s", previous.get("status"), dest)

    record = base_record(cfg, task, run_dir)
    if previous is not None:
        record["previous_status"] = previous.get("status")
    if cfg.get("ckpt_path"):
        record["resumed_from"] = str(cfg.ckpt_path)
    path = run_dir / METRICS_FILE
    write_json_atomic(path, record)
    start = time.perf_counter()
    print(f"[deblur] {task} run: {run_dir}", flush=True)
    try:
        results = body(run_dir, record)
    except BaseException as err:  # noqa: BLE001 - record every way a run can end, then re-raise
        record["status"] = "interrupted" if _stopped_from_outside(err) else "failed"
        record["error"] = {
            "type": type(err).__name__,
            "message": str(err),
            "traceback": traceback.format_exc(),
        }
        record["ended"] = now_iso()
        record["wall_time_s"] = round(time.perf_counter() - start, 3)
        write_json_atomic(path, record)
        print(f"[deblur] {record['status']}: {run_dir}: {type(err).__name__}: {err}", flush=True)
        raise
    record.update(results)
    record["status"] = "finished"
    record["ended"] = now_iso()
    record["wall_time_s"] = round(time.perf_counter() - start, 3)
    write_json_atomic(path, record)
    print(f"[deblur] finished: {run_dir}", flush=True)
    return record


def find_runs(paths: list[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every (run_dir, metrics) below the given run or sweep folders (archived attempts excluded)."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for root in paths:
        root = Path(root)
        candidates = [root / METRICS_FILE] if (root / METRICS_FILE).is_file() else []
        candidates += sorted(root.rglob(METRICS_FILE)) if root.is_dir() else []
        for file in dict.fromkeys(candidates):
            if "attempts" in file.relative_to(root).parts:
                continue
            data = read_metrics(file.parent)
            if data is not None:
                found.append((file.parent, data))
    return found


def resolve_classifier_checkpoint(
    spec: str, backbone: str, runs_dir: str | Path, seed: int | None
) -> Path:
    """Turn ``disc.checkpoint=auto[:<sweep>]`` into the best checkpoint of a finished classifier run.

    ``auto`` looks in ``<runs_dir>/table4_2`` (the classifier sweep of Table 4.2); ``auto:<folder>``
    in ``<runs_dir>/<folder>``. The run must be a finished classifier run of the same backbone;
    when several seeds exist the one with the same seed is preferred.
    """
    sweep = spec.split(":", 1)[1] if ":" in spec else "table4_2"
    folder = Path(sweep) if Path(sweep).is_absolute() else Path(runs_dir) / sweep
    matches = []
    if folder.is_dir():
        matches = [
            (d, m)
            for d, m in find_runs([folder])
            if m.get("task") == "classifier"
            and m.get("status") == "finished"
            and m.get("choices", {}).get("backbone") == backbone
        ]
    if not matches:
        raise FileNotFoundError(
            f"disc.checkpoint={spec}: no finished blur-classifier run with backbone={backbone} "
            f"under {folder}. Train the classifiers first, e.g. "
            f"`python -m deblur.train_classifier -m experiment=table4_2` (or "
            f"`python -m deblur.train_classifier backbone={backbone} hydra.run.dir={folder}/backbone={backbone}`), "
            "or give a checkpoint file: disc.checkpoint=/path/to/best.ckpt."
        )
    same_seed = [(d, m) for d, m in matches if m.get("seed") == seed]
    run_dir, _ = sorted(same_seed or matches, key=lambda dm: str(dm[0]))[0]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"disc.checkpoint={spec}: the classifier run {run_dir} is finished but has no "
            f"{ckpt.name}; re-run it with overwrite=true."
        )
    return ckpt
