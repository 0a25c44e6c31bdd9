"""TensorBoard dashboards: the custom-scalars layout, run discovery, and the REAL server's API
(through tb_server.check_served)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tb_server import ServedError, check_served
from torch import nn
from torch.utils.data import DataLoader

from deblur.dashboard import main
from deblur.study.dashboard import DashboardError, latest_sweep, resolve_logdir, run_folders
from deblur.systems.classifier import ClassifierSystem
from deblur.systems.layout import custom_scalars_layout, tag_regex


def _chart(layout: dict, tag: str) -> list[str]:
    """The regexes of the chart that shows ``tag``."""
    for charts in layout.values():
        for kind, regexes in charts.values():
            assert kind == "Multiline"
            if any(re.match(r, tag) for r in regexes):
                return regexes
    raise AssertionError(f"no chart shows {tag}")


def test_layout_puts_g_and_d_side_by_side():
    layout = custom_scalars_layout("gan")
    g_vs_d = _chart(layout, "train/g_total")
    assert any(re.match(r, "train/d") for r in g_vs_d)
    real_fake = _chart(layout, "train/d_real")
    assert any(re.match(r, "train/d_fake") for r in real_fake)
    assert not any(re.match(r, "train/d_real") for r in g_vs_d)  # anchored: train/d only
    for tag in ("train/g_adv", "train/g_pixel", "train/g_perceptual", "val/psnr", "val/ssim"):
        _chart(layout, tag)
    assert "Classifier" not in layout
    clf = custom_scalars_layout("classifier")
    assert any(re.match(r, "train/loss_epoch") for r in _chart(clf, "val/loss"))
    _chart(clf, "val/acc")
    assert set(custom_scalars_layout()) == set(layout) | set(clf)
    assert re.match(tag_regex("val/psnr"), "val/psnr_step") and not re.match(
        tag_regex("val/psnr"), "val/psnr_input"
    )
    with pytest.raises(ValueError, match="unknown kind 'gann'"):
        custom_scalars_layout("gann")


def _tb_run(folder: Path, seed: int, *, image: bool = True, hparams: bool = True) -> None:
    """A run folder as deblur's training writes it: tb/ (Lightning logger) and metrics.json."""
    logger = TensorBoardLogger(save_dir=str(folder), name="tb", version="", default_hp_metric=False)
    if hparams:
        logger.log_hyperparams(
            {"choice/loss": folder.name, "seed": seed}, {"hp/psnr": 0.0, "hp/ssim": 0.0}
        )
    logger.experiment.add_custom_scalars(custom_scalars_layout("gan"))
    for step in range(4):
        values = {"train/g_total": 1.0 / (step + 1), "train/d": 0.7, "train/d_real": 0.6}
        logger.log_metrics(values | {"train/d_fake": 0.4, "val/psnr": 20.0 + step}, step=step)
    if image:
        logger.experiment.add_image("val/strip_0", torch.rand(3, 8, 24), 3)
    logger.log_metrics({"hp/psnr": 25.0 + seed, "hp/ssim": 0.8}, step=4)
    logger.finalize("success")
    (folder / "metrics.json").write_text(json.dumps({"status": "finished", "task": "gan"}))


def test_real_tensorboard_serves_scalars_images_hparams_of_every_run(tmp_path):
    sweep = tmp_path / "runs" / "grid"
    names = ["disc=double,loss=ragan", "disc=single,loss=gan", "disc=patch,loss=wgangp"]
    for seed, name in enumerate(names):
        _tb_run(sweep / name, seed)
    t0 = time.monotonic()
    report = check_served(sweep, timeout=60)
    assert time.monotonic() - t0 < 30
    assert report["problems"] == []
    assert sorted(report["runs"]) == sorted(names)  # runs named by their choices
    assert sorted(report["tb_runs"]) == sorted(f"{n}/tb" for n in names)
    for seed, name in enumerate(names):
        run = report["runs"][name]
        assert run["scalars"]["train/g_total"] == 4 and run["scalars"]["train/d_fake"] == 4
        assert run["images"] == {"val/strip_0": 1}
        assert run["hparams"] == {"choice/loss": name, "seed": seed}
        assert run["hparam_metrics"]["hp/psnr"] == pytest.approx(25.0 + seed)
    assert "GAN: G vs D" in report["layout"]
    # the server is stopped afterwards
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(report["url"] + "/data/runs", timeout=2)


def test_check_served_names_what_a_run_lacks(tmp_path):
    _tb_run(tmp_path / "complete", 0)
    _tb_run(tmp_path / "bare", 1, image=False, hparams=False)
    report = check_served(tmp_path, wait=1, strict=False, load_fast="false")
    assert report["problems"] == [
        "bare: no image served",
        "bare: no HPARAMS session with hparams and metrics",
    ]
    assert report["runs"]["bare"]["scalars"]["val/psnr"] == 4
    with pytest.raises(ServedError, match="bare: no image served"):
        check_served(tmp_path, require=("images",), wait=0, load_fast="false")


def _touch_events(folder: Path, mtime: float) -> None:
    (folder / "tb").mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    events = folder / "tb" / "events.out.tfevents.1.host.1.0"
    events.write_bytes(b"")
    for p in (events, folder / "metrics.json"):
        os.utime(p, (mtime, mtime))


def test_latest_sweep_views_and_cli(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _touch_events(runs / "old" / "loss=gan", 1_000_000)
    _touch_events(runs / "new" / "loss=ragan,disc=double", 2_000_000)
    _touch_events(runs / "new" / "loss=ragan,disc=double" / "attempts" / "1", 3_000_000)
    (runs / "empty").mkdir()
    assert latest_sweep([runs]) == runs / "new"
    assert run_folders(runs / "new") == {"loss=ragan,disc=double": ["loss=ragan,disc=double/tb"]}
    monkeypatch.setenv("DEBLUR_RUNS", str(runs))
    assert resolve_logdir() == runs / "new"
    assert resolve_logdir([runs / "old"]) == runs / "old"
    view = resolve_logdir([runs / "old", runs / "new"])
    assert sorted(p.name for p in view.iterdir()) == ["new", "old"]
    assert set(run_folders(view)) == {"old/loss=gan", "new/loss=ragan,disc=double"}
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"TensorBoard over {runs / 'new'}: 1 run(s)" in out and "loss=ragan,disc=double" in out
    monkeypatch.setenv("DEBLUR_RUNS", str(tmp_path / "none"))
    with pytest.raises(DashboardError, match="no runs under"):
        resolve_logdir()
    assert main(["--dry-run"]) == 2


def test_the_accuracy_chart_gets_train_and_val_in_percent(tmp_path):
    """The "accuracy % (train vs val)" chart overlays train/acc and val/acc: a classifier that
    calls every image blurred is right on half of a half-blurred set, 50 % in both (not 0.5)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    nn.init.zeros_(net[1].weight), nn.init.constant_(net[1].bias, 5.0)  # always "blurred"
    system = ClassifierSystem(net, optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    images = [{"image": torch.rand(3, 4, 4), "label": torch.tensor(i % 2)} for i in range(4)]
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(system, DataLoader(images, batch_size=4), DataLoader(images, batch_size=4))
    logged = trainer.callback_metrics
    assert float(logged["train/acc"]) == pytest.approx(50.0)
    assert float(logged["val/acc"]) == pytest.approx(50.0)
    assert any(re.match(r, "train/acc") for r in _chart(custom_scalars_layout(), "val/acc"))
