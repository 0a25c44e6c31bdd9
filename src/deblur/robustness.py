"""``python -m deblur.robustness ckpt=<gan .ckpt> [data=...]``: the sharp images of a split
blurred with Gaussian, median and straight motion blur of growing size, and PSNR / SSIM of the
input and the model's output (:mod:`deblur.eval.robustness`) into ``robustness.md``,
``robustness.png`` and ``metrics.json`` of ``<runs_dir>/robustness/<checkpoint>/...``."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.cli import entry_point
from deblur.eval.robustness import run_robustness
from deblur.runs import managed_run


@entry_point("robustness")
def main(cfg: DictConfig) -> None:
    managed_run(cfg, "robustness", lambda run_dir, rec: run_robustness(cfg, run_dir, rec))


if __name__ == "__main__":
    main()
