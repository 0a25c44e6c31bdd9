"""A run's identity: the config keys that define its result and the content of its start files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from deblur.checkpoints import describe_diff
from deblur.config import to_container
from deblur.errors import UserError
from deblur.files import file_sha256
from deblur.runs.discover import resolve_classifier_checkpoint

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


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out = {path: v for k, n in node.items() for path, v in _flatten(n, f"{prefix}{k}.").items()}
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(node) if isinstance(node, list | tuple) else node}


def identify(cfg: Mapping[str, Any] | DictConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """(identity ``{"hash": sha256 hex, "config": {flat key: value}}``: what decides the run's
    result, start files ``{key: file}``: ``disc.checkpoint=auto`` resolved to a classifier
    run's best.ckpt), from one pass over the resolved config."""
    flat = _flatten(to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg))
    files: dict[str, str] = {}
    for key in START_FILE_KEYS:
        value = str(flat.get(key) or "")
        if key == "disc.checkpoint" and value.startswith("auto"):
            where = (str(flat.get("backbone.name")), flat.get("runs_dir", "runs"), flat.get("seed"))
            value = str(resolve_classifier_checkpoint(value, *where))
        if value:
            files[key] = value
    skip = tuple(f"{x}." for x in IDENTITY_EXCLUDE)  # a key and everything below it
    flat = {k: v for k, v in flat.items() if not f"{k}.".startswith(skip)}
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


def changed_config_message(run_dir: Path, diff: list[tuple[str, Any, Any]]) -> str:
    return (
        f"{run_dir} holds a finished run of another configuration: this command differs from it "
        f"in {describe_diff(diff)}. Skipping would report that run's results as this one's, so "
        "nothing was run. Fix: pass overwrite=true to redo the run in this folder (the finished "
        "one is moved to attempts/<n>/), or give this configuration its own folder with another "
        "sweep_name=... or runs_dir=..."
    )
