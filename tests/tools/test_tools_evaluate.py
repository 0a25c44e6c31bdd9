"""Classical baselines and python -m deblur.evaluate (metrics.json, results.md, tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from skimage import data as skdata
from tiny_nets import RESNET_CFG

from deblur.checkpoints import save_generator_checkpoint
from deblur.config import compose, eval_slug
from deblur.data.blur import apply_kernel, motion_kernel
from deblur.data.io import to_tensor, write_image
from deblur.data.pairs import Pair
from deblur.eval.baselines import (
    MissingKernelError,
    baseline_names,
    identity,
    load_baseline,
    load_kernel,
    richardson_lucy,
    wiener,
)
from deblur.eval.evaluation import evaluate_methods, run_evaluate
from deblur.eval.metrics import psnr
from deblur.runs import RunRecord
from entry_runs import cli

ROOT = Path(__file__).resolve().parents[2]


def md_rows(markdown: str) -> list[list[str]]:
    """The body rows of a Markdown table, each as its stripped cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def db(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr(to_tensor(a), to_tensor(b))[0])


@pytest.fixture(scope="module")
def blurred() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sharp, blurred, kernel): a photo crop blurred with a camera-shake kernel."""
    sharp = skdata.astronaut()[120:216, 150:270]
    kernel = motion_kernel(15, np.random.default_rng(3))
    return sharp, apply_kernel(sharp, kernel), kernel


def test_wiener_and_richardson_lucy_beat_identity(blurred) -> None:
    sharp, blur, kernel = blurred
    base = db(identity(blur), sharp)
    assert db(wiener(blur, kernel), sharp) > base + 1.0
    assert db(richardson_lucy(blur, kernel, num_iter=20), sharp) > base + 1.0


def test_padding_prevents_border_ringing(blurred) -> None:
    from skimage.restoration import wiener as sk_wiener

    sharp, blur, kernel = blurred
    raw = np.stack(
        [sk_wiener(blur[..., c] / 255.0, kernel, 0.005, clip=False) for c in range(3)], 2
    )
    raw = np.clip(np.rint(raw * 255), 0, 255).astype(np.uint8)
    assert db(wiener(blur, kernel), sharp) > db(raw, sharp) + 2.0


def test_deconvolution_without_kernel_is_a_clear_error(blurred) -> None:
    with pytest.raises(MissingKernelError, match="no known kernel"):
        wiener(blurred[1], None)
    with pytest.raises(MissingKernelError, match="richardson_lucy"):
        richardson_lucy(blurred[1], None)


def test_kernel_files_npy_and_png(tmp_path: Path) -> None:
    k = motion_kernel(9, np.random.default_rng(0)).astype(np.float64)
    np.save(tmp_path / "k.npy", k * 7)
    cv2.imwrite(str(tmp_path / "k16.png"), np.rint(k / k.max() * 65535).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "k8.png"), np.rint(k / k.max() * 255).astype(np.uint8))
    for name, tol in [("k.npy", 1e-6), ("k16.png", 1e-4), ("k8.png", 5e-3)]:
        got = load_kernel(tmp_path / name)
        assert got.sum() == pytest.approx(1.0) and np.abs(got - k).max() < tol


@pytest.fixture()
def folder_data(tmp_path: Path) -> Path:
    """data=folder layout: root/blur/*.png and root/sharp/*.png (no kernels)."""
    root = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    for i in range(3):
        sharp = rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)
        write_image(root / "sharp" / f"im{i}.png", sharp)
        write_image(
            root / "blur" / f"im{i}.png",
            np.clip(sharp.astype(int) + 8 + i, 0, 255).astype(np.uint8),
        )
    return root


def expected_psnr(root: Path) -> list[float]:
    out = []
    for i in range(3):
        sharp = cv2.imread(str(root / "sharp" / f"im{i}.png")).astype(float)
        blur = cv2.imread(str(root / "blur" / f"im{i}.png")).astype(float)
        out.append(10 * math.log10(255**2 / np.mean((sharp - blur) ** 2)))
    return out


def test_cli_identity_on_a_folder_writes_metrics_json(folder_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = cli(
        "deblur.evaluate",
        "baseline=identity",
        "data=folder",
        f"data.root={folder_data}",
        "split=all",
        runs=runs,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (runs / "evaluate" / "identity").iterdir()  # <runs>/evaluate/<method>/<overrides>
    assert run_dir.name.startswith("data.root=") and "/" not in run_dir.name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "finished" and m["task"] == "evaluate"
    assert m["choices"]["data"] == "folder"
    m = m["result"]  # the evaluation's result, nested
    assert m["method"] == "identity"
    want = expected_psnr(folder_data)
    assert [r["psnr"] for r in sorted(m["per_image"], key=lambda r: r["name"])] == pytest.approx(
        want, abs=1e-4
    )
    assert m["final"]["all/psnr"] == pytest.approx(np.mean(want), abs=1e-4)
    assert m["final"]["all/ssim"] == m["input"]["all/ssim"]  # identity = the input
    assert 0 < m["final"]["all/ssim_matlab3d"] < 1
    table = (run_dir / "results.md").read_text()
    (row,) = md_rows(table.split("## Per image")[0])
    assert row[:5] == ["identity", "folder", "all", "3", f"{np.mean(want):.2f}"]
    assert f"{np.mean(want):.2f}" in proc.stdout
    per_image = md_rows(table.split("## Per image")[1])
    assert [r[1] for r in per_image] == [f"{p:.2f}" for p in want]


def test_model_and_missing_kernel_on_a_folder(folder_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_generator_checkpoint(tmp_path / "g.ckpt", instantiate(RESNET_CFG), RESNET_CFG)
    over = [
        "data=folder",
        f"data.root={folder_data}",
        "split=all",
        "device=cpu",
        "save_images=true",
    ]
    cfg = compose("evaluate", [f"ckpt={ckpt}", *over])
    run_evaluate(cfg, tmp_path / "run", rec := RunRecord())
    result = rec.result
    assert result.method_kind == "model" and result.n_images == 3
    assert result.input["all/psnr"] == pytest.approx(np.mean(expected_psnr(folder_data)), abs=1e-4)
    assert result.final["all/psnr"] != result.input["all/psnr"]
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) == 3
    with pytest.raises(MissingKernelError, match="no known kernel"):
        run_evaluate(
            compose("evaluate", ["baseline=wiener", *over]), tmp_path / "run2", RunRecord()
        )
    with pytest.raises(ValueError, match="exactly one method"):
        run_evaluate(compose("evaluate", over), tmp_path / "run3", RunRecord())


def test_evaluate_methods_table(blurred, tmp_path: Path) -> None:
    sharp, blur, kernel = blurred
    write_image(tmp_path / "s.png", sharp)
    write_image(tmp_path / "b.png", blur)
    np.save(tmp_path / "k.npy", kernel)
    pairs = [Pair(tmp_path / "b.png", tmp_path / "s.png", "astronaut", tmp_path / "k.npy")]
    results, table = evaluate_methods(
        ["identity", "wiener"], pairs, data_name="synthetic", progress=False
    )
    assert [r["method"] for r in results] == ["identity", "wiener"]
    assert results[1]["final"]["val/psnr"] > results[0]["final"]["val/psnr"] + 1.0
    rows = md_rows(table)
    assert [r[:4] for r in rows] == [
        ["identity", "synthetic", "val", "1"],
        ["wiener", "synthetic", "val", "1"],
    ]
    assert float(rows[1][4]) == pytest.approx(results[1]["final"]["val/psnr"], abs=0.005)


def test_run_folder_names() -> None:
    assert eval_slug("baseline=wiener") == "wiener/default"
    assert eval_slug("ckpt=runs/gan/loss=ragan/checkpoints/best.ckpt,split=test") == (
        "gan_loss=ragan_best/split=test"
    )
    assert eval_slug("baseline=identity,data.root=/x/y,data=folder") == (
        "identity/data.root=x_y,data=folder"
    )
    sweep_ckpt = "ckpt='runs/t41/disc=double,loss=gan/checkpoints/last.ckpt'"  # a list: from Hydra
    assert (
        eval_slug([sweep_ckpt, "device=cpu", "split=test"])
        == "t41_disc=double,loss=gan_last/split=test"
    )


def test_every_baseline_option_builds_and_its_parameters_reach_it(blurred) -> None:
    """baseline=<name> is a group of conf/baseline/ (the one list of baselines); its keys are
    the function's parameters (baseline.num_iter=...), and an unknown name lists the options."""
    sharp, blur, kernel = blurred
    assert baseline_names() == ["identity", "richardson_lucy", "wiener"]
    for name in baseline_names():
        node = compose("evaluate", [f"baseline={name}"]).baseline
        out = instantiate(node)(blur, kernel)
        assert out.shape == blur.shape and out.dtype == np.uint8
        assert np.array_equal(out, load_baseline(name)(blur, kernel))
    few = compose("evaluate", ["baseline=richardson_lucy", "baseline.num_iter=2"]).baseline
    assert db(instantiate(few)(blur, kernel), sharp) < db(richardson_lucy(blur, kernel), sharp)
    assert compose("evaluate", []).baseline is None
    with pytest.raises(ValueError, match="identity, richardson_lucy, wiener"):
        load_baseline("tikhonov")
