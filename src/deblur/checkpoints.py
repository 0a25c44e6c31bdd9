"""The one owner of checkpoint files: reading and validating them, hashing them, writing them,
and the state dicts and configs in them (:func:`generator_state`, :func:`classifier_state`),
which :mod:`deblur.models.load` builds into networks.

Every file a person names as a checkpoint (``ckpt_path=``, ``disc.checkpoint=``, ``ckpt=``) is
read here, safely (``torch.load(weights_only=True)``: nothing in the file is executed), and any
file that is not a checkpoint of the expected kind (a text file, an empty or cut-off file, a
classifier checkpoint where a GAN one is expected and vice versa) gets one paragraph naming the
path, the key it was given as and the fix (:class:`CheckpointError`).

Writing: :class:`LastCheckpoint` is the one writer of ``last.ckpt`` (Lightning's ModelCheckpoint
writes only ``best.ckpt``). :class:`AtomicCheckpointIO` is the Trainer's CheckpointIO. It writes ``best.ckpt`` /
``last.ckpt`` to a temporary file in the same folder, flushes and fsyncs it and renames it over
the final name, so no file at a final name is ever partial (Lightning's own save goes through a
temporary file that may live on another filesystem, where the final "move" is a copy).
"""

from __future__ import annotations

import copy
import io
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.loops.loop import _Loop
from pytorch_lightning.plugins.io import TorchCheckpointIO

from deblur.errors import UserError
from deblur.files import write_bytes_atomic

log = logging.getLogger(__name__)

TASKS = {"gan": "GAN (python -m deblur.train)", "classifier": "blur-classifier"}


class CheckpointError(UserError, ValueError):
    """A file given as a checkpoint is not a checkpoint of the expected kind."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A file given as a checkpoint does not exist."""


# --------------------------------------------------------------------------- reading


def given_as(key: str | None, path: str | os.PathLike) -> str:
    return f"{key}={path}" if key else f"'{path}'"


def read_checkpoint(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    task: str | None = None,
    fix: str = "",
) -> dict[str, Any]:
    """Load a deblur Lightning checkpoint (a dict with ``state_dict``) safely, or explain why not.

    ``key`` names the config key the path came from (``ckpt_path``, ``disc.checkpoint``);
    ``task`` (``gan`` | ``classifier``) is the kind of run that must have written it; ``fix``
    ends the message of every refusal (what to give instead).
    """
    given = given_as(key, path)
    fix = f" {fix}" if fix else ""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "a folder, not a file" if p.is_dir() else "no such file"
        raise MissingCheckpointError(f"{given}: {what}.{fix}")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{given} is an empty file (0 bytes), not a checkpoint: a run stopped while writing "
            f"it, or the disk was full.{fix}"
        )
    try:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(p, map_location="cpu", weights_only=True)  # the old format
    except Exception as err:  # noqa: BLE001 - every unreadable file gets the same paragraph
        with p.open("rb") as fh:
            head = fh.read(256)
        if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            kind = f"a text file ({size} bytes)"
        elif isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower():
            kind = (
                f"a pickle ({size} bytes) that is not a deblur checkpoint: it holds objects "
                "that safe loading (torch.load weights_only=True) refuses, so it was not run "
                "(a foreign or unsafe pickle); give the .ckpt file a deblur run wrote"
            )
        else:
            detail = str(err).splitlines()[0][:160] if str(err) else "no detail"
            kind = (
                f"not a complete PyTorch file ({size} bytes; torch.load: {type(err).__name__}: "
                f"{detail}): cut off while being written, or another format"
            )
        raise CheckpointError(
            f"{given} is not a readable Lightning checkpoint: it is {kind}.{fix}"
        ) from err
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        held = type(ckpt).__name__ if not isinstance(ckpt, Mapping) else "a dict without state_dict"
        raise CheckpointError(
            f"{given} is a PyTorch file but not a Lightning checkpoint of deblur (it holds "
            f"{held}).{fix}"
        )
    saved = checkpoint_task(ckpt)
    if task is not None and saved is not None and saved != task:
        raise CheckpointError(
            f"{given} comes from a {saved} run ({TASKS.get(saved, saved)}); the checkpoint "
            f"of a {task} run ({TASKS.get(task, task)}) is expected here.{fix}"
        )
    return dict(ckpt)


