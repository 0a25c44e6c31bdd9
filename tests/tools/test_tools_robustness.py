"""python -m deblur.robustness: Gaussian / median / motion blur sweep, table and plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from skimage import data as skdata
from tiny_nets import RESNET_CFG
from torch import nn

from deblur.checkpoints import save_generator_checkpoint
from deblur.config import compose
from deblur.data.io import write_image
from deblur.eval.robustness import (
    robustness_markdown,
    robustness_plot,
    robustness_table,
    run_robustness,
)
from deblur.runs import RunRecord


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_identity_model_gains_nothing_and_blur_grows_with_size(tmp_path: Path) -> None:
    img = skdata.astronaut()[100:164, 140:220]
    rows = robustness_table(
        Identity(), [img], sizes=(5, 9, 13), motion_lengths=(5, 13), progress=False, device="cpu"
    )
    assert [(r["blur"], r["size"]) for r in rows] == [
        ("gaussian", 5),
        ("gaussian", 9),
        ("gaussian", 13),
        ("median", 5),
        ("median", 9),
        ("median", 13),
        ("motion", 5),
        ("motion", 13),
    ]
    assert all(r["psnr"] == pytest.approx(r["input_psnr"]) and r["psnr_gain"] == 0 for r in rows)
    gauss = [r["input_psnr"] for r in rows if r["blur"] == "gaussian"]
    assert gauss == sorted(gauss, reverse=True)
    motion = [r["input_psnr"] for r in rows if r["blur"] == "motion"]
    assert motion[0] > motion[1]
    lines = robustness_markdown(rows).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")][:4] == [
        "blur",
        "size",
        "images",
        "input PSNR",
    ]
    median9 = [c.strip() for c in lines[2 + 4].strip("|").split("|")]
    assert median9[:3] == ["median", "9", "1"] and median9[5] == "+0.00"
    assert robustness_plot(rows, tmp_path / "r.png").stat().st_size > 1000


def test_run_on_a_folder_writes_table_plot_and_metrics(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for i, crop in enumerate([skdata.astronaut()[:48, :64], skdata.coffee()[:48, :64]]):
        write_image(root / "sharp" / f"im{i}.png", crop)
        write_image(root / "blur" / f"im{i}.png", crop)
    torch.manual_seed(0)
    ckpt = save_generator_checkpoint(tmp_path / "g.ckpt", instantiate(RESNET_CFG), RESNET_CFG)
    cfg = compose(
        "robustness",
        [
            f"ckpt={ckpt}",
            "data=folder",
            f"data.root={root}",
            "split=all",
            "device=cpu",
            "sizes=[5,9]",
            "motion_lengths=[7]",
        ],
    )
    run = tmp_path / "run"
    run.mkdir()
    run_robustness(cfg, run, rec := RunRecord())
    assert rec.result.n_images == 2 and len(rec.result.rows) == 5
    assert all(np.isfinite(r["psnr"]) for r in rec.result.rows)
    text = (run / "robustness.md").read_text()
    assert any(line.replace(" ", "").startswith("|motion|7|2|") for line in text.splitlines())
    assert (run / "robustness.png").stat().st_size > 1000
