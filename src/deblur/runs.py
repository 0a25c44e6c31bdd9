"""Run folders and their `metrics.json`: identity, one process per folder, atomic writes,
skip-if-finished, resume, failure capture.

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
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf, open_dict

from deblur.checkpoints import (
    MissingCheckpointError,
    describe_diff,
    file_sha256,
    identity_diff,
    write_bytes_atomic,
)
from deblur.errors import UserError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
LOCK_FILE = ".run.lock"
STUDY_GROUPS = ("loss", "disc", "backbone", "gen", "data", "trainer", "experiment", "debug")
_KEEP_ON_RETRY = {".hydra", "attempts", LOCK_FILE}

#: Config keys (and everything below them) that do not change a run's result, left out of its
#: identity: where the run lives, how it is relaunched, how data is fed and what is shown.
IDENTITY_EXCLUDE = (
    "runs_dir",
    "sweep_name",
    "overwrite",
    "resume",
    "ckpt_path",  # exact resume: the result is the same as an uninterrupted run's
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.multiprocessing_context",
    "data.cache",  # RAM cache of the decoded images: the same pixels
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "model.val_image_strips",  # TensorBoard images only
    "model.health_check_every",  # how often NaN/inf is looked for, not the values
    "callbacks.last",  # the writer of last.ckpt (a file of the run, not its result)
    "callbacks.checkpoint.save_last",  # moot since callbacks.last (kept out: older runs match)
)
#: Files a run starts a network from: in the identity by content hash, never by path.
START_FILE_KEYS = (
    "ckpt",  # the checkpoint evaluate / robustness runs measure
    "disc.checkpoint",
    "gen.weights_path",
    "backbone.weights_path",
    "model.content.vgg_weights_path",
)
#: Folder keys: in the identity as absolute paths (``data/x`` and ``/home/me/data/x`` are one).
PATH_KEYS = ("data.root",)


class RunConfigChangedError(UserError, ValueError):
    """A finished run's folder is relaunched with another configuration."""


class RunLockedError(UserError, RuntimeError):
    """Another live process holds the run folder."""


class IncompleteRunError(UserError, RuntimeError):
    """Training returned without reaching its planned end or without its checkpoints."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file in the same folder, fsync and an atomic rename (a crash
    or a full disk never leaves half a file; the error names the path and the cause)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    write_bytes_atomic(Path(path), text.encode(), what="run record")


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


_CODE: dict[str, Any] | None = None


def code_version() -> dict[str, Any]:
    """The deblur package version and, in a git checkout, its commit and whether it had local
    changes (recorded in metrics.json, outside the run identity)."""
    global _CODE
    if _CODE is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out: dict[str, Any] = {"deblur": version("deblur")}
        except PackageNotFoundError:  # pragma: no cover - always installed
            out = {"deblur": None}
        src = Path(__file__).resolve().parent

        def git(*args: str) -> str | None:
            try:
                proc = subprocess.run(
                    ["git", *args], cwd=src, capture_output=True, text=True, timeout=5
                )
            except (OSError, subprocess.SubprocessError):
                return None
            return proc.stdout.strip() if proc.returncode == 0 else None

        commit = git("rev-parse", "HEAD")
        if commit:
            out["git_commit"] = commit
            status = git("status", "--porcelain", "--untracked-files=no")
            out["git_dirty"] = bool(status) if status is not None else None
        _CODE = out
    return dict(_CODE)


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


def _write_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them, for entry points whose root
    config sets ``hydra.output_subdir: null`` so that they are written only once the run holds its
    folder (a refused relaunch must not rewrite a finished run's record)."""
    from hydra.core.hydra_config import HydraConfig

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


# --------------------------------------------------------------------------- the run record


