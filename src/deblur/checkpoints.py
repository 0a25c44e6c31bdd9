"""Checkpoint files: read and checked (``weights_only=True``; else one :class:`CheckpointError`
naming path, key and fix), the state dicts models.load rebuilds from, and atomic writes."""

from __future__ import annotations

import copy
import io
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

TASKS = {"gan": "GAN (python -m deblur.train)", "classifier": "blur-classifier"}
_FIXES = {
    "gan": "Deblurring needs the checkpoints/best.ckpt (or last.ckpt) of a GAN run (python -m "
    "deblur.train); a blur-classifier checkpoint goes to python -m deblur.blur_score or "
    "disc.checkpoint=.",
    "classifier": "Blur scoring needs the checkpoints/best.ckpt of a blur-classifier run (python "
    "-m deblur.train_classifier); a GAN checkpoint goes to python -m deblur.predict.",
}


class CheckpointError(UserError, ValueError):
    """A file given as a checkpoint is not a checkpoint of the expected kind."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """A file given as a checkpoint does not exist."""


def given_as(key: str | None, path: str | os.PathLike) -> str:
    return f"{key}={path}" if key else f"'{path}'"


def read_checkpoint(
    path: str | os.PathLike, *, key: str | None = None, task: str | None = None, fix: str = ""
) -> dict[str, Any]:
    """A deblur Lightning checkpoint (a dict with ``state_dict``) of a ``task`` run, or one
    paragraph naming ``key`` (where the path came from), the path and ``fix``."""
    given, fix, p = given_as(key, path), f" {fix}" if fix else "", Path(path).expanduser()
    if not p.is_file():
        what = "a folder, not a file" if p.is_dir() else "no such file"
        raise MissingCheckpointError(f"{given}: {what}.{fix}")
    if (size := p.stat().st_size) == 0:
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
        raise CheckpointError(
            f"{given} is not a readable Lightning checkpoint: it is {_kind(p, size, err)}.{fix}"
        ) from err
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        held = type(ckpt).__name__ if not isinstance(ckpt, Mapping) else "a dict without state_dict"
        raise CheckpointError(
            f"{given} is a PyTorch file but not a Lightning checkpoint of deblur (it holds "
            f"{held}).{fix}"
        )
    keys = [str(k) for k in ckpt["state_dict"]]  # an older file's task: told by its weights
    net_only = bool(keys) and all(k.startswith("net.") for k in keys)
    gan = any(k.startswith(("generator.", "discriminator.")) for k in keys)
    by_weights = "classifier" if net_only else "gan" if gan else None
    saved = checkpoint_cfg(ckpt).get("task") or by_weights
    if task is not None and saved is not None and saved != task:
        raise CheckpointError(
            f"{given} comes from a {saved} run ({TASKS.get(saved, saved)}); the checkpoint "
            f"of a {task} run ({TASKS.get(task, task)}) is expected here.{fix}"
        )
    return dict(ckpt)


def _kind(p: Path, size: int, err: Exception) -> str:
    """What an unreadable file is: text, a foreign pickle, or a cut-off or other format."""
    with p.open("rb") as fh:
        head = fh.read(256)
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"a text file ({size} bytes)"
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err).lower():
        return (
            f"a pickle ({size} bytes) that is not a deblur checkpoint: it holds objects that safe "
            "loading (torch.load weights_only=True) refuses, so it was not run (a foreign or "
            "unsafe pickle); give the .ckpt file a deblur run wrote"
        )
    detail = str(err).splitlines()[0][:160] if str(err) else "no detail"
    return (
        f"not a complete PyTorch file ({size} bytes; torch.load: {type(err).__name__}: "
        f"{detail}): cut off while being written, or another format"
    )


def checkpoint_cfg(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The run config a deblur checkpoint stores (``hyper_parameters["cfg"]``), {} when absent."""
    cfg = (ckpt.get("hyper_parameters") or {}).get("cfg") or {}
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def read_classifier_checkpoint(path: str | os.PathLike) -> dict:
    """A blur-classifier checkpoint, to start a GAN's discriminator from."""
    return read_checkpoint(
        path,
        key="disc.checkpoint",
        task="classifier",
        fix="Give the checkpoints/best.ckpt of a finished classifier run "
        "(python -m deblur.train_classifier backbone=<name>), or disc.checkpoint=auto.",
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO writing each checkpoint atomically in its own folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        _save(path, checkpoint)


class LastCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt`` to resume from, after every validation and at the end; a Lightning
    ``Checkpoint``, so it runs after the other callbacks (their saved state is up to date)."""

    def __init__(self, dirpath: str | os.PathLike) -> None:
        self.path = str(Path(dirpath) / "last.ckpt")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Resumed between two epochs with trainer.max_steps, Lightning (2.6) replays the
        # finished epoch as an empty one: current_epoch and the sampler's epoch would run one
        # ahead of an uninterrupted run's (other data order). Start the next epoch afresh.
        loop = trainer.fit_loop
        ep = loop.epoch_progress.current
        between_epochs = ep.ready == ep.started == ep.processed == ep.completed > 0
        if trainer.max_steps != -1 and loop.restarting and between_epochs:
            _Loop.restarting.fset(loop.epoch_loop, False)  # the plain setter, not the fit loop's


def _read_network(
    path: str | os.PathLike, key: str | None, task: str, prefix: str, node: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict, stored run config) of a ``task`` checkpoint with ``prefix`` weights and
    the config ``node`` that rebuilds them."""
    fix, given = _FIXES[task], given_as(key, path)
    ckpt = read_checkpoint(path, key=key, task=task, fix=fix)
    if not any(str(k).startswith(prefix) for k in ckpt["state_dict"]):
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
    return ckpt["state_dict"], cfg


def _without_pretrained(value: Any, top: bool = True) -> Any:
    """A copy of a config node with pretrained weights off at every depth: the checkpoint holds
    the trained weights; rebuilding must never download or read ImageNet ones."""
    if isinstance(value, Mapping):
        out = {k: _without_pretrained(v, top=False) for k, v in value.items()}
        out |= {k: v for k, v in {"pretrained": False, "weights_path": None}.items() if k in out}
        if top and "_target_" in out:  # a generator node: its class takes `pretrained`
            out["pretrained"] = False
        return out
    if isinstance(value, list | tuple):
        return [_without_pretrained(v, top=False) for v in value]
    return copy.deepcopy(value)


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
    """(generator state dict, its ``gen`` node with pretrained weights off, which copy:
    ``ema_generator`` when there is one and ``use_ema``, else ``generator``)."""
    state, cfg = _read_network(path, key, "gan", "generator.", "gen")
    ema = use_ema and any(str(k).startswith("ema_generator.") for k in state)
    which = "ema_generator" if ema else "generator"
    return _sub_state(state, which + "."), _without_pretrained(cfg["gen"]), which


def classifier_state(
    path: str | os.PathLike, key: str | None = "ckpt"
) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(classifier state dict, its backbone node with pretrained weights off, the training crop
    size or None)."""
    state, cfg = _read_network(path, key, "classifier", "net.", "backbone")
    crop = (cfg.get("data") or {}).get("crop_size")
    return _sub_state(state, "net."), _without_pretrained(cfg["backbone"]), crop and int(crop)


def save_generator_checkpoint(
    path: str | os.PathLike,
    generator: torch.nn.Module,
    gen_cfg: Mapping[str, Any],
    ema_generator: torch.nn.Module | None = None,
) -> Path:
    """A generator (weights trained elsewhere) in the GAN checkpoint format; ``gen_cfg`` is the
    ``conf/gen`` node that rebuilds it."""
    nets = {"generator.": generator, "ema_generator.": ema_generator}
    return _save(path, _checkpoint(nets, {"gen": dict(gen_cfg)}))


def save_classifier_checkpoint(
    path: str | os.PathLike,
    net: torch.nn.Module,
    backbone_cfg: Mapping[str, Any],
    crop_size: int | None = None,
) -> Path:
    """Write a ``BlurClassifierNet`` in the classifier checkpoint format (``net.*`` keys)."""
    cfg = {"backbone": dict(backbone_cfg), "data": {"crop_size": crop_size}}
    return _save(path, _checkpoint({"net.": net}, cfg))


def _checkpoint(nets: Mapping[str, torch.nn.Module | None], cfg: Mapping[str, Any]) -> dict:
    """The weights of ``nets`` (key prefix -> network, None left out) and the run config."""
    state = {p + k: v for p, n in nets.items() if n is not None for k, v in n.state_dict().items()}
    return {"state_dict": state, "hyper_parameters": {"cfg": copy.deepcopy(dict(cfg))}}


def _save(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    write_bytes_atomic(Path(path), buf.getbuffer(), what="checkpoint")
    return Path(path)
