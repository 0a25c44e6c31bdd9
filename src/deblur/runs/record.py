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
def code_version() -> dict[str, Any]:
    """The deblur version and, in a git checkout, its commit and whether it had local changes
    (recorded in metrics.json, outside the run identity; a copy per record)."""
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

    if commit := git("rev-parse", "HEAD"):
        status = git("status", "--porcelain", "--untracked-files=no")
        out |= {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}
    return out


@dataclass(slots=True)
class Critic:
    """A GAN run's discriminator at the start: loaded from a classifier checkpoint or not,
    frozen or not (the columns of Tables 4.3 / 4.4)."""

    pretrained: bool | None = None
    frozen: bool | None = None
    checkpoint: str | None = None
    load_report: dict[str, Any] | None = None  # the classifier weights taken and left


@dataclass(slots=True)
class TrainResult:
    """The result of a ``gan`` or ``classifier`` run (systems.fit)."""

    pretrained_weights: bool | None = None
    precision: str | None = None
    warning: str | None = None
    critic: Critic | None = None  # gan runs only
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


@dataclass(slots=True)
class EvalResult:
    """The result of an ``evaluate`` run: one method on the pairs of one split."""

    method: str | None = None
    method_kind: str | None = None  # model | baseline
    data: str | None = None
    split: str | None = None
    n_images: int | None = None
    final: dict[str, Any] | None = None  # <split>/psnr, <split>/ssim, ... (means)
    input: dict[str, Any] | None = None
    seconds_per_image: float | None = None
    images_per_s: float | None = None
    device: str | None = None
    per_image: list[dict[str, Any]] | None = None
    ckpt: str | None = None
    baseline: str | None = None


@dataclass(slots=True)
class RobustnessResult:
    """The result of a ``robustness`` run: one row per (blur type, size)."""

    ckpt: str | None = None
    split: str | None = None
    n_images: int | None = None
    rows: list[dict[str, Any]] | None = None
    device: str | None = None


Result = TrainResult | EvalResult | RobustnessResult
#: task -> the type of its result
RESULTS: dict[str, type] = {"gan": TrainResult, "classifier": TrainResult}
RESULTS |= {"evaluate": EvalResult, "robustness": RobustnessResult}


@dataclass(slots=True)
class RunRecord:
    """A run folder's ``metrics.json`` (docs/DESIGN.md): what every run has, its task's typed
    :attr:`result`; ``None`` fields are not written, unknown keys stay in :attr:`extra`."""

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
    ended: str | None = None
    wall_time_s: float | None = None
    error: dict[str, Any] | None = None  # type, message, traceback (path, cause for OSErrors)
    stopped: str | None = None  # why a 'stopped' run ended before its planned length
    result: Result | None = None  # the task's result (RESULTS)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "a run record") -> RunRecord:
        """A record from a metrics.json object (``ValueError`` names a field of the wrong type); an
        earlier flat record's result fields go under ``result`` (``disc_*`` under its critic)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} holds {_json_name(data)}, not an object")
        data = dict(data)
        kind = RESULTS.get(data.get("task")) if isinstance(data.get("task"), str) else None
        if kind is not None and "result" not in data:
            data["result"] = _flat_result(data, kind)
        result = data.pop("result", None)
        values, extra = _typed(cls, data, source)
        if result is not None and kind is not None:
            values["result"] = kind(**_typed(kind, result, source, "result.")[0])
        elif result is not None:  # a task this version does not know: kept as it is
            extra["result"] = result
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The set fields in schema order (the result nested), then ``extra``."""
        out = _as_json(self)
        return out | {k: v for k, v in self.extra.items() if k not in out}

    def write(self, run_dir: str | Path) -> None:
        write_json_atomic(Path(run_dir) / METRICS_FILE, self.to_json())


def _as_json(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        value = _as_json(value) if dataclasses.is_dataclass(value) else value
        if f.name != "extra" and value is not None:
            out[f.name] = value
    return out


def _flat_result(data: dict[str, Any], kind: type) -> dict[str, Any]:
    """The result fields of a flat (earlier) record, taken out of ``data``."""
    out = {k: data.pop(k) for k in _hints(kind) if k != "critic" and k in data}
    critic = {k: data.pop(f"disc_{k}") for k in _hints(Critic) if f"disc_{k}" in data}
    return out | ({"critic": critic} if critic and kind is TrainResult else {})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> the dataclass it holds, or the types json.loads gives for it."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        union = typing.get_origin(hint) in (Union, types.UnionType)
        part = next(a for a in typing.get_args(hint) if a is not type(None)) if union else hint
        origin = typing.get_origin(part) or part
        out[name] = part if dataclasses.is_dataclass(part) else _ACCEPTS.get(origin, (origin,))
    return {k: v for k, v in out.items() if k not in ("extra", "result")}


_ACCEPTS = {float: (float, int)}  # a float field takes a JSON integer too


def _typed(
    cls: type, data: Any, source: str, where: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The field values of ``cls`` in ``data`` (type-checked) and the keys it does not know."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{source}: field '{where[:-1]}' is {_json_name(data)} in JSON, not an object"
        )
    hints, values = _hints(cls), {}
    for key, value in data.items():
        allowed = hints.get(key)
        if allowed is None or value is None:
            continue
        if dataclasses.is_dataclass(allowed):
            value = allowed(**_typed(allowed, value, source, f"{where}{key}.")[0])
        elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(
                f"{source}: field '{where}{key}' is {_json_name(value)} in JSON, not "
                f"{_JSON_NAMES[allowed[0]]}"
            )
        values[key] = value
    return values, {k: v for k, v in data.items() if k not in hints}


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}
_JSON_NAMES |= {float: "a number", bool: "true/false"}


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), "a value")


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