def checkpoint_cfg(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The run config a deblur checkpoint stores (``hyper_parameters["cfg"]``), {} when absent."""
    cfg = (ckpt.get("hyper_parameters") or {}).get("cfg") or {}
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def checkpoint_task(ckpt: Mapping[str, Any]) -> str | None:
    """``gan`` or ``classifier`` (from the stored config, else from the state-dict prefixes)."""
    task = checkpoint_cfg(ckpt).get("task")
    if task is not None:
        return str(task)
    keys = list((ckpt.get("state_dict") or {}).keys())
    if keys and all(str(k).startswith("net.") for k in keys):
        return "classifier"
    if any(str(k).startswith(("generator.", "discriminator.")) for k in keys):
        return "gan"
    return None


def read_classifier_checkpoint(path: str | os.PathLike, key: str = "disc.checkpoint") -> dict:
    """A blur-classifier checkpoint, to start a GAN's discriminator from."""
    return read_checkpoint(
        path,
        key=key,
        task="classifier",
        fix="Give the checkpoints/best.ckpt of a finished classifier run "
        "(python -m deblur.train_classifier backbone=<name>), or disc.checkpoint=auto.",
    )


def check_resume_checkpoint(
    ckpt_path: str | Path,
    task: str,
    identity: Mapping[str, Any] | None = None,
    identity_of: Any = None,
) -> dict[str, Any]:
    """``ckpt_path`` must be a full checkpoint (last.ckpt / best.ckpt) of a ``task`` run with
    the same run identity as this run; returns the loaded checkpoint.

    ``identity`` is this run's identity (:func:`deblur.runs.run_identity`); the checkpoint's is
    the one stored in it (``deblur_identity``) or, for checkpoints without one, ``identity_of``
    applied to its stored config.
    """
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
        stored = ckpt.get("deblur_identity")
        theirs = stored.get("config") if isinstance(stored, Mapping) else None
        if theirs is None and identity_of is not None:
            theirs = identity_of(checkpoint_cfg(ckpt))["config"]
        if theirs is not None:
            diff = identity_diff(theirs, identity["config"])
            if diff:
                raise CheckpointError(
                    f"ckpt_path={ckpt_path} is a checkpoint of another run: its configuration "
                    f"differs from this command's in {describe_diff(diff)}. Resuming it would "
                    "continue that run under another configuration (or, if it had finished, "
                    "train nothing and report its results as this run's). Resume with the "
                    "command that started that run, or drop ckpt_path to train this "
                    "configuration from the start."
                )
    return ckpt


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every flat identity key whose value differs ('<absent>' if missing)."""
    absent = "<absent>"
    keys = sorted(set(old) | set(new))
    return [
        (k, old.get(k, absent), new.get(k, absent))
        for k in keys
        if old.get(k, absent) != new.get(k, absent)
    ]


def describe_diff(diff: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    """``loss._target_ (RaGANLSLoss -> WGANGPLoss), seed (0 -> 1)`` for a message."""

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO writing each checkpoint atomically in its own folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options.")
        _save(path, checkpoint)


# --------------------------------------------------------------------------- networks

_GAN_FIX = (
    "Deblurring needs the checkpoints/best.ckpt (or last.ckpt) of a GAN run "
    "(python -m deblur.train); a blur-classifier checkpoint goes to python -m deblur.blur_score "
    "or disc.checkpoint=."
)
_CLASSIFIER_FIX = (
    "Blur scoring needs the checkpoints/best.ckpt of a blur-classifier run "
    "(python -m deblur.train_classifier); a GAN checkpoint goes to python -m deblur.predict."
)


_LoopRestarting = _Loop.restarting  # the plain setter (the fit loop's own forces True)


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt``, the full checkpoint a run resumes from (``resume=auto``).

    Written after every validation (the state next to the newest validation record) and at the
    end of training (the loops marked done: resuming from it trains nothing). A Lightning
    ``Checkpoint``, so the Trainer runs it after the other callbacks and the run statistics it
    saves are up to date. ``dirpath`` is the run folder's ``checkpoints/``, set when the Trainer
    is built.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.dirpath = Path(dirpath)

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            trainer.save_checkpoint(str(self.path), weights_only=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # A resume from the end-of-training checkpoint (between two epochs) of a run with
        # trainer.max_steps: Lightning (2.6) treats every iteration-based fit as restarting and
        # replays the finished epoch as an empty one, so current_epoch and the sampler's epoch
        # end up one ahead of an uninterrupted run's (other data order, other results). Start
        # the next epoch afresh instead, as a run that had not stopped would.
        loop = trainer.fit_loop
        ep = loop.epoch_progress.current
        between_epochs = ep.ready == ep.started == ep.processed == ep.completed > 0
        if trainer.max_steps != -1 and loop.restarting and between_epochs:
            _LoopRestarting.fset(loop.epoch_loop, False)


def _read_network(
    path: str | os.PathLike, key: str | None, task: str, prefix: str, node: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(how the path was given, state dict, stored run config) of a ``task`` checkpoint whose
    network weights start with ``prefix`` and whose config has the ``node`` that rebuilds it."""
    fix = _GAN_FIX if task == "gan" else _CLASSIFIER_FIX
    given = given_as(key, path)
    ckpt = read_checkpoint(path, key=key, task=task, fix=fix)
    state = ckpt["state_dict"]
    if not any(str(k).startswith(prefix) for k in state):
        what = "generator" if task == "gan" else "classifier"
        raise CheckpointError(f"{given} holds no {what} weights (no `{prefix}*` keys). {fix}")
    cfg = checkpoint_cfg(ckpt)
    value = cfg.get(node)
    if not isinstance(value, Mapping) or (node == "gen" and "_target_" not in value):
        what = "a `gen` node with a `_target_`" if node == "gen" else f"a `{node}` node"
        raise CheckpointError(
            f"{given} stores no run config with {what} (hyper_parameters['cfg']), so its "
            f"network cannot be rebuilt: it was not written by this project's training. {fix}"
        )
    return given, state, cfg


def _without_pretrained(node: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a config node with pretrained weights switched off at every depth (the node and
    nested ones such as a backbone's ``trunk``): the checkpoint holds the trained weights, and
    rebuilding the network must never download or read ImageNet ones."""

    def off(value: Any) -> Any:
        if isinstance(value, Mapping):
            out = {k: off(v) for k, v in value.items()}
            if "pretrained" in out:
                out["pretrained"] = False
            if "weights_path" in out:
                out["weights_path"] = None
            return out
        if isinstance(value, list | tuple):
            return [off(v) for v in value]
        return copy.deepcopy(value)

    top = off(node)
    if "_target_" in top:  # a generator node: its class takes `pretrained`
        top["pretrained"] = False
    return top


def _sub_state(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_state_strict(net: torch.nn.Module, state: dict[str, Any], given: str, what: str) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{given}: the {what} weights do not fit the network rebuilt from the checkpoint's "
            f"own config (missing {len(result.missing_keys)} keys, e.g. "
            f"{result.missing_keys[:3]}; unexpected {len(result.unexpected_keys)}, e.g. "
            f"{result.unexpected_keys[:3]}). The checkpoint was written by another version of "
            "the code or edited by hand; train again, or load it with the version that wrote it."
        )


def generator_state(
    path: str | os.PathLike, use_ema: bool = True, key: str | None = "ckpt"
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(generator state dict without its prefix, the ``gen`` node with pretrained weights off,
    which copy: ``generator`` or ``ema_generator``) of a GAN checkpoint: what a builder needs
    (:func:`deblur.models.load.load_generator`). The EMA copy when there is one and ``use_ema``."""
    _, state, cfg = _read_network(path, key, "gan", "generator.", "gen")
    which = "generator"
    if use_ema and any(str(k).startswith("ema_generator.") for k in state):
        which = "ema_generator"
    return _sub_state(state, which + "."), _without_pretrained(cfg["gen"]), which


def classifier_state(
    path: str | os.PathLike, key: str | None = "ckpt"
) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(classifier state dict without the ``net.`` prefix, its backbone config with pretrained
    weights off, the training crop size or None) of a blur-classifier checkpoint: what a builder
    needs to rebuild the network (:func:`deblur.models.load.load_classifier`)."""
    _, state, cfg = _read_network(path, key, "classifier", "net.", "backbone")
    crop = (cfg.get("data") or {}).get("crop_size")
    return (
        _sub_state(state, "net."),
        _without_pretrained(cfg["backbone"]),
        int(crop) if crop else None,
    )


def save_generator_checkpoint(
    path: str | os.PathLike,
    generator: torch.nn.Module,
    gen_cfg: Mapping[str, Any],
    ema_generator: torch.nn.Module | None = None,
    cfg: Mapping[str, Any] | None = None,
) -> Path:
    """Write a generator in the GAN checkpoint format (e.g. to bring in weights trained elsewhere).

    ``gen_cfg`` is the ``conf/gen`` node (``_target_`` + kwargs) that rebuilds ``generator``.
    """
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    if ema_generator is not None:
        state.update({f"ema_generator.{k}": v for k, v in ema_generator.state_dict().items()})
    run_cfg = {**copy.deepcopy(dict(cfg or {})), "gen": copy.deepcopy(dict(gen_cfg))}
    return _save(path, {"state_dict": state, "hyper_parameters": {"cfg": run_cfg}})


def save_classifier_checkpoint(
    path: str | os.PathLike,
    net: torch.nn.Module,
    backbone_cfg: Mapping[str, Any],
    crop_size: int | None = None,
) -> Path:
    """Write a ``BlurClassifierNet`` in the classifier checkpoint format (``net.*`` keys)."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    run_cfg = {"backbone": copy.deepcopy(dict(backbone_cfg)), "data": {"crop_size": crop_size}}
    return _save(path, {"state_dict": state, "hyper_parameters": {"cfg": run_cfg}})


def _save(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    write_bytes_atomic(Path(path), buf.getbuffer(), what="checkpoint")
    return Path(path)
