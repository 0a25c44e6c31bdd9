"""Every config option of conf/ (``<group>/<option>.yaml``; ``_*`` files are partials) composes
and, under debug=smoke, builds its data, model and Trainer through ``deblur.systems.fit`` on CPU;
models on the meta device (shapes without memory), shared between options with the same model
config; the default GAN and classifier also built on the CPU and run forward."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from deblur.config import CONF_DIR, compose, to_container
from deblur.config.checks import check_values
from deblur.data.datamodule import DeblurDataModule
from deblur.systems.fit import build_datamodule, build_system, build_trainer

ROOTS = ("train", "train_classifier")

CLASSIFIER_EXPERIMENTS = {"table4_2"}
"""Experiments for ``train_classifier``; every other experiment file is a GAN recipe."""

TOOL_ROOTS = ("evaluate", "predict", "blur_score", "export", "robustness", "preview")
LAUNCHERS = "hydra/launcher"
LARGE_GENERATORS = {"fpn_inception", "fpn_seresnext50"}

TASK = {"train": "paired", "train_classifier": "classify"}


def options(group: str) -> list[str]:
    """The options of a config group, as a user types them (``conf/<group>/<option>.yaml``)."""
    return sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml") if not f.name.startswith("_"))


def groups(root: str) -> list[str]:
    """The config groups in the defaults list of ``root`` (hydra's own groups left out)."""
    choices = compose(root, [], return_hydra_config=True).hydra.runtime.choices
    return [g for g in choices if not g.startswith("hydra") and options(g)]


def _cases() -> list[Any]:
    cases = []
    for root in ROOTS:
        for group in groups(root):
            for option in options(group):
                mine = option in CLASSIFIER_EXPERIMENTS
                if group == "experiment" and mine != (root == "train_classifier"):
                    continue
                cases.append(pytest.param(root, group, option, id=f"{root}-{group}={option}"))
    return cases


def test_every_group_is_covered():
    """Every option folder of conf/ is a group of a training root (so the cases above cover it),
    and the GAN root has the groups the study sweeps."""
    folders = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and options(p.name)}
    folders -= {"common"}  # common/run_dirs: one config every root merges, not a group
    # logger=[...]: a list group (several at once), absent from Hydra's choices; each of its
    # options is composed and built in tests/train/test_loggers.py
    folders -= {"logger"}
    assert folders == {g for root in (*ROOTS, "evaluate") for g in groups(root)}
    swept = {"data", "gen", "backbone", "disc", "loss", "trainer", "debug", "experiment"}
    assert swept <= set(groups("train"))
    assert CLASSIFIER_EXPERIMENTS <= set(options("experiment"))
    assert options(LAUNCHERS)  # composed by test_launchers_compose


def _overrides(group: str, option: str, root: str) -> list[str]:
    out = [f"{group}={option}"]
    if group != "debug":
        out.append("debug=smoke")
    if group == "data" and option != "embedded":
        out.append("data.root=/nonexistent/dataset")  # instantiated only: nothing is read
    return out


def _key(cfg: Any, *sections: str) -> str:
    plain = to_container(cfg)
    return json.dumps({s: plain.get(s) for s in sections}, sort_keys=True, default=str)


_SYSTEMS: dict[str, pl.LightningModule] = {}
_DATA: dict[str, DeblurDataModule] = {}


def _system(cfg: Any, device: str = "meta") -> pl.LightningModule:
    """The LightningModule of ``cfg`` built on ``device``, shared between configs whose model
    part is the same."""
    if OmegaConf.select(cfg, "disc.checkpoint", default=None):
        # experiment=table4_4 starts D from a stage-1 classifier run (disc.checkpoint=auto); the
        # loading itself is covered by tests/train, here D starts fresh
        OmegaConf.update(cfg, "disc.checkpoint", None)
        OmegaConf.update(cfg, "disc.frozen", False)
    key = device + _key(cfg, "task", "system", "gen", "disc", "backbone", "loss", "model", "optim")
    if key not in _SYSTEMS:
        with torch.device(device):
            _SYSTEMS[key] = build_system(cfg)
    return _SYSTEMS[key]


def _datamodule(cfg: Any, task: str, smoke: bool) -> DeblurDataModule:
    """The DataModule of ``cfg``; with ``smoke`` embedded data it is also set up (the smoke
    build: pairs, setup checks, datasets). Real datasets are only instantiated."""
    key = _key(cfg, "data") + task
    if key not in _DATA:
        dm = build_datamodule(cfg, task)
        if smoke and cfg.data.name == "embedded":
            dm.setup("fit")
        _DATA[key] = dm
    return _DATA[key]


@pytest.mark.parametrize(("root", "group", "option"), _cases())
def test_option_composes_and_builds(root, group, option, tmp_path, cache_dir):
    cfg = compose(root, _overrides(group, option, root), return_hydra_config=True)
    assert OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") == option
    smoke = OmegaConf.select(cfg, "hydra.runtime.choices.debug") == "smoke"
    with open_dict(cfg):
        del cfg["hydra"]  # the run config, as the entry points hand it on
    check_values(cfg)  # every shipped option is in range (the entry points check it first)
    task = TASK[root]

    dm = _datamodule(cfg, task, smoke)
    assert isinstance(dm, DeblurDataModule) and dm.task == task
    if smoke and cfg.data.name == "embedded":
        batch = next(iter(dm.train_dataloader()))
        image = batch["blur"] if task == "paired" else batch["image"]
        assert image.shape[-1] == cfg.data.crop_size

    system = _system(cfg)
    assert isinstance(system, pl.LightningModule)
    trainer, _, _ = build_trainer(cfg, tmp_path / "run")
    assert isinstance(trainer, pl.Trainer)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert type(trainer.accelerator).__name__ == "CPUAccelerator"  # debug=smoke: CPU


@pytest.mark.parametrize("launcher", options(LAUNCHERS))
def test_launchers_compose(launcher):
    """hydra/launcher options: composed with a sweep, their launcher class importable."""
    cfg = compose("train", [f"hydra/launcher={launcher}", "debug=smoke"], return_hydra_config=True)
    assert get_class(cfg.hydra.launcher._target_)


@pytest.mark.parametrize("root", TOOL_ROOTS)
def test_tool_roots_compose(root):
    """The tools' roots compose with their defaults, and with every data option they take."""
    cfg = compose(root, [])  # a compose error fails here
    check_values(cfg)
    if "data" in cfg:
        for option in options("data"):
            data = compose(root, [f"data={option}"]).data
            assert data.name == option
            assert data.layout._target_  # the reader the DataModule builds


def test_meta_built_generators_are_real_modules():
    """The large generators are built (modules and weight shapes), only without memory."""
    for gen in sorted(LARGE_GENERATORS):
        system = _system(compose("train", [f"gen={gen}", "debug=smoke"]))
        params = list(system.generator.parameters())
        assert params and all(p.is_meta for p in params)
        assert sum(p.numel() for p in params) > 10_000_000


@pytest.mark.parametrize("root", ROOTS)
def test_default_system_builds_and_runs_on_cpu(root):
    """The default GAN / classifier, built for real: a forward pass on a smoke-sized batch."""
    system = _system(compose(root, ["debug=smoke"]), device="cpu")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = system.generator(x) if root == "train" else system(x)
    if root == "train":
        assert out.shape == x.shape and out.abs().max() <= 1  # G: same size, in [-1, 1]
    else:
        assert out.numel() == 1 and torch.isfinite(out).all()  # one blur logit
