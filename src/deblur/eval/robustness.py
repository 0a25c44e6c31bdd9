"""``deblur.robustness`` (seed 002): a split's sharp images under Gaussian, median and straight
motion blur (seeded angles) of growing size; PSNR / SSIM of the input and the model's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot state: any backend, no GUI
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from deblur.data.blur import apply_kernel, gaussian_kernel, linear_motion_kernel, median_blur
from deblur.data.io import read_image
from deblur.eval.evaluation import ckpt_label, deblur_options, measure, pairs_for_split
from deblur.eval.inference import deblur_image, resolve_device
from deblur.eval.metrics import psnr, ssim
from deblur.models.load import load_generator
from deblur.runs import RobustnessResult, RunRecord
from deblur.study.render import markdown

COLUMNS = {"blur": "", "size": "", "images": "", "input_psnr": ".2f", "psnr": ".2f"}
COLUMNS |= {"psnr_gain": "+.2f", "input_ssim": ".4f", "ssim": ".4f"}  # row key -> format
HEADERS = {"input_psnr": "input PSNR", "psnr": "model PSNR", "psnr_gain": "gain (dB)"}
HEADERS |= {"input_ssim": "input SSIM", "ssim": "model SSIM"}


def _blurred(kind: str, img: np.ndarray, size: int, sigma, rng: np.random.Generator) -> np.ndarray:
    """``img`` under one blur of the sweep; motion blur at an angle drawn from ``rng``."""
    if kind == "median":
        return median_blur(img, size)
    if kind == "gaussian":
        return apply_kernel(img, gaussian_kernel(size, sigma))
    return apply_kernel(img, linear_motion_kernel(float(size), float(rng.uniform(0, 180))))


def robustness_table(
    model: nn.Module,
    sharp_images: Sequence[np.ndarray],
    sizes: Sequence[int] = (5, 9, 13),
    motion_lengths: Sequence[int] = (5, 9, 13, 17, 21),
    gaussian_sigma: float | None = None,
    seed: int = 0,
    progress: bool = True,
    **deblur_kwargs: Any,
) -> list[dict[str, Any]]:
    """One row per (blur type, size): mean PSNR / SSIM of the blurred input and of the model."""
    blurs = [(k, s) for k in ("gaussian", "median") for s in sizes]
    blurs += [("motion", n) for n in motion_lengths]
    rows = []
    for kind, size in tqdm(blurs, desc="robustness", disable=not progress):
        rng = np.random.default_rng(seed)  # the same angle per image for every motion length
        scores = []
        for sharp in sharp_images:
            blurred = _blurred(kind, sharp, size, gaussian_sigma, rng)
            out = deblur_image(model, blurred, **deblur_kwargs)
            scores.append(measure({"input_": blurred, "": out}, sharp, (psnr, ssim)))
        row: dict[str, Any] = {"blur": kind, "size": int(size), "images": len(sharp_images)}
        row |= pd.DataFrame(scores).mean().round(4).to_dict()
        rows.append(row | {"psnr_gain": round(row["psnr"] - row["input_psnr"], 4)})
    return rows


def robustness_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    frame = pd.DataFrame(list(rows))[list(COLUMNS)].rename(columns=HEADERS)
    return markdown(frame, {HEADERS.get(k, k): f for k, f in COLUMNS.items()})


def robustness_plot(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """PSNR vs kernel size / motion length, one panel per blur type, model vs blurred input."""
    frame = pd.DataFrame(list(rows))
    kinds = list(frame["blur"].unique())
    fig = Figure(figsize=(4.2 * len(kinds), 3.6), layout="tight")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        sel = frame[frame["blur"] == kind].set_index("size")
        sel["input_psnr"].plot(ax=ax, style="o--", color="tab:gray", label="blurred input")
        sel["psnr"].plot(ax=ax, style="o-", color="tab:blue", label="model")
        ax.set(title=kind, ylabel="PSNR (dB)", xticks=list(sel.index))
        ax.set_xlabel("motion length (px)" if kind == "motion" else "kernel size (px)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return Path(path)


def run_robustness(
    cfg: DictConfig, run_dir: Path, record: RunRecord, model: nn.Module | None = None
) -> None:
    """The body of one ``deblur.robustness`` run: table, plot and its result."""
    sharp_paths = list(dict.fromkeys(p.sharp for p in pairs_for_split(cfg, str(cfg.split))))
    sharp_paths = sharp_paths[: cfg.max_images or None]
    if not sharp_paths:
        raise ValueError(f"split={cfg.split} of data={cfg.data.name} has no images.")
    images = [read_image(p) for p in sharp_paths]
    if model is None:
        model = load_generator(cfg.ckpt, use_ema=bool(cfg.use_ema))
    sizes, lengths = list(cfg.sizes), list(cfg.motion_lengths)
    options = deblur_options(cfg) | {"device": (dev := resolve_device(str(cfg.device)))}
    rows = robustness_table(model, images, sizes, lengths, cfg.gaussian_sigma, cfg.seed, **options)
    table = robustness_markdown(rows)
    title = f"{ckpt_label(cfg.ckpt)} on {cfg.data.name} {cfg.split} ({len(images)} images)"
    robustness_plot(rows, run_dir / "robustness.png", title)
    (run_dir / "robustness.md").write_text(
        f"# Robustness: {title}\n\nSharp images blurred with a Gaussian (sigma by OpenCV's rule "
        "for the size), a median filter, and straight motion blur of the given length (random "
        f"angle per image, seed {cfg.seed}); PSNR / SSIM against the sharp image.\n\n{table}\n\n"
        "![robustness](robustness.png)\n"
    )
    print(table, flush=True)
    record.result = RobustnessResult(
        ckpt=str(cfg.ckpt), split=str(cfg.split), n_images=len(images), rows=rows, device=str(dev)
    )