class RecordFieldError(KeyError):
    """Code put a key into a run record that :class:`RunRecord` has no field for."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RunRecord:
    """The ``metrics.json`` of a run folder: the one schema every writer and reader goes through.

    Attribute access (``record.final``) is the API; item access (``record["final"]``,
    ``record.get``, ``record.update(results)``, ``dict(record)``) sees the same fields as the
    JSON file, so a field that is ``None`` is absent, as it is from the file. Only schema
    fields can be set (:class:`RecordFieldError` names any other key). A file written by
    another version keeps its unknown keys in :attr:`extra` (read and written back verbatim);
    fields it lacks are ``None`` (or empty). :meth:`read` refuses a file whose fields have the
    wrong JSON type, as it refuses broken JSON.
    """

    # every run (written by managed_run at the start)
    status: str | None = None  # running | finished | failed | interrupted | stopped
    task: str | None = None  # gan | classifier | evaluate | robustness
    choices: dict[str, str] = field(default_factory=dict)  # Hydra group choices (loss, disc, ...)
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None
    started: str | None = None
    host: str | None = None
    pid: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)  # deblur version, git commit / dirty
    launch: str | None = None  # the launch id DDP ranks > 0 wait for
    identity: dict[str, Any] | None = None  # {"hash", "config"}: see run_identity
    start_files: dict[str, str] | None = None
    previous_status: str | None = None
    resumed_from: str | None = None
    # how it ended
    ended: str | None = None
    wall_time_s: float | None = None
    error: dict[str, Any] | None = None  # type, message, traceback (path, cause for OSErrors)
    stopped: str | None = None  # why a 'stopped' run ended before its planned length
    # training (systems.fit)
    pretrained_weights: bool | None = None
    precision: str | None = None
    warning: str | None = None
    disc_pretrained: bool | None = None
    disc_frozen: bool | None = None
    disc_checkpoint: str | None = None
    disc_load_report: dict[str, Any] | None = None
    final: dict[str, Any] | None = None  # last validation's metrics (val/psnr, val/ssim, ...)
    best: dict[str, Any] | None = None  # best validation's metrics and its epoch
    input: dict[str, Any] | None = None  # the blurred input's own metrics
    history: list[dict[str, Any]] | None = None
    epochs: int | None = None
    iterations: int | None = None
    planned_iterations: int | None = None
    images_per_s: float | None = None
    device: str | None = None
    checkpoints: dict[str, str] | None = None  # {"best": path, "last": path}
    # evaluate / robustness (deblur.evaluation)
    method: str | None = None
    method_kind: str | None = None  # model | baseline
    data: str | None = None
    split: str | None = None
    n_images: int | None = None
    seconds_per_image: float | None = None
    per_image: list[dict[str, Any]] | None = None
    rows: list[dict[str, Any]] | None = None  # robustness: one per (blur type, size)
    ckpt: str | None = None
    baseline: str | None = None
    # keys of other versions of the code, kept as they were
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- JSON form

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "a run record") -> RunRecord:
        """A record from the JSON object of a metrics.json (missing fields: None or empty).

        Raises ``ValueError`` naming the field when a value has the wrong JSON type."""
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{source} holds {_JSON_NAMES.get(type(data), 'a value')}, not an object"
            )
        known = set(cls.fields())
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known or value is None:
                continue
            allowed = _JSON_TYPES[key]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                want = " or ".join(
                    _JSON_NAMES[t] for t in allowed if not (t is int and float in allowed)
                )
                raise ValueError(
                    f"{source}: field '{key}' is {_JSON_NAMES.get(type(value), 'a value')} in "
                    f"JSON, not {want}"
                )
            values[key] = value
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of metrics.json: the set fields in schema order, then ``extra``."""
        out = {k: getattr(self, k) for k in self.fields() if getattr(self, k) is not None}
        return out | {k: v for k, v in self.extra.items() if k not in out}

    def write(self, run_dir: str | Path) -> None:
        """Write ``<run_dir>/metrics.json`` atomically (temporary file, fsync, rename)."""
        write_json_atomic(Path(run_dir) / METRICS_FILE, self.to_json())

    # ---------------------------------------------------------------- item access

    def _check(self, key: str) -> None:
        if key not in self.fields():
            raise RecordFieldError(
                f"'{key}' is not a field of the run record (metrics.json). Add it to "
                "deblur.runs.RunRecord (with its type) and to docs/DESIGN.md's schema."
            )

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self.fields() else self.extra.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check(key)
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.to_json()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return list(self.to_json())

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several fields (a body's results); any key that is not a field is refused."""
        for key in values:
            self._check(key)
        for key, value in values.items():
            setattr(self, key, value)


def _json_types(hint: Any) -> tuple[type, ...]:
    """The Python types json.loads gives for a field annotation (``dict[str, Any] | None``...)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else ()
    out: list[type] = []
    for part in args or (hint,):
        if part is type(None):
            continue
        origin = typing.get_origin(part) or part
        if origin is float:
            out += [float, int]
        elif origin is Any:
            return (object,)
        else:
            out.append(origin)
    return tuple(out)


_JSON_TYPES = {
    name: _json_types(hint)
    for name, hint in typing.get_type_hints(RunRecord).items()
    if name != "extra"
}
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}
_JSON_NAMES |= {float: "a number", bool: "true/false", object: "a value"}


def read_metrics(run_dir: str | Path) -> RunRecord | None:
    """The record of ``run_dir``, or None when it has none or it is unreadable (a warning names
    the file and the problem, e.g. broken JSON or a field of the wrong type)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        log.warning("Unreadable %s (%s): the run is treated as not finished.", path, err)
        return None


# --------------------------------------------------------------------------- identity


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(node) if isinstance(node, list | tuple) else node}


