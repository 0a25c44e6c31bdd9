"""The run record: metrics.json as a typed dataclass, written atomically, read back checked."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import logging
import platform
import subprocess
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Union

from deblur.files import write_bytes_atomic

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
STUDY_GROUPS = ("loss", "disc", "backbone", "gen", "data", "trainer", "experiment", "debug")


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """JSON written atomically (:func:`deblur.files.write_bytes_atomic`)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    write_bytes_atomic(Path(path), text.encode(), what="run record")


#: recorded name -> distribution whose installed version is read (importlib.metadata)
_VERSIONED = {"torch": "torch", "pytorch_lightning": "pytorch-lightning", "timm": "timm"}
_VERSIONED |= {"hydra": "hydra-core", "omegaconf": "omegaconf", "albumentations": "albumentations"}


def versions() -> dict[str, str]:
    """Versions of the packages that decide a result."""
    out = {"python": platform.python_version()}
    for name, dist in _VERSIONED.items():
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(dist)
    return out


@functools.cache
def _code() -> dict[str, Any]:
    try:
        out: dict[str, Any] = {"deblur": version("deblur")}
    except PackageNotFoundError:  # pragma: no cover - always installed
        out = {"deblur": None}

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        status = git("status", "--porcelain", "--untracked-files=no")
        out |= {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}
    return out


def code_version() -> dict[str, Any]:
    """The deblur version and, in a git checkout, its commit and whether it had local changes
    (recorded in metrics.json, outside the run identity)."""
    return dict(_code())


class RecordFieldError(KeyError):
    """Code put a key into a run record that :class:`RunRecord` has no field for."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RunRecord:
    """The ``metrics.json`` of a run folder, the one schema of every writer and reader
    (docs/DESIGN.md): a ``None`` field is absent from the file, setting a name that is not a
    field raises :class:`RecordFieldError`; unknown keys of other versions stay in :attr:`extra`."""

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
    # evaluate / robustness (deblur.eval)
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

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "a run record") -> RunRecord:
        """A record from a metrics.json object; ``ValueError`` names a field of the wrong type."""
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
                raise ValueError(
                    f"{source}: field '{key}' is {_JSON_NAMES.get(type(value), 'a value')} in "
                    f"JSON, not {_JSON_NAMES[allowed[0]]}"
                )
            values[key] = value
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The set fields in schema order, then ``extra``."""
        out = {k: getattr(self, k) for k in self.fields() if getattr(self, k) is not None}
        return out | {k: v for k, v in self.extra.items() if k not in out}

    def write(self, run_dir: str | Path) -> None:
        write_json_atomic(Path(run_dir) / METRICS_FILE, self.to_json())

    @staticmethod
    def _check(key: str) -> None:
        if key not in _FIELDS:
            raise RecordFieldError(
                f"'{key}' is not a field of the run record (metrics.json). Add it to "
                "deblur.runs.RunRecord (with its type) and to docs/DESIGN.md's schema."
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "extra":
            self._check(name)
        super().__setattr__(name, value)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several fields at once; none when one of the keys is not a field."""
        for key in values:
            self._check(key)
        for key, value in values.items():
            setattr(self, key, value)


def _json_types(hint: Any) -> tuple[type, ...]:
    """The types json.loads gives for a field annotation (``dict[str, Any] | None``: dict)."""
    union = typing.get_origin(hint) in (Union, types.UnionType)
    part = next(a for a in typing.get_args(hint) if a is not type(None)) if union else hint
    origin = typing.get_origin(part) or part
    return (float, int) if origin is float else (origin,)


_FIELDS = frozenset(RunRecord.fields())
_JSON_TYPES = {
    name: _json_types(hint)
    for name, hint in typing.get_type_hints(RunRecord).items()
    if name != "extra"
}
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}
_JSON_NAMES |= {float: "a number", bool: "true/false"}


def read_metrics(run_dir: str | Path) -> RunRecord | None:
    """The record of ``run_dir``; None when it has none or it is unreadable (a warning)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        log.warning("Unreadable %s (%s): the run is treated as not finished.", path, err)
        return None
