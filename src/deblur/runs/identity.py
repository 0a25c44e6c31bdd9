"""A run's identity: the config keys that define its result (all but
:data:`~deblur.config.compose.IDENTITY_EXCLUDE`) and the content of its start files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from deblur.checkpoints import (
    TASKS,
    CheckpointError,
    checkpoint_cfg,
    read_checkpoint,
    read_classifier_checkpoint,
)
from deblur.config.compose import defines_the_run, to_container
from deblur.errors import UserError
from deblur.files import file_sha256
from deblur.runs.discover import resolve_classifier_checkpoint
from deblur.runs.record import RunRecord

log = logging.getLogger(__name__)

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


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out = {path: v for k, n in node.items() for path, v in _flatten(n, f"{prefix}{k}.").items()}
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(node) if isinstance(node, list | tuple) else node}


def identify(cfg: Mapping[str, Any] | DictConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """(identity ``{"hash", "config": {flat key: value}}`` of what decides the result, start files
    ``{key: file}`` with ``disc.checkpoint=auto`` resolved), from one pass over the config."""
    flat = _flatten(to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg))
    files: dict[str, str] = {}
    for key in START_FILE_KEYS:
        value = str(flat.get(key) or "")
        if key == "disc.checkpoint" and value.startswith("auto"):
            where = (str(flat.get("backbone.name")), flat.get("runs_dir", "runs"), flat.get("seed"))
            value = str(resolve_classifier_checkpoint(value, *where))
        if value:
            files[key] = value
    flat = {k: v for k, v in flat.items() if defines_the_run(k)}
    for key, path in files.items():
        p = Path(path).expanduser()
        digest = f"sha256:{file_sha256(p)}" if p.is_file() else f"missing file:{path}"
        # the same path copied into derived nodes (e.g. system.disc_checkpoint) is content too
        flat |= {k: digest for k, v in flat.items() if v == path} | {key: digest}
    for key in PATH_KEYS:
        if flat.get(key):
            flat[key] = os.path.abspath(os.path.expanduser(str(flat[key])))
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    return {"hash": digest, "config": dict(sorted(flat.items()))}, files


def run_identity(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The run identity of a config (:func:`identify`)."""
    return identify(cfg)[0]


def skip_finished(previous: RunRecord, identity: dict[str, Any], run_dir: Path) -> RunRecord:
    """A finished run is skipped: its record, if the config is the same (else one paragraph)."""
    theirs = previous.identity or {}
    if not theirs.get("config"):
        log.warning("%s finished before run identities were recorded: not compared.", run_dir)
        print(f"[deblur] skip (finished; no identity recorded to compare): {run_dir}")
        return previous
    if diff := identity_diff(theirs["config"], identity["config"]):
        raise RunConfigChangedError(
            f"{run_dir} holds a finished run of another configuration: this command differs "
            f"from it in {describe_diff(diff)}. Skipping would report that run's results as this "
            "one's, so nothing was run. Fix: pass overwrite=true to redo the run in this folder "
            "(the finished one is moved to attempts/<n>/), or give this configuration its own "
            "folder with another sweep_name=... or runs_dir=..."
        )
    log.info("Skipping %s: already finished (pass overwrite=true to run it again).", run_dir)
    print(f"[deblur] skip (finished): {run_dir}", flush=True)
    return previous


def check_resume_checkpoint(
    ckpt_path: str | Path, task: str, identity: Mapping[str, Any] | None = None
) -> None:
    """``ckpt_path``: a full checkpoint of a ``task`` run with this run's ``identity``; the
    checkpoint's is its ``deblur_identity``, else that of its stored config."""
    fix = (
        f"Give the checkpoints/last.ckpt of this {task} run, or pass resume=never (and no "
        "ckpt_path) to start the run over."
    )
    ckpt = read_checkpoint(ckpt_path, key="ckpt_path", task=task, fix=fix)
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={ckpt_path} holds weights only (no optimizer and loop state), so "
            "training cannot resume from it. Resume from the run's checkpoints/last.ckpt; to "
            "start a GAN's critic from a classifier, use disc.checkpoint."
        )
    if identity is not None:
        stored = ckpt.get("deblur_identity")  # else: the identity of its stored config
        theirs = stored if isinstance(stored, Mapping) else run_identity(checkpoint_cfg(ckpt))
        if diff := identity_diff(theirs["config"], identity["config"]):
            raise CheckpointError(
                f"ckpt_path={ckpt_path} is a checkpoint of another run: its configuration "
                f"differs from this command's in {describe_diff(diff)}. Resuming it would "
                "continue that run under another configuration (or, if it had finished, train "
                "nothing and report its results as this run's). Resume with the command that "
                "started that run, or drop ckpt_path to train this configuration from the start."
            )


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every flat identity key whose value differs ('<absent>' if missing)."""
    pairs = [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted({*old, *new})]
    return [(k, a, b) for k, a, b in pairs if a != b]


def describe_diff(diff: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """``2 keys: loss._target_ (RaGANLSLoss -> WGANGPLoss), seed (0 -> 1)``."""

    def short(v: Any) -> str:
        s = str(v)
        if s.startswith("sha256:"):
            return s[:15]
        if "." in s and s.count(".") >= 2 and " " not in s:  # a dotted class path
            s = s.rsplit(".", 1)[-1]
        return s if len(s) <= 80 else "..." + s[-77:]

    parts = [f"{k} ({short(a)} -> {short(b)})" for k, a, b in diff[:limit]]
    more = f" and {len(diff) - limit} more keys" if len(diff) > limit else ""
    n = len(diff)
    return f"{n} key{'s' if n != 1 else ''}: " + ", ".join(parts) + more


def check_start(
    cfg: Mapping[str, Any],
    task: str,
    identity: Mapping[str, Any] | None,
    start_files: Mapping[str, str],
) -> None:
    """Before a training run's body: ``ckpt_path`` is a checkpoint of this run, the critic's
    start file (``disc.checkpoint``, ``auto`` resolved) a blur classifier's."""
    if task in TASKS and cfg.get("ckpt_path"):
        check_resume_checkpoint(cfg["ckpt_path"], task, identity)
    if task == "gan" and start_files.get("disc.checkpoint"):
        read_classifier_checkpoint(start_files["disc.checkpoint"])  # one paragraph for any other
