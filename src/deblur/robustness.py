"""Robustness study (seed 002): how a generator copes with blur it was not trained on.

``python -m deblur.robustness ckpt=<gan .ckpt> [data=embedded]``: the sharp images of a split are
blurred with a Gaussian (size 5 / 9 / 13), a median filter (5 / 9 / 13) and straight motion blur
of growing length (random angle per image, seeded); PSNR / SSIM of the blurred input and of the
model's output against the sharp image go to one Markdown table (``robustness.md``), one plot
(``robustness.png``: PSNR vs size per blur type, model vs blurred input) and ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from torch import nn

import deblur.evaluate  # noqa: F401 - registers the eval_slug resolver of the run-folder name
from deblur.config import CONF_DIR
from deblur.data.blur import apply_kernel, gaussian_kernel, linear_motion_kernel, median_blur
from deblur.data.io import read_image, to_tensor
from deblur.evaluate import method_label, pairs_for_split
from deblur.inference import deblur_image, load_generator, resolve_device
from deblur.metrics import psnr, ssim

log = logging.getLogger(__name__)

Blur = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _gaussian(sigma: float | None) -> Blur:
    def blur(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        return apply_kernel(img, gaussian_kernel(size, sigma))

    return blur


def _median(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return median_blur(img, size)


def _motion(img: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    return apply_kernel(img, linear_motion_kernel(float(length), float(rng.uniform(0, 180))))


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
    from tqdm import tqdm

    conditions: list[tuple[str, int, Blur]] = [
        *(("gaussian", s, _gaussian(gaussian_sigma)) for s in sizes),
        *(("median", s, _median) for s in sizes),
        *(("motion", n, _motion) for n in motion_lengths),
    ]
    rows = []
    for kind, size, blur in tqdm(conditions, desc="robustness", disable=not progress):
        rng = np.random.default_rng(seed)  # the same angle per image for every motion length
        vals: dict[str, list[float]] = {"input_psnr": [], "input_ssim": [], "psnr": [], "ssim": []}
        for sharp in sharp_images:
            blurred = blur(sharp, size, rng)
            out = deblur_image(model, blurred, **deblur_kwargs)
            t_sharp = to_tensor(sharp).unsqueeze(0)
            t_in, t_out = to_tensor(blurred).unsqueeze(0), to_tensor(out).unsqueeze(0)
            vals["input_psnr"].append(float(psnr(t_in, t_sharp)[0]))
            vals["input_ssim"].append(float(ssim(t_in, t_sharp)[0]))
            vals["psnr"].append(float(psnr(t_out, t_sharp)[0]))
            vals["ssim"].append(float(ssim(t_out, t_sharp)[0]))
        row: dict[str, Any] = {"blur": kind, "size": int(size), "images": len(sharp_images)}
        row.update({k: round(float(np.mean(v)), 4) for k, v in vals.items()})
        row["psnr_gain"] = round(row["psnr"] - row["input_psnr"], 4)
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The robustness table in Markdown."""
    lines = [
        "| blur | size | images | input PSNR | model PSNR | gain (dB) | input SSIM | model SSIM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['blur']} | {r['size']} | {r['images']} | {r['input_psnr']:.2f} | "
            f"{r['psnr']:.2f} | {r['psnr_gain']:+.2f} | {r['input_ssim']:.4f} | {r['ssim']:.4f} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """PSNR vs kernel size / motion length, one panel per blur type, model vs blurred input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["blur"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        sel = [r for r in rows if r["blur"] == kind]
        x = [r["size"] for r in sel]
        ax.plot(x, [r["input_psnr"] for r in sel], "o--", color="tab:gray", label="blurred input")
        ax.plot(x, [r["psnr"] for r in sel], "o-", color="tab:blue", label="model")
        ax.set_title(kind)
        ax.set_xlabel("motion length (px)" if kind == "motion" else "kernel size (px)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_robustness(
    cfg: DictConfig, run_dir: Path, record: dict[str, Any], model: nn.Module | None = None
) -> dict[str, Any]:
    """The body of one robustness run (inside :func:`deblur.runs.managed_run`)."""
    pairs = pairs_for_split(cfg, str(cfg.split))
    sharp_paths = list(dict.fromkeys(p.sharp for p in pairs))
    if cfg.get("max_images"):
        sharp_paths = sharp_paths[: int(cfg.max_images)]
    if not sharp_paths:
        raise ValueError(f"split={cfg.split} of data={cfg.data.name} has no images.")
    images = [read_image(p) for p in sharp_paths]
    if model is None:
        model = load_generator(cfg.ckpt, use_ema=bool(cfg.use_ema))
    dev = resolve_device(str(cfg.device))
    rows = robustness_table(
        model,
        images,
        sizes=list(cfg.sizes),
        motion_lengths=list(cfg.motion_lengths),
        gaussian_sigma=cfg.get("gaussian_sigma"),
        seed=int(cfg.seed),
        tile=cfg.tile,
        overlap=int(cfg.overlap),
        device=dev,
        bf16=bool(cfg.bf16),
    )
    table = markdown(rows)
    title = f"{method_label(str(cfg.ckpt))} on {cfg.data.name} {cfg.split} ({len(images)} images)"
    plot(rows, run_dir / "robustness.png", title)
    (run_dir / "robustness.md").write_text(
        f"# Robustness: {title}\n\nSharp images blurred with a Gaussian (sigma by OpenCV's rule "
        "for the size), a median filter, and straight motion blur of the given length (random "
        f"angle per image, seed {cfg.seed}); PSNR / SSIM against the sharp image.\n\n{table}\n\n"
        "![robustness](robustness.png)\n"
    )
    print(table, flush=True)
    return {
        "ckpt": str(cfg.ckpt),
        "split": str(cfg.split),
        "n_images": len(images),
        "rows": rows,
        "device": str(dev),
    }


@hydra.main(config_path=str(CONF_DIR), config_name="robustness", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from deblur.runs import managed_run

    managed_run(cfg, "robustness", lambda run_dir, rec: run_robustness(cfg, run_dir, rec))


if __name__ == "__main__":
    main()
