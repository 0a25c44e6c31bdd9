"""Robustness study (seed 002): how a generator copes with blur it was not trained on.

``python -m deblur.robustness ckpt=<gan .ckpt> [data=embedded]``: the sharp images of a split are
blurred with a Gaussian (size 5 / 9 / 13), a median filter (5 / 9 / 13) and straight motion blur
of growing length (random angle per image, seeded) by :func:`deblur.evaluation.robustness_table`;
PSNR / SSIM of the blurred input and of the model's output go to ``robustness.md``,
``robustness.png`` (PSNR vs size per blur type) and ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from deblur.cli import entry_point
from deblur.data.io import read_image
from deblur.evaluation import (
    method_label,
    pairs_for_split,
    robustness_markdown,
    robustness_plot,
    robustness_table,
)
from deblur.inference import resolve_device
from deblur.models.load import load_generator
from deblur.runs import managed_run


def run_robustness(
    cfg: DictConfig, run_dir: Path, record: dict[str, Any], model: nn.Module | None = None
) -> dict[str, Any]:
    """The body of one robustness run (inside :func:`deblur.runs.managed_run`)."""
    pairs = pairs_for_split(cfg, str(cfg.split))
    sharp_paths = list(dict.fromkeys(p.sharp for p in pairs))
    if cfg.max_images:
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
        gaussian_sigma=cfg.gaussian_sigma,
        seed=int(cfg.seed),
        tile=cfg.tile,
        overlap=int(cfg.overlap),
        device=dev,
        bf16=bool(cfg.bf16),
    )
    table = robustness_markdown(rows)
    title = f"{method_label(str(cfg.ckpt))} on {cfg.data.name} {cfg.split} ({len(images)} images)"
    robustness_plot(rows, run_dir / "robustness.png", title)
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


@entry_point("robustness")
def main(cfg: DictConfig) -> None:
    managed_run(cfg, "robustness", lambda run_dir, rec: run_robustness(cfg, run_dir, rec))


if __name__ == "__main__":
    main()