def _excluded(key: str) -> bool:
    return any(key == ex or key.startswith(ex + ".") for ex in IDENTITY_EXCLUDE)


def resolve_start_files(cfg: Mapping[str, Any] | DictConfig) -> dict[str, str]:
    """``{key: file}`` of the files the run starts a network from (``disc.checkpoint=auto``
    resolved to the classifier run's best.ckpt)."""
    from deblur.config import to_container

    plain = to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    flat = _flatten(plain)
    out: dict[str, str] = {}
    for key in START_FILE_KEYS:
        value = flat.get(key)
        if not value:
            continue
        value = str(value)
        if key == "disc.checkpoint" and value.startswith("auto"):
            backbone = (plain.get("backbone") or {}).get("name")
            value = str(
                resolve_classifier_checkpoint(
                    value, str(backbone), plain.get("runs_dir", "runs"), plain.get("seed")
                )
            )
        out[key] = value
    return out


def run_identity(
    cfg: Mapping[str, Any] | DictConfig, start_files: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``{"hash": sha256 hex, "config": {flat key: value}}``: what decides the run's result."""
    from deblur.config import to_container

    plain = to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    files = dict(start_files) if start_files is not None else resolve_start_files(plain)
    flat = {k: v for k, v in _flatten(plain).items() if not _excluded(k)}
    for key, path in files.items():
        p = Path(path).expanduser()
        digest = f"sha256:{file_sha256(p)}" if p.is_file() else f"missing file:{path}"
        flat[key] = digest
        # the same path copied into derived nodes (e.g. system.disc_checkpoint) is content too
        for other, value in flat.items():
            if other != key and value == path:
                flat[other] = digest
    for key in PATH_KEYS:
        if flat.get(key):
            flat[key] = os.path.abspath(os.path.expanduser(str(flat[key])))
    text = json.dumps(flat, sort_keys=True, default=str)
    return {"hash": hashlib.sha256(text.encode()).hexdigest(), "config": dict(sorted(flat.items()))}


def _changed_config_message(run_dir: Path, diff: list[tuple[str, Any, Any]]) -> str:
    return (
        f"{run_dir} holds a finished run of another configuration: this command differs from it "
        f"in {describe_diff(diff)}. Skipping would report that run's results as this one's, so "
        "nothing was run. Fix: pass overwrite=true to redo the run in this folder (the finished "
        "one is moved to attempts/<n>/), or give this configuration its own folder with another "
        "sweep_name=... or runs_dir=..."
    )


# --------------------------------------------------------------------------- one process per folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[str, list[Any]] = {}  # resolved lock path -> [fd, depth]


class RunLock:
    """``<run_dir>/.run.lock``: the PID, host and start time of the process using the folder.

    Taken before anything in the folder is read, moved or written. The file is held with an
    ``flock`` as well, which the system releases when the process dies, however it dies; a lock
    left by a dead process on this host is taken over with a log line. Re-entrant within one
    process (a multirun's jobs run one after another in it).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE

    def _info(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def _refuse(self, info: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"Another process is using the run folder {self.path.parent}: it is locked by PID "
            f"{info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('started', '?')} ({info.get('command', 'command unknown')}). Two "
            "processes in one folder would overwrite each other's checkpoints and metrics.json. "
            "Wait for that run to end, or launch this one into another folder (sweep_name=... or "
            f"runs_dir=...). If that process no longer exists (its machine crashed), delete "
            f"{self.path} and launch again."
        )

    def acquire(self) -> None:
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flock_ok = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(self._info()) from None
                flock_ok = False  # a filesystem without flock: the PID check alone decides
                log.warning("No flock on %s (%s): relying on the PID in the lock.", self.path, err)
            info = self._info()
            host = socket.gethostname()
            if info.get("pid"):
                alive = info.get("host") == host and _pid_alive(int(info["pid"]))
                if info.get("host") != host or (alive and not flock_ok):
                    # another host's process cannot be checked from here; a live PID without
                    # flock support may be a live run
                    raise self._refuse(info)
                msg = (
                    f"Taking over the stale lock {self.path} of PID {info['pid']} on {host} "
                    f"(started {info.get('started', '?')}): that process no longer holds it."
                )
                log.warning(msg)
                print(f"[deblur] {msg}", flush=True)
            record = {
                "pid": os.getpid(),
                "host": host,
                "started": now_iso(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1]

    def release(self) -> None:
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        fd = held[0]
        try:
            os.ftruncate(fd, 0)  # empty = free; the file stays (removing it would race)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as err:  # pragma: no cover - the lock dies with the descriptor anyway
            log.warning("Releasing %s: %s", self.path, err)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# --------------------------------------------------------------------------- the run's life


def is_rank_zero() -> bool:
    """False in the non-zero ranks of a multi-process (DDP) run: they neither lock the folder
    nor write metrics.json; rank 0 is the one writer (Lightning saves checkpoints on rank 0)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        if int(os.environ.get(var, "0") or 0) != 0:
            return False
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(os.environ.get("SLURM_PROCID", "0") or 0) == 0
    return True


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
    """The fields every metrics.json has, whatever the task, at the start of a run."""
    return RunRecord(
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
    from deblur.inputs import OutputError, ensure_writable_dir

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
        from deblur.systems.distributed import follow_rank_zero

        return follow_rank_zero(cfg, body, run_dir)  # waits for rank 0's start and resume choice
    _ensure_run_dir(run_dir, cfg)
    with RunLock(run_dir):
        return _managed_run_locked(cfg, task, body, run_dir)


def _managed_run_locked(
    cfg: DictConfig,
    task: str,
    body: Callable[[Path, RunRecord], Mapping[str, Any]],
    run_dir: Path,
) -> RunRecord:
    _resume_mode(cfg)
    previous = read_metrics(run_dir)
    identity: dict[str, Any] | None = None
    start_files: dict[str, str] = {}
    identity_error: Exception | None = None
    try:
        start_files = resolve_start_files(cfg)
        identity = run_identity(cfg, start_files)
    except Exception as err:  # noqa: BLE001 - e.g. disc.checkpoint=auto without a classifier
        identity_error = err
    if previous is not None and previous.status == "finished":
        if not cfg.get("overwrite", False):
            theirs = previous.identity or {}
            if identity_error is not None:
                raise identity_error
            assert identity is not None
            if not theirs.get("config"):
                log.warning(
                    "%s finished before run identities were recorded: not compared.", run_dir
                )
                print(f"[deblur] skip (finished; no identity recorded to compare): {run_dir}")
                return previous
            diff = identity_diff(theirs["config"], identity["config"])
            if diff:
                raise RunConfigChangedError(_changed_config_message(run_dir, diff))
            log.info(
                "Skipping %s: already finished (pass overwrite=true to run it again).", run_dir
            )
            print(f"[deblur] skip (finished): {run_dir}", flush=True)
            return previous
    auto = _auto_resume_checkpoint(cfg, previous, run_dir)
    if auto is not None:
        cfg.ckpt_path = str(auto)
        log.info("Resuming an unfinished run from %s (resume=never starts it over).", auto)
        print(
            f"[deblur] resume: {run_dir} stopped while {previous.status}; continuing from "
            f"{auto} (pass resume=never to start it over)",
            flush=True,
        )
    resuming = bool(cfg.get("ckpt_path"))
    from hydra.core.hydra_config import HydraConfig

    hydra_wrote = HydraConfig.initialized() and HydraConfig.get().output_subdir is not None
    if previous is not None and not resuming:
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

    record = base_record(cfg, task, run_dir)
    from deblur.systems.distributed import launch_id

    record.launch = launch_id()  # what the DDP ranks > 0 wait for (follow_rank_zero)
    record.identity = identity
    record.start_files = start_files or None
    record.previous_status = previous.status if previous is not None else None
    record.resumed_from = str(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    path = run_dir / METRICS_FILE
    record.write(run_dir)
    start = time.perf_counter()
    print(f"[deblur] {task} run: {run_dir}", flush=True)
    try:
        if identity_error is not None:
            raise identity_error
        results = body(run_dir, record)
    except BaseException as err:  # noqa: BLE001 - record every way a run can end, then re-raise
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
        try:
            record.write(run_dir)
        except OSError as write_err:  # the disk that failed the run may refuse this too
            log.error("Could not record the failure in %s: %s", path, write_err)
            print(f"[deblur] could not record the failure in {path}: {write_err}", flush=True)
        brief = type(err).__name__ if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        print(f"[deblur] {record.status}: {run_dir}: {brief}", flush=True)
        raise
    record.update(results)
    record.status = results.get("status") or "finished"
    record.ended = now_iso()
    record.wall_time_s = round(time.perf_counter() - start, 3)
    record.write(run_dir)
    note = f" ({record.stopped}; run it again to continue)" if record.stopped else ""
    print(f"[deblur] {record.status}: {run_dir}{note}", flush=True)
    return record


def walk_runs_tree(root: str | Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) of every folder below ``root``, in path order: symlinked folders are
    followed (as TensorBoard does) and each real folder visited once (no link loops), archived
    earlier attempts (``attempts/``) are left out."""
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        dirs.sort()
        if real in seen:  # a link loop, or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if d != "attempts"]
        yield Path(folder), names


def find_runs(paths: Iterable[str | Path]) -> list[tuple[Path, RunRecord]]:
    """Every (run folder, record) below the given run or sweep folders (:func:`walk_runs_tree`),
    in path order: the one run discovery of every reader (tables, dashboard, demo,
    ``disc.checkpoint=auto``). Unreadable records are skipped with a warning."""
    found: list[tuple[Path, RunRecord]] = []
    for root in map(Path, paths):
        if not root.is_dir():
            continue
        folders = sorted(d for d, names in walk_runs_tree(root) if METRICS_FILE in names)
        for folder in folders:
            record = read_metrics(folder)
            if record is not None:
                found.append((folder, record))
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
            if m.task == "classifier"
            and m.status == "finished"
            and m.choices.get("backbone") == backbone
        ]
    if not matches:
        raise MissingCheckpointError(
            f"disc.checkpoint={spec}: no finished blur-classifier run with backbone={backbone} "
            f"under {folder}. Train the classifiers first, e.g. "
            f"`python -m deblur.train_classifier -m experiment=table4_2` (or "
            f"`python -m deblur.train_classifier backbone={backbone} hydra.run.dir={folder}/backbone={backbone}`), "
            "or give a checkpoint file: disc.checkpoint=/path/to/best.ckpt."
        )
    same_seed = [(d, m) for d, m in matches if m.seed == seed]
    run_dir, _ = sorted(same_seed or matches, key=lambda dm: str(dm[0]))[0]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise MissingCheckpointError(
            f"disc.checkpoint={spec}: the classifier run {run_dir} is finished but has no "
            f"{ckpt.name}; re-run it with overwrite=true."
        )
    return ckpt
